//! Secrets and signed tokens: link codes, API keys, device secrets (only hashes are stored)
//! and ES256 session grants, signed through the [`Signer`] trait so KMS can plug in.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng as _;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};

use crate::model::ParticipantRole;

/// The `aud` of every session grant.
pub const GRANT_AUDIENCE: &str = "bedside-signaling";
/// Allowed clock skew when checking `exp`/`nbf`, seconds.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The grant is malformed, tampered, expired, unsigned or from an unknown key.
    #[error("invalid grant: {0}")]
    Invalid(&'static str),
    /// The signer failed (key unreadable, KMS down…).
    #[error("signer unavailable: {0}")]
    Signer(String),
}

/// A random base62 string of `len` characters.
pub fn random_base62(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// SHA-256 of a secret; what the database stores instead of the secret.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Whether `code` could be a link code at all (base62, plausible length); anything else is
/// refused without touching the database.
pub fn is_plausible_code(code: &str) -> bool {
    (12..=64).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A staff API key as shown once to its owner. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// The prefix that marks Bedside API keys (helps secret scanners).
    pub const PREFIX: &'static str = "bsk_";

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, random_base62(40)))
    }

    /// Wraps a presented key (not validated).
    pub fn from_presented(key: &str) -> Self {
        Self(key.to_owned())
    }

    /// The key text, for showing once.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database stores.
    pub fn hash(&self) -> Vec<u8> {
        secret_hash(&self.0)
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeySecret(<redacted>)")
    }
}

/// Claims of a session grant (DESIGN.md §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantClaims {
    /// Issuer (`tokens.issuer`).
    pub iss: String,
    /// Audience, always [`GRANT_AUDIENCE`].
    pub aud: String,
    /// Participant id.
    pub sub: String,
    /// Visit id.
    pub visit: String,
    /// Room id (the visit id for now; a room is one visit's media session).
    pub room: String,
    /// Tenant id.
    pub tenant: String,
    /// Role in the visit.
    pub role: ParticipantRole,
    /// Display name other participants see.
    pub name: String,
    /// Unique id of this grant.
    pub jti: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Not before (Unix seconds).
    pub nbf: u64,
    /// Expires (Unix seconds).
    pub exp: u64,
}

#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// Signs grant bytes. Implementations: [`LocalSigner`]; KMS later.
pub trait Signer: Send + Sync {
    /// The key id placed in the JWS header.
    fn key_id(&self) -> &str;
    /// ES256 signature (`r ‖ s`, 64 bytes) over `message`.
    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, TokenError>>;
    /// The uncompressed SEC1 public key (65 bytes) of `key_id`.
    fn public_key(&self) -> Vec<u8>;
}

/// A P-256 key kept in a PKCS#8 file (mode 0600) under the data directory.
pub struct LocalSigner {
    key: EcdsaKeyPair,
    kid: String,
}

impl fmt::Debug for LocalSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalSigner")
            .field("kid", &self.kid)
            .finish()
    }
}

impl LocalSigner {
    /// Loads the key at `path`, creating it (mode 0600) on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let der = crate::keyfile::read_or_create(path, || {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|_| "key generation failed".to_owned())
        })
        .map_err(TokenError::Signer)?;
        Self::from_pkcs8(&der)
    }

    /// A signer from PKCS#8 DER bytes.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, TokenError> {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
            .map_err(|_| TokenError::Signer("signing key file is not a P-256 PKCS#8 key".into()))?;
        let kid =
            hex::encode(&digest::digest(&digest::SHA256, key.public_key().as_ref()).as_ref()[..8]);
        Ok(Self { key, kid })
    }
}

impl Signer for LocalSigner {
    fn key_id(&self) -> &str {
        &self.kid
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, TokenError>> {
        Box::pin(async move {
            self.key
                .sign(&SystemRandom::new(), message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| TokenError::Signer("signing failed".into()))
        })
    }

    fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }
}

/// Issues and verifies session grants. Verification uses only public keys, by `kid`.
#[derive(Clone)]
pub struct Grants {
    signer: Arc<dyn Signer>,
    keys: Arc<RwLock<HashMap<String, DecodingKey>>>,
    issuer: String,
}

impl Grants {
    /// A grant service over `signer`, trusting its current public key.
    pub fn new(signer: Arc<dyn Signer>, issuer: impl Into<String>) -> Result<Self, TokenError> {
        let grants = Self {
            signer,
            keys: Arc::default(),
            issuer: issuer.into(),
        };
        let (kid, key) = (
            grants.signer.key_id().to_owned(),
            grants.signer.public_key(),
        );
        grants.trust_key(&kid, &key)?;
        Ok(grants)
    }

    /// Trusts another public key (rotation: old grants stay verifiable until they expire).
    pub fn trust_key(&self, kid: &str, sec1_uncompressed: &[u8]) -> Result<(), TokenError> {
        if sec1_uncompressed.len() != 65 || sec1_uncompressed[0] != 4 {
            return Err(TokenError::Signer(
                "public key is not an uncompressed P-256 point".into(),
            ));
        }
        let x = URL_SAFE_NO_PAD.encode(&sec1_uncompressed[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&sec1_uncompressed[33..]);
        let key = DecodingKey::from_ec_components(&x, &y)
            .map_err(|_| TokenError::Signer("bad public key".into()))?;
        self.keys
            .write()
            .map_err(|_| TokenError::Signer("key cache poisoned".into()))?
            .insert(kid.to_owned(), key);
        Ok(())
    }

    /// The issuer placed in grants.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Signs `claims` into a compact JWS.
    pub async fn issue(&self, claims: &GrantClaims) -> Result<String, TokenError> {
        let header = JwsHeader {
            alg: "ES256",
            typ: "JWT",
            kid: self.signer.key_id(),
        };
        let signing_input = format!("{}.{}", b64_json(&header)?, b64_json(claims)?);
        let signature = self.signer.sign(signing_input.as_bytes()).await?;
        if signature.len() != 64 {
            return Err(TokenError::Signer("signature is not r‖s".into()));
        }
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }

    /// Verifies signature, algorithm, `kid`, issuer, audience and times (±60 s).
    pub fn verify(&self, token: &str) -> Result<GrantClaims, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed"))?;
        if header.alg != Algorithm::ES256 {
            return Err(TokenError::Invalid("algorithm not allowed"));
        }
        let kid = header.kid.ok_or(TokenError::Invalid("no key id"))?;
        let keys = self
            .keys
            .read()
            .map_err(|_| TokenError::Signer("key cache poisoned".into()))?;
        let key = keys
            .get(&kid)
            .ok_or(TokenError::Invalid("unknown key id"))?;
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = CLOCK_SKEW_SECS;
        validation.validate_nbf = true;
        validation.set_audience(&[GRANT_AUDIENCE]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        jsonwebtoken::decode::<GrantClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Invalid("expired"),
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                    TokenError::Invalid("not yet valid")
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    TokenError::Invalid("bad signature")
                }
                _ => TokenError::Invalid("rejected"),
            })
    }
}

fn b64_json<T: Serialize>(value: &T) -> Result<String, TokenError> {
    serde_json::to_vec(value)
        .map(|json| URL_SAFE_NO_PAD.encode(json))
        .map_err(|_| TokenError::Signer("cannot encode grant".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        chrono::Utc::now().timestamp() as u64
    }

    fn claims(exp_in: i64) -> GrantClaims {
        let now = now();
        GrantClaims {
            iss: "bedside".into(),
            aud: GRANT_AUDIENCE.into(),
            sub: "p1".into(),
            visit: "v1".into(),
            room: "v1".into(),
            tenant: "t1".into(),
            role: ParticipantRole::Patient,
            name: "Patient".into(),
            jti: "j1".into(),
            iat: now,
            nbf: now,
            exp: (now as i64 + exp_in) as u64,
        }
    }

    fn grants_with_new_key() -> Grants {
        let der =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let signer = LocalSigner::from_pkcs8(der.as_ref()).unwrap();
        Grants::new(Arc::new(signer), "bedside").unwrap()
    }

    #[tokio::test]
    async fn round_trip() {
        let grants = grants_with_new_key();
        let issued = claims(300);
        let token = grants.issue(&issued).await.unwrap();
        assert_eq!(grants.verify(&token).unwrap(), issued);
    }

    #[tokio::test]
    async fn refuses_expired_tampered_none_and_unknown_kid() {
        let grants = grants_with_new_key();
        let expired = grants.issue(&claims(-120)).await.unwrap();
        assert!(matches!(
            grants.verify(&expired),
            Err(TokenError::Invalid("expired"))
        ));

        let token = grants.issue(&claims(300)).await.unwrap();
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut forged = claims(300);
        forged.role = ParticipantRole::Clinician;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        parts[1] = &forged_payload;
        assert!(grants.verify(&parts.join(".")).is_err());

        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{forged_payload}.");
        assert!(grants.verify(&unsigned).is_err());

        let other = grants_with_new_key();
        let foreign = other.issue(&claims(300)).await.unwrap();
        assert!(matches!(
            grants.verify(&foreign),
            Err(TokenError::Invalid("unknown key id"))
        ));
    }

    #[test]
    fn codes_are_base62_and_hashed() {
        let code = random_base62(16);
        assert_eq!(code.len(), 16);
        assert!(is_plausible_code(&code));
        assert!(!is_plausible_code("short"));
        assert!(!is_plausible_code("has-a-dash-in-it"));
        assert_eq!(secret_hash(&code).len(), 32);
        assert!(!format!("{:?}", ApiKeySecret::generate()).contains("bsk_"));
    }
}
