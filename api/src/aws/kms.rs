//! AWS KMS: an ES256 grant [`Signer`] over an asymmetric ECC_NIST_P256 key, and a PHI
//! [`KeyProvider`] that makes tenant data keys with GenerateDataKey and unwraps them with
//! Decrypt. Both only ever see key ids; private and master keys never leave KMS.

use std::fmt;

use aws_sdk_kms::Client;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{DataKeySpec, KeyUsageType, MessageType, SigningAlgorithmSpec};
use futures::future::BoxFuture;

use super::describe;
use crate::crypto::{CryptoError, GeneratedKey, KeyProvider};
use crate::tokens::{Signer, TokenError};

/// Encryption-context key that binds a wrapped data key to its tenant: KMS refuses to
/// decrypt it under any other tenant id, and CloudTrail records whose key was used.
const TENANT_CONTEXT: &str = "bedside:tenant";

/// Length of one P-256 scalar (r or s) in a JWS signature.
const SCALAR_LEN: usize = 32;

/// Signs grants with KMS Sign (ECDSA_SHA_256). The public key is fetched once with
/// GetPublicKey and verification uses it locally, so verifying a grant never calls KMS.
pub struct KmsSigner {
    client: Client,
    kid: String,
    public_key: Vec<u8>,
}

impl fmt::Debug for KmsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl KmsSigner {
    /// Resolves `key_id` (id, ARN or alias) with GetPublicKey and checks it is a P-256
    /// signing key. The key's ARN becomes the `kid`, so a new key behind the same alias
    /// gets a new `kid` and grants of the old one stay verifiable where it is trusted.
    pub async fn connect(client: Client, key_id: &str) -> Result<Self, TokenError> {
        let (kid, public_key) = public_key(&client, key_id).await?;
        Ok(Self {
            client,
            kid,
            public_key,
        })
    }
}

/// The ARN and uncompressed SEC1 public key of a KMS P-256 signing key, for
/// [`Grants::trust_key`](crate::tokens::Grants::trust_key) (rotation).
pub async fn public_key(client: &Client, key_id: &str) -> Result<(String, Vec<u8>), TokenError> {
    let out = client
        .get_public_key()
        .key_id(key_id)
        .send()
        .await
        .map_err(|err| TokenError::Signer(describe("kms:GetPublicKey", &err)))?;
    // The curve is checked on the key itself (its SubjectPublicKeyInfo) below, which also
    // covers answers that carry only the deprecated CustomerMasterKeySpec.
    if out.key_usage() != Some(&KeyUsageType::SignVerify)
        || !out
            .signing_algorithms()
            .contains(&SigningAlgorithmSpec::EcdsaSha256)
    {
        return Err(TokenError::Signer(format!(
            "KMS key {key_id} is not an ECDSA_SHA_256 SIGN_VERIFY key"
        )));
    }
    let der = out
        .public_key()
        .ok_or_else(|| TokenError::Signer("kms:GetPublicKey: no public key".into()))?;
    let point = der::p256_spki_point(der.as_ref()).ok_or_else(|| {
        TokenError::Signer(format!("KMS key {key_id} is not an ECC_NIST_P256 key"))
    })?;
    let kid = out.key_id().unwrap_or(key_id).to_owned();
    Ok((kid, point))
}

impl Signer for KmsSigner {
    fn key_id(&self) -> &str {
        &self.kid
    }

    fn sign<'a>(&'a self, message: &'a [u8]) -> BoxFuture<'a, Result<Vec<u8>, TokenError>> {
        Box::pin(async move {
            // RAW: KMS hashes the signing input itself. A JWS signing input is far below
            // KMS's 4096-byte RAW limit, and RAW is what emulators implement faithfully.
            let out = self
                .client
                .sign()
                .key_id(&self.kid)
                .message(Blob::new(message))
                .message_type(MessageType::Raw)
                .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
                .send()
                .await
                .map_err(|err| TokenError::Signer(describe("kms:Sign", &err)))?;
            let signature = out
                .signature()
                .ok_or_else(|| TokenError::Signer("kms:Sign: no signature".into()))?;
            der::ecdsa_to_jws(signature.as_ref())
                .ok_or_else(|| TokenError::Signer("kms:Sign: not a DER ECDSA signature".into()))
        })
    }

    fn public_key(&self) -> Vec<u8> {
        self.public_key.clone()
    }
}

/// Tenant data keys from KMS GenerateDataKey (AES_256) under one symmetric key; the stored
/// form is KMS's ciphertext blob, bound to the tenant by encryption context.
pub struct KmsKeyProvider {
    client: Client,
    key_id: String,
}

impl fmt::Debug for KmsKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsKeyProvider")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl KmsKeyProvider {
    /// A provider wrapping data keys under `key_id` (id, ARN or alias).
    pub fn new(client: Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

impl KeyProvider for KmsKeyProvider {
    fn name(&self) -> &'static str {
        "kms"
    }

    fn generate<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> BoxFuture<'a, Result<GeneratedKey, CryptoError>> {
        Box::pin(async move {
            let out = self
                .client
                .generate_data_key()
                .key_id(&self.key_id)
                .key_spec(DataKeySpec::Aes256)
                .encryption_context(TENANT_CONTEXT, tenant_id)
                .send()
                .await
                .map_err(|err| CryptoError::Unavailable(describe("kms:GenerateDataKey", &err)))?;
            let missing =
                || CryptoError::Unavailable("kms:GenerateDataKey: incomplete answer".into());
            let plain = out.plaintext().ok_or_else(missing)?.as_ref().to_vec();
            let wrapped = out.ciphertext_blob().ok_or_else(missing)?.as_ref().to_vec();
            Ok(GeneratedKey { wrapped, plain })
        })
    }

    fn unwrap<'a>(
        &'a self,
        tenant_id: &'a str,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move {
            let out = self
                .client
                .decrypt()
                .key_id(&self.key_id)
                .ciphertext_blob(Blob::new(wrapped))
                .encryption_context(TENANT_CONTEXT, tenant_id)
                .send()
                .await
                .map_err(|err| {
                    // A blob that does not authenticate (wrong tenant, tampered) is not an
                    // outage: retrying cannot help.
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_invalid_ciphertext_exception())
                    {
                        CryptoError::Corrupt
                    } else {
                        CryptoError::Unavailable(describe("kms:Decrypt", &err))
                    }
                })?;
            out.plaintext()
                .map(|plain| plain.as_ref().to_vec())
                .ok_or_else(|| CryptoError::Unavailable("kms:Decrypt: no plaintext".into()))
        })
    }
}

/// The two DER shapes KMS hands back, parsed strictly enough to refuse anything else.
pub mod der {
    use super::SCALAR_LEN;

    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const BIT_STRING: u8 = 0x03;
    const OID: u8 = 0x06;
    /// 1.2.840.10045.2.1 id-ecPublicKey
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    /// 1.2.840.10045.3.1.7 prime256v1
    const PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

    /// Splits one DER element off `input`: its content, and what follows it.
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&found, rest) = input.split_first()?;
        if found != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81 => {
                let (&len, rest) = rest.split_first()?;
                (usize::from(len), rest)
            }
            // Nothing KMS returns for P-256 is 256 bytes or longer.
            _ => return None,
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    /// A DER INTEGER as a big-endian unsigned scalar left-padded to 32 bytes.
    fn scalar(content: &[u8]) -> Option<[u8; SCALAR_LEN]> {
        let trimmed = match content {
            [0, rest @ ..] if rest.first().is_some_and(|b| b & 0x80 != 0) => rest,
            other => other,
        };
        if trimmed.is_empty() || trimmed.len() > SCALAR_LEN {
            return None;
        }
        let mut out = [0u8; SCALAR_LEN];
        out[SCALAR_LEN - trimmed.len()..].copy_from_slice(trimmed);
        Some(out)
    }

    /// `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` → JWS `r ‖ s` (64 bytes).
    pub fn ecdsa_to_jws(signature: &[u8]) -> Option<Vec<u8>> {
        let (body, trailing) = element(signature, SEQUENCE)?;
        let (r, rest) = element(body, INTEGER)?;
        let (s, rest) = element(rest, INTEGER)?;
        if !trailing.is_empty() || !rest.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(2 * SCALAR_LEN);
        out.extend_from_slice(&scalar(r)?);
        out.extend_from_slice(&scalar(s)?);
        Some(out)
    }

    /// The uncompressed point (65 bytes, `04 ‖ x ‖ y`) of a P-256 SubjectPublicKeyInfo.
    pub fn p256_spki_point(spki: &[u8]) -> Option<Vec<u8>> {
        let (body, trailing) = element(spki, SEQUENCE)?;
        let (algorithm, rest) = element(body, SEQUENCE)?;
        let (key, rest) = element(rest, BIT_STRING)?;
        if !trailing.is_empty() || !rest.is_empty() {
            return None;
        }
        let (kind, params) = element(algorithm, OID)?;
        let (curve, params) = element(params, OID)?;
        if kind != EC_PUBLIC_KEY || curve != PRIME256V1 || !params.is_empty() {
            return None;
        }
        match key {
            [0, point @ ..] if point.len() == 1 + 2 * SCALAR_LEN && point[0] == 4 => {
                Some(point.to_vec())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    };

    use super::der;

    /// Many signatures, so r or s with a high bit (a leading 0x00) and short scalars occur.
    #[test]
    fn der_signatures_become_verifiable_jws_signatures() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let verifier = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.public_key().as_ref());
        for i in 0..200u32 {
            let message = i.to_be_bytes();
            let signature = key.sign(&rng, &message).unwrap();
            let jws = der::ecdsa_to_jws(signature.as_ref()).expect("DER parses");
            assert_eq!(jws.len(), 64);
            verifier.verify(&message, &jws).expect("r‖s verifies");
        }
    }

    #[test]
    fn malformed_signatures_are_refused() {
        assert!(der::ecdsa_to_jws(&[]).is_none());
        assert!(der::ecdsa_to_jws(&[0x30, 0x03, 0x02, 0x01, 0x01]).is_none());
        let mut long = vec![0x30, 0x26, 0x02, 0x21];
        long.extend([0x01; 33]);
        long.extend([0x02, 0x01, 0x01]);
        assert!(der::ecdsa_to_jws(&long).is_none(), "33-byte r is too long");
        let ok = [0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07];
        let jws = der::ecdsa_to_jws(&ok).unwrap();
        assert_eq!((jws[31], jws[63]), (5, 7));
        let mut trailing = ok.to_vec();
        trailing.push(0);
        assert!(der::ecdsa_to_jws(&trailing).is_none());
    }

    #[test]
    fn spki_yields_the_sec1_point() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref()).unwrap();
        let point = key.public_key().as_ref().to_vec();
        let mut spki = vec![
            0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
            0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
        ];
        spki.extend_from_slice(&point);
        assert_eq!(der::p256_spki_point(&spki), Some(point));
        spki[22] = 0x08; // 1.2.840.10045.3.1.8: not prime256v1
        assert!(der::p256_spki_point(&spki).is_none());
    }
}
