//! The application state shared by every route and command: configuration, store, keys,
//! grants, metrics, limits and notification transports.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::{Notify, broadcast, watch};

use crate::audit::{Actor, ChainBreak, ChainVerifier, Entry, NewEntry, Outcome};
use crate::config::{Config, EmailTransport, KeyProviderKind, SignerKind, SmsTransport};
use crate::crypto::{CryptoError, DataKey, KeyProvider, Keyring, LocalKeyProvider};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::model::{Channel, StaffRole};
use crate::notify::{LogTransport, Transport};
use crate::ratelimit::Limiters;
use crate::store::{self, Store, StoreError, Tx};
use crate::tokens::{ApiKeySecret, Grants, LocalSigner, Signer, TokenError};

/// Something other parts of the node must react to (signaling disconnects ended visits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VisitEvent {
    /// The visit ended or was cancelled: disconnect everyone in its room.
    Closed {
        /// Tenant of the visit.
        tenant_id: String,
        /// The visit.
        visit_id: String,
    },
}

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error("data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    /// The database could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing key could not be loaded or created.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The PHI master key could not be loaded or created.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

/// Shared state of one node.
pub struct App {
    /// Effective configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Tenant data keys.
    pub keyring: Keyring,
    /// Session grant issuing and verification.
    pub grants: Grants,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Rate limiters.
    pub limits: Limiters,
    /// Wakes the outbox worker when a notification is queued.
    pub outbox: Notify,
    /// Visit events for signaling.
    pub events: broadcast::Sender<VisitEvent>,
    email: Arc<dyn Transport>,
    sms: Arc<dyn Transport>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Opens everything under `data_dir`: creates it, loads or creates the signing and
    /// master keys (mode 0600), opens and migrates the database.
    pub async fn open(config: Config, data_dir: &Path) -> Result<Arc<Self>, StartError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir_error = |err| StartError::DataDir(data_dir.display().to_string(), err);
        std::fs::create_dir_all(data_dir).map_err(dir_error)?;
        // The database holds PHI ciphertext and secret hashes: owner only.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(dir_error)?;
        let signer: Arc<dyn Signer> = match config.tokens.signer {
            SignerKind::Local => Arc::new(LocalSigner::load_or_create(
                &data_dir.join("signing-key.p8"),
            )?),
        };
        let provider: Arc<dyn KeyProvider> = match config.crypto.key_provider {
            KeyProviderKind::Local => Arc::new(LocalKeyProvider::load_or_create(
                &data_dir.join("master.key"),
            )?),
        };
        let store = Store::open(
            &config.database_url(data_dir),
            config.database.max_connections,
        )
        .await?;
        let email: Arc<dyn Transport> = match config.notify.email {
            EmailTransport::Log => Arc::new(LogTransport),
        };
        let sms: Arc<dyn Transport> = match config.notify.sms {
            SmsTransport::Log => Arc::new(LogTransport),
        };
        Ok(Arc::new(Self {
            grants: Grants::new(signer, config.tokens.issuer.clone())?,
            keyring: Keyring::new(provider),
            metrics: Metrics::new(),
            limits: Limiters::new(&config.limits),
            outbox: Notify::new(),
            events: broadcast::channel(256).0,
            store,
            config,
            email,
            sms,
        }))
    }

    /// The transport of a channel.
    pub fn transport(&self, channel: Channel) -> &dyn Transport {
        match channel {
            Channel::Sms => self.sms.as_ref(),
            Channel::Email => self.email.as_ref(),
        }
    }

    /// A tenant's data key (cached after first use).
    pub async fn tenant_key(&self, tenant_id: &str) -> ApiResult<Arc<DataKey>> {
        if let Some(key) = self.keyring.cached(tenant_id) {
            return Ok(key);
        }
        let tenant = store::tenants::get(self.store.reader(), tenant_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        self.keyring
            .key(tenant_id, &tenant.wrapped_data_key)
            .await
            .map_err(crypto_error)
    }

    /// Appends an audit row inside `tx` and counts it.
    pub async fn audit(&self, tx: &mut Tx, entry: NewEntry) -> ApiResult<Entry> {
        let outcome = entry.outcome;
        let row = store::audit::append(tx, entry, store::ms(Utc::now())).await?;
        self.metrics
            .audit_rows
            .with_label_values(&[outcome.as_str()])
            .inc();
        Ok(row)
    }

    /// Writes one audit row in its own transaction (refusals, whose request changes nothing
    /// else).
    pub async fn audit_alone(&self, entry: NewEntry) -> ApiResult<()> {
        let mut tx = self.store.begin().await?;
        self.audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a tenant with its data key and an admin API key.
    pub async fn create_tenant(
        &self,
        name: &str,
        actor: &Actor,
    ) -> ApiResult<(String, ApiKeySecret)> {
        let tenant_id = store::new_id();
        let wrapped = self
            .keyring
            .create(&tenant_id)
            .await
            .map_err(crypto_error)?;
        let now = store::ms(Utc::now());
        let mut tx = self.store.begin().await?;
        store::tenants::insert(
            &mut *tx,
            &store::tenants::TenantRow {
                id: tenant_id.clone(),
                name: name.to_owned(),
                wrapped_data_key: wrapped,
                key_provider: self.keyring.provider_name().to_owned(),
            },
            now,
        )
        .await?;
        self.audit(
            &mut tx,
            NewEntry::success(&tenant_id, actor, "tenant.created", None),
        )
        .await?;
        let (_, key) = self
            .insert_api_key(&mut tx, &tenant_id, StaffRole::Admin, None, actor)
            .await?;
        tx.commit().await?;
        Ok((tenant_id, key))
    }

    /// On the very first start: a `default` tenant and its admin key (shown once).
    pub async fn bootstrap(&self) -> ApiResult<Option<(String, ApiKeySecret)>> {
        if !store::tenants::ids(self.store.reader()).await?.is_empty() {
            return Ok(None);
        }
        self.create_tenant("default", &Actor::local("system:bootstrap"))
            .await
            .map(Some)
    }

    /// Stores a new API key inside `tx` and audits it.
    pub async fn insert_api_key(
        &self,
        tx: &mut Tx,
        tenant_id: &str,
        role: StaffRole,
        staff_id: Option<&str>,
        actor: &Actor,
    ) -> ApiResult<(String, ApiKeySecret)> {
        let id = store::new_id();
        let key = ApiKeySecret::generate();
        store::staff::insert_key(
            &mut **tx,
            &id,
            tenant_id,
            staff_id,
            role,
            &key.hash(),
            store::ms(Utc::now()),
        )
        .await?;
        let entry = NewEntry::success(tenant_id, actor, "apikey.created", None)
            .with_details(json!({"key_id": id, "role": role.as_str(), "staff_id": staff_id}));
        self.audit(tx, entry).await?;
        Ok((id, key))
    }

    /// `bedside apikey create`: a key for an existing tenant (and staff member, whose role
    /// must match).
    pub async fn create_api_key(
        &self,
        tenant_id: &str,
        role: StaffRole,
        staff_id: Option<&str>,
        actor: &Actor,
    ) -> ApiResult<(String, ApiKeySecret)> {
        if store::tenants::get(self.store.reader(), tenant_id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound);
        }
        match staff_id {
            Some(staff_id) => {
                let staff = store::staff::get_staff(self.store.reader(), tenant_id, staff_id)
                    .await?
                    .ok_or(ApiError::NotFound)?;
                if staff.role != role.as_str() {
                    return Err(ApiError::invalid(
                        "role",
                        "does not match the staff member's role",
                    ));
                }
            }
            None if role == StaffRole::Clinician => {
                return Err(ApiError::invalid("staff", "a clinician key needs --staff"));
            }
            None => {}
        }
        let mut tx = self.store.begin().await?;
        let created = self
            .insert_api_key(&mut tx, tenant_id, role, staff_id, actor)
            .await?;
        tx.commit().await?;
        Ok(created)
    }

    /// `bedside apikey revoke`.
    pub async fn revoke_api_key(&self, key_id: &str, actor: &Actor) -> ApiResult<()> {
        let key = store::staff::key_by_id(self.store.reader(), key_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let mut tx = self.store.begin().await?;
        if !store::staff::revoke_key(&mut *tx, key_id, store::ms(Utc::now())).await? {
            return Err(ApiError::Conflict("the key is already revoked"));
        }
        let entry = NewEntry::success(&key.tenant_id, actor, "apikey.revoked", None)
            .with_details(json!({"key_id": key_id}));
        self.audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Walks the audit chain of one tenant or of all; rows checked per tenant, or the
    /// first break.
    pub async fn verify_audit(
        &self,
        tenant: Option<&str>,
    ) -> ApiResult<Result<Vec<(String, u64)>, ChainBreak>> {
        use futures::StreamExt as _;
        let tenants = match tenant {
            Some(id) => vec![id.to_owned()],
            None => store::tenants::ids(self.store.reader()).await?,
        };
        let mut report = Vec::new();
        for tenant_id in tenants {
            let mut verifier = ChainVerifier::default();
            let mut rows = Box::pin(store::audit::stream(
                self.store.reader().clone(),
                tenant_id.clone(),
                store::audit::AuditFilter::default(),
            ));
            while let Some(row) = rows.next().await {
                if let Err(broken) = verifier.check(&row?) {
                    return Ok(Err(broken));
                }
            }
            report.push((tenant_id, verifier.checked()));
        }
        Ok(Ok(report))
    }

    /// Runs the outbox worker and limiter pruning until `shutdown` flips.
    pub async fn run_background(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                () = self.outbox.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = prune.tick() => self.limits.prune(),
            }
            if let Err(err) = crate::notify::deliver_due(&self).await {
                tracing::warn!(error = %err, "outbox delivery pass failed");
            }
        }
    }

    /// A refusal audit row for `code` on an act that touched `visit_id`.
    pub fn refusal(
        tenant_id: &str,
        actor: &Actor,
        event: &'static str,
        visit_id: &str,
        err: &ApiError,
    ) -> NewEntry {
        NewEntry {
            outcome: Outcome::Refused,
            reason: Some(err.code().to_owned()),
            ..NewEntry::success(tenant_id, actor, event, Some(visit_id))
        }
    }
}

/// Maps a key-provider failure to the API's vocabulary.
pub fn crypto_error(err: CryptoError) -> ApiError {
    match err {
        CryptoError::Unavailable(why) => ApiError::Unavailable(why),
        CryptoError::Corrupt => {
            ApiError::Internal("stored ciphertext does not authenticate".into())
        }
    }
}
