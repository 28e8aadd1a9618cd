//! Who may take a seat in a visit: the seat a start gives (and the grant claims that carry
//! it), the check signaling makes before seating a grant holder, and removal for good — kept
//! with the participant in the database and audited in the same transaction, so a removed
//! person stays out for the rest of the visit whatever happens to the room or the node.

use chrono::Utc;
use serde_json::json;

use crate::App;
use crate::audit::{Actor, NewEntry};
use crate::config::MediaBackend;
use crate::model::{ParticipantRole, VisitStatus};
use crate::store::{self, visits::VisitRow};
use crate::tokens::{GRANT_AUDIENCE, GrantClaims, random_base62};

use super::VisitError;
use super::media::backend_of;
use super::rules::ensure_live;

/// A participant about to be handed a grant for a visit.
#[derive(Debug)]
pub struct Seat<'a> {
    /// The visit.
    pub visit: &'a VisitRow,
    /// The participant (new for a first start, the bound one for a rejoin).
    pub participant_id: String,
    /// Its role in the visit.
    pub role: ParticipantRole,
    /// The name the others see.
    pub name: String,
}

impl Seat<'_> {
    /// The claims of a grant for this seat issued by `issuer` at `now` (Unix seconds),
    /// valid for `ttl_seconds`. The room is the visit: one visit, one media session.
    pub fn claims(&self, issuer: &str, ttl_seconds: u64, now: u64) -> GrantClaims {
        GrantClaims {
            iss: issuer.to_owned(),
            aud: GRANT_AUDIENCE.to_owned(),
            sub: self.participant_id.clone(),
            visit: self.visit.id.clone(),
            room: self.visit.id.clone(),
            tenant: self.visit.tenant_id.clone(),
            role: self.role,
            name: self.name.clone(),
            jti: random_base62(22),
            iat: now,
            nbf: now,
            exp: now + ttl_seconds,
        }
    }
}

/// What signaling needs to know to seat a grant holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Where the visit's media runs.
    pub backend: MediaBackend,
    /// Whether patients wait to be admitted.
    pub waiting_room: bool,
    /// Whether the call has already run (`in_progress`).
    pub in_progress: bool,
}

/// Whether `participant` may take a seat in `visit` of `tenant` now: the visit exists and is
/// live, and the participant is one of its own who was not removed. One read.
pub async fn admission(
    app: &App,
    tenant: &str,
    visit: &str,
    participant: &str,
) -> Result<Admission, VisitError> {
    let mut db = app.store.read().await?;
    let row = store::visits::get(&mut db, tenant, visit)
        .await?
        .ok_or(VisitError::NotFound)?;
    ensure_live(row.status())?;
    standing(store::links::participant_removed(&mut db, tenant, visit, participant).await?)?;
    Ok(Admission {
        backend: backend_of(&row),
        waiting_room: row.waiting_room,
        in_progress: row.status() == VisitStatus::InProgress,
    })
}

/// A participant's standing from [`store::links::participant_removed`]: `NotFound` when the
/// visit has no such participant, `Removed` when it was removed for good.
pub fn standing(removed: Option<bool>) -> Result<(), VisitError> {
    match removed {
        None => Err(VisitError::NotFound),
        Some(true) => Err(VisitError::Removed),
        Some(false) => Ok(()),
    }
}

/// `Ok` unless `participant` of `visit` was removed for good (`Removed`) or is not one of
/// its participants (`NotFound`).
pub async fn ensure_not_removed(
    app: &App,
    tenant: &str,
    visit: &str,
    participant: &str,
) -> Result<(), VisitError> {
    let mut db = app.store.read().await?;
    standing(store::links::participant_removed(&mut db, tenant, visit, participant).await?)
}

/// Removes `participant` from `visit` for good, by `by`: stored and audited as
/// `participant.removed` in one transaction. Removing someone already removed changes
/// nothing; a participant the visit does not have is `NotFound`.
pub async fn remove_for_good(
    app: &App,
    tenant: &str,
    visit: &str,
    participant: &str,
    by: &Actor,
) -> Result<(), VisitError> {
    let now = store::ms(Utc::now());
    let mut tx = app.store.begin().await?;
    if !store::links::remove_participant(&mut tx, tenant, visit, participant, now).await? {
        drop(tx);
        return ensure_not_removed(app, tenant, visit, participant)
            .await
            .or_else(|error| match error {
                VisitError::Removed => Ok(()),
                other => Err(other),
            });
    }
    let entry = NewEntry::success(tenant, by, "participant.removed", Some(visit))
        .with_details(json!({"participant_id": participant}));
    app.audit(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(())
}
