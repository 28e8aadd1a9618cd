//! The application state shared by every route and command: configuration, store, keys,
//! grants, metrics, limits, notification transports and media backends. Which adapter
//! stands behind each trait (local or AWS) is decided here, from the configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tokio::sync::{Notify, watch};

use crate::audit::{Actor, ChainBreak, ChainVerifier, Entry, NewEntry};
use crate::aws::chime::ChimeMedia;
use crate::aws::kms::{KmsKeyProvider, KmsSigner};
use crate::aws::ses::SesTransport;
use crate::aws::sns::SnsTransport;
use crate::cluster::Cluster;
use crate::config::{
    Config, EmailTransport, KeyProviderKind, MediaBackend, SignerKind, SmsTransport,
};
use crate::crypto::{CryptoError, DataKey, KeyProvider, Keyring, LocalKeyProvider};
use crate::error::{ApiError, ApiResult};
use crate::events::{EventBus, VisitEvent};
use crate::media::{MediaError, MediaService, SfuMedia};
use crate::metrics::Metrics;
use crate::model::{Channel, StaffRole};
use crate::notify::smtp::SmtpTransport;
use crate::notify::{LogTransport, Outlet, Transport, TransportError};
use crate::ratelimit::Limiters;
use crate::store::{self, Db, DbError, Store, StoreError};
use crate::tokens::{ApiKeySecret, Grants, LocalSigner, Signer, TokenError};

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
    /// An AWS adapter was built without the AWS configuration (a bug in
    /// [`Config::uses_aws`]).
    #[error("an AWS adapter is configured but the AWS SDK configuration was not loaded")]
    AwsNotConfigured,
    /// A notification transport could not be set up.
    #[error("notification transport: {0}")]
    Transport(#[from] TransportError),
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
    /// Visit events for this node's signaling (publish through [`App::publish`]).
    pub events: EventBus,
    /// This node among the nodes sharing the database.
    pub cluster: Cluster,
    email: Outlet,
    sms: Outlet,
    sfu: Box<dyn MediaService>,
    chime: Option<Box<dyn MediaService>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Opens everything under `data_dir`: creates it, loads or creates the signing and
    /// master keys (mode 0600) or connects to KMS, opens and migrates the database, and
    /// builds the configured transports and media backends. AWS configuration (region,
    /// credential chain) is only resolved when some AWS adapter is configured.
    pub async fn open(config: Config, data_dir: &Path) -> Result<Arc<Self>, StartError> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir_error = |err| StartError::DataDir(data_dir.display().to_string(), err);
        std::fs::create_dir_all(data_dir).map_err(dir_error)?;
        // The database holds PHI ciphertext and secret hashes: owner only.
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(dir_error)?;
        let sdk = match config.uses_aws() {
            true => Some(crate::aws::sdk_config(&config.aws).await),
            false => None,
        };
        // `uses_aws` covers every AWS adapter, so `sdk` is set wherever one is built.
        let aws = || sdk.as_ref().ok_or(StartError::AwsNotConfigured);
        let kms = || aws().map(aws_sdk_kms::Client::new);
        let signer: Arc<dyn Signer> = match config.tokens.signer {
            SignerKind::Local => Arc::new(LocalSigner::load_or_create(
                &data_dir.join("signing-key.p8"),
            )?),
            SignerKind::Kms => Arc::new(
                KmsSigner::connect(
                    kms()?,
                    config.tokens.kms_key_id.as_deref().unwrap_or_default(),
                )
                .await?,
            ),
        };
        let provider: Arc<dyn KeyProvider> = match config.crypto.key_provider {
            KeyProviderKind::Local => Arc::new(LocalKeyProvider::load_or_create(
                &data_dir.join("master.key"),
            )?),
            KeyProviderKind::Kms => Arc::new(KmsKeyProvider::new(
                kms()?,
                config.crypto.kms_key_id.clone().unwrap_or_default(),
            )),
        };
        let grants = Grants::new(signer, config.tokens.issuer.clone())?;
        for key_id in &config.tokens.kms_trusted_key_ids {
            let (kid, point) = crate::aws::kms::public_key(&kms()?, key_id).await?;
            grants.trust_key(&kid, &point)?;
        }
        let cluster = Cluster::new(&config, data_dir).map_err(dir_error)?;
        let migrate_url = Some(config.database.migrate_url.as_str()).filter(|u| !u.is_empty());
        let store = Store::open(
            &config.database_url(data_dir),
            migrate_url,
            config.database.max_connections,
        )
        .await?;
        let metrics = Metrics::new();
        store
            .register_metrics(metrics.registry())
            .map_err(StoreError::from)?;
        let email: Box<dyn Transport> = match config.notify.email {
            EmailTransport::Log => Box::new(LogTransport),
            EmailTransport::Ses => Box::new(SesTransport::new(
                aws_sdk_sesv2::Client::new(aws()?),
                config.notify.email_from.clone(),
                config.notify.ses_configuration_set.clone(),
            )),
            EmailTransport::Smtp => {
                Box::new(SmtpTransport::new(&config.smtp, &config.notify.email_from)?)
            }
        };
        let sms: Box<dyn Transport> = match config.notify.sms {
            SmsTransport::Log => Box::new(LogTransport),
            SmsTransport::Sns => Box::new(SnsTransport::new(aws_sdk_sns::Client::new(aws()?))),
        };
        let outlet = |transport| {
            Outlet::new(
                transport,
                config.notify.breaker_threshold,
                Duration::from_secs(config.notify.breaker_cooldown_seconds),
            )
        };
        let (email, sms) = (outlet(email), outlet(sms));
        let sfu: Box<dyn MediaService> =
            Box::new(SfuMedia::new(config.signaling_url(), config.turn.clone()));
        let chime: Option<Box<dyn MediaService>> = match config.chime_enabled() {
            true => {
                let mut chime = aws_sdk_chimesdkmeetings::config::Builder::from(aws()?);
                if let Some(url) = &config.chime.endpoint_url {
                    chime = chime.endpoint_url(url.clone());
                }
                let client = aws_sdk_chimesdkmeetings::Client::from_conf(chime.build());
                Some(Box::new(ChimeMedia::new(
                    client,
                    config.chime.media_region.clone(),
                    config.signaling_url(),
                )))
            }
            false => None,
        };
        Ok(Arc::new(Self {
            grants,
            keyring: Keyring::new(
                provider,
                Duration::from_secs(config.crypto.data_key_cache_seconds),
            ),
            metrics,
            limits: Limiters::new(&config.limits),
            outbox: Notify::new(),
            events: EventBus::default(),
            cluster,
            store,
            config,
            email,
            sms,
            sfu,
            chime,
        }))
    }

    /// Publishes a visit event to this node's signaling and to every other node.
    pub async fn publish(&self, event: VisitEvent) {
        self.cluster
            .publish(&self.store, &self.metrics, &self.events, event)
            .await;
    }

    /// The transport of a channel.
    pub fn transport(&self, channel: Channel) -> &dyn Transport {
        self.outlet(channel).transport()
    }

    /// The transport of a channel with its circuit breaker.
    pub fn outlet(&self, channel: Channel) -> &Outlet {
        match channel {
            Channel::Sms => &self.sms,
            Channel::Email => &self.email,
        }
    }

    /// The media backend of a visit, or `Unavailable` when this node has Chime disabled.
    pub fn media(&self, backend: MediaBackend) -> Result<&dyn MediaService, MediaError> {
        match backend {
            MediaBackend::Sfu => Ok(self.sfu.as_ref()),
            MediaBackend::Chime => self.chime.as_deref().ok_or_else(|| {
                MediaError::Unavailable(
                    "the chime media backend is not enabled on this node".into(),
                )
            }),
        }
    }

    /// A tenant's data key (cached after first use).
    pub async fn tenant_key(&self, tenant_id: &str) -> ApiResult<Arc<DataKey>> {
        if let Some(key) = self.keyring.cached(tenant_id) {
            return Ok(key);
        }
        let tenant = store::tenants::get(&mut self.store.read().await?, tenant_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if tenant.key_provider != self.keyring.provider_name() {
            return Err(ApiError::Internal(format!(
                "tenant {tenant_id}'s data key is wrapped by {} but crypto.key_provider is {}",
                tenant.key_provider,
                self.keyring.provider_name()
            )));
        }
        self.keyring
            .key(tenant_id, &tenant.wrapped_data_key)
            .await
            .map_err(crypto_error)
    }

    /// Appends an audit row inside `tx` and counts it.
    pub async fn audit(&self, tx: &mut Db, entry: NewEntry) -> Result<Entry, DbError> {
        let mut rows = self.audit_all(tx, vec![entry]).await?;
        rows.pop().ok_or(DbError::RowNotFound)
    }

    /// Appends several audit rows inside `tx` in order, reading the chain head once.
    pub async fn audit_all(
        &self,
        tx: &mut Db,
        entries: Vec<NewEntry>,
    ) -> Result<Vec<Entry>, DbError> {
        let rows = store::audit::append_all(tx, entries, store::ms(Utc::now())).await?;
        for row in &rows {
            self.metrics
                .audit_rows
                .with_label_values(&[row.outcome.as_str()])
                .inc();
        }
        Ok(rows)
    }

    /// Writes one audit row in its own transaction (refusals, whose request changes nothing
    /// else).
    pub async fn audit_alone(&self, entry: NewEntry) -> Result<(), DbError> {
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
            &mut tx,
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
        if !store::tenants::ids(&mut self.store.read().await?)
            .await?
            .is_empty()
        {
            return Ok(None);
        }
        self.create_tenant("default", &Actor::local("system:bootstrap"))
            .await
            .map(Some)
    }

    /// Stores a new API key inside `tx` and audits it.
    pub async fn insert_api_key(
        &self,
        tx: &mut Db,
        tenant_id: &str,
        role: StaffRole,
        staff_id: Option<&str>,
        actor: &Actor,
    ) -> ApiResult<(String, ApiKeySecret)> {
        let id = store::new_id();
        let key = ApiKeySecret::generate();
        store::staff::insert_key(
            tx,
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
        if store::tenants::get(&mut self.store.read().await?, tenant_id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound);
        }
        match staff_id {
            Some(staff_id) => {
                let staff =
                    store::staff::get_staff(&mut self.store.read().await?, tenant_id, staff_id)
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
        let key = store::staff::key_by_id(&mut self.store.read().await?, key_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let mut tx = self.store.begin().await?;
        if !store::staff::revoke_key(&mut tx, &key.tenant_id, key_id, store::ms(Utc::now())).await?
        {
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
            None => store::tenants::ids(&mut self.store.read().await?).await?,
        };
        let mut report = Vec::new();
        for tenant_id in tenants {
            let mut verifier = ChainVerifier::default();
            let mut rows = Box::pin(store::audit::stream(
                self.store.clone(),
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
