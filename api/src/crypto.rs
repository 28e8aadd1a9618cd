//! PHI envelope encryption: each tenant has an AES-256-GCM data key, stored wrapped by a
//! [`KeyProvider`] (a local master key, or KMS in [`crate::aws::kms`]). Field ciphertexts are bound to
//! tenant, record and field through the AEAD's associated data, so a ciphertext copied
//! into another row or column does not decrypt.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use futures::future::BoxFuture;

const KEY_LEN: usize = 32;
const FORMAT_V1: u8 = 1;

/// Why an encryption operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key provider is unreachable or refused (KMS down, key file unreadable).
    #[error("key provider unavailable: {0}")]
    Unavailable(String),
    /// A ciphertext or wrapped key did not authenticate.
    #[error("ciphertext does not authenticate")]
    Corrupt,
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CryptoError::Unavailable("no randomness".into()))?;
    Ok(bytes)
}

fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = random_bytes::<NONCE_LEN>()?;
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| CryptoError::Corrupt)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    Ok(out)
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let (&version, rest) = sealed.split_first().ok_or(CryptoError::Corrupt)?;
    if version != FORMAT_V1 || rest.len() < NONCE_LEN {
        return Err(CryptoError::Corrupt);
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Corrupt)?;
    let mut buf = ciphertext.to_vec();
    let plain = key
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .map_err(|_| CryptoError::Corrupt)?;
    Ok(plain.to_vec())
}

fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| CryptoError::Corrupt)
}

/// A tenant's data key, ready to encrypt fields.
pub struct DataKey {
    key: LessSafeKey,
    tenant_id: String,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl DataKey {
    fn aad(&self, record: &str, field: &str) -> Vec<u8> {
        format!("bedside-phi/v1/{}/{record}/{field}", self.tenant_id).into_bytes()
    }

    /// Encrypts one field of one record.
    pub fn encrypt(
        &self,
        record: &str,
        field: &str,
        plaintext: &str,
    ) -> Result<Vec<u8>, CryptoError> {
        seal(&self.key, &self.aad(record, field), plaintext.as_bytes())
    }

    /// Decrypts one field of one record.
    pub fn decrypt(&self, record: &str, field: &str, sealed: &[u8]) -> Result<String, CryptoError> {
        let plain = open(&self.key, &self.aad(record, field), sealed)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Corrupt)
    }
}

/// A freshly generated data key: the form to store and the plain key bytes.
pub struct GeneratedKey {
    /// The data key wrapped by the provider (stored with the tenant).
    pub wrapped: Vec<u8>,
    /// The plain key (kept in memory only).
    pub plain: Vec<u8>,
}

/// Makes and unwraps tenant data keys (envelope encryption).
pub trait KeyProvider: Send + Sync {
    /// Stored beside the wrapped key, so a tenant's key is unwrapped by the right provider.
    fn name(&self) -> &'static str;
    /// A fresh data key for `tenant_id`.
    fn generate<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> BoxFuture<'a, Result<GeneratedKey, CryptoError>>;
    /// Unwraps a stored data key.
    fn unwrap<'a>(
        &'a self,
        tenant_id: &'a str,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>>;
}

/// A 256-bit master key in a file (mode 0600) that wraps every tenant's data key.
pub struct LocalKeyProvider {
    master: LessSafeKey,
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LocalKeyProvider(<redacted>)")
    }
}

impl LocalKeyProvider {
    /// Loads the master key at `path`, creating it on first use.
    pub fn load_or_create(path: &Path) -> Result<Self, CryptoError> {
        let bytes = crate::keyfile::read_or_create(path, || {
            random_bytes::<KEY_LEN>()
                .map(|key| key.to_vec())
                .map_err(|err| err.to_string())
        })
        .map_err(CryptoError::Unavailable)?;
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::Unavailable(format!(
                "{} does not hold a 256-bit key",
                path.display()
            )));
        }
        Self::from_bytes(&bytes)
    }

    /// A provider from raw key bytes (tests).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(Self {
            master: aes_key(bytes)?,
        })
    }

    fn aad(tenant_id: &str) -> Vec<u8> {
        format!("bedside-dek/v1/{tenant_id}").into_bytes()
    }
}

impl KeyProvider for LocalKeyProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn generate<'a>(
        &'a self,
        tenant_id: &'a str,
    ) -> BoxFuture<'a, Result<GeneratedKey, CryptoError>> {
        Box::pin(async move {
            let plain = random_bytes::<KEY_LEN>()?.to_vec();
            let wrapped = seal(&self.master, &Self::aad(tenant_id), &plain)?;
            Ok(GeneratedKey { wrapped, plain })
        })
    }

    fn unwrap<'a>(
        &'a self,
        tenant_id: &'a str,
        wrapped: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<u8>, CryptoError>> {
        Box::pin(async move { open(&self.master, &Self::aad(tenant_id), wrapped) })
    }
}

/// Unwrapped data keys by tenant, so a request does not call the provider each time. An
/// entry lives for a bounded time: a key disabled or revoked in the provider stops being
/// usable within that time, and plaintext keys do not sit in memory forever.
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    ttl: Duration,
    cache: RwLock<HashMap<String, (Arc<DataKey>, Instant)>>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("provider", &self.provider.name())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring over `provider` keeping unwrapped keys for `ttl`.
    pub fn new(provider: Arc<dyn KeyProvider>, ttl: Duration) -> Self {
        Self {
            provider,
            ttl,
            cache: RwLock::default(),
        }
    }

    /// The provider's name, stored with new tenants.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }

    /// A new data key for a new tenant: the wrapped bytes to store, the key cached.
    pub async fn create(&self, tenant_id: &str) -> Result<Vec<u8>, CryptoError> {
        let key = self.provider.generate(tenant_id).await?;
        self.insert(tenant_id, &key.plain)?;
        Ok(key.wrapped)
    }

    /// The tenant's key, unwrapping `wrapped` only when it is not cached.
    pub async fn key(&self, tenant_id: &str, wrapped: &[u8]) -> Result<Arc<DataKey>, CryptoError> {
        if let Some(key) = self.cached(tenant_id) {
            return Ok(key);
        }
        let plain = self.provider.unwrap(tenant_id, wrapped).await?;
        self.insert(tenant_id, &plain)
    }

    /// The cached key, if any and not older than the keyring's time to live.
    pub fn cached(&self, tenant_id: &str) -> Option<Arc<DataKey>> {
        let cache = self.cache.read().ok()?;
        let (key, at) = cache.get(tenant_id)?;
        (at.elapsed() < self.ttl).then(|| key.clone())
    }

    fn insert(&self, tenant_id: &str, plain: &[u8]) -> Result<Arc<DataKey>, CryptoError> {
        let key = Arc::new(DataKey {
            key: aes_key(plain)?,
            tenant_id: tenant_id.to_owned(),
        });
        if let Ok(mut cache) = self.cache.write() {
            let ttl = self.ttl;
            cache.retain(|_, (_, at)| at.elapsed() < ttl);
            cache.insert(tenant_id.to_owned(), (key.clone(), Instant::now()));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fields_round_trip_and_are_bound_to_their_place() {
        let provider = Arc::new(LocalKeyProvider::from_bytes(&[7u8; 32]).unwrap());
        let ring = Keyring::new(provider.clone(), Duration::from_secs(300));
        let wrapped = ring.create("t1").await.unwrap();
        let key = ring.key("t1", &wrapped).await.unwrap();
        let sealed = key.encrypt("v1", "patient_name", "Ada Lovelace").unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("Ada"));
        assert_eq!(
            key.decrypt("v1", "patient_name", &sealed).unwrap(),
            "Ada Lovelace"
        );
        assert!(key.decrypt("v2", "patient_name", &sealed).is_err());
        assert!(key.decrypt("v1", "chief_complaint", &sealed).is_err());

        let fresh = Keyring::new(provider, Duration::from_secs(300));
        let again = fresh.key("t1", &wrapped).await.unwrap();
        assert_eq!(
            again.decrypt("v1", "patient_name", &sealed).unwrap(),
            "Ada Lovelace"
        );
        assert!(
            fresh.key("t2", &wrapped).await.is_err(),
            "wrapped key is bound to its tenant"
        );
    }

    #[tokio::test]
    async fn cached_keys_expire() {
        let provider = Arc::new(LocalKeyProvider::from_bytes(&[7u8; 32]).unwrap());
        let ring = Keyring::new(provider, Duration::from_millis(50));
        let wrapped = ring.create("t1").await.unwrap();
        assert!(ring.cached("t1").is_some());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            ring.cached("t1").is_none(),
            "expired: the provider is asked again"
        );
        assert!(ring.key("t1", &wrapped).await.is_ok());
        assert!(ring.cached("t1").is_some());
    }

    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        LocalKeyProvider::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read(&path).unwrap();
        LocalKeyProvider::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), first, "existing key is kept");
    }
}
