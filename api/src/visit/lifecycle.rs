//! A visit's status changes: `scheduled → waiting` on the first start, `→ in_progress` once a
//! clinician and a patient are in the call, and `→ ended | cancelled` when it is closed. Each
//! change is one conditional UPDATE with its audit row in the same transaction.

use chrono::Utc;
use serde_json::json;

use crate::App;
use crate::audit::{Actor, NewEntry};
use crate::events::VisitEvent;
use crate::model::VisitStatus;
use crate::store::{self, Db, DbError, visits::VisitRow};

use super::{Via, VisitError};

/// Marks the visit live (`scheduled → waiting`) inside `tx`, answering the `visit.started`
/// audit entry of the first start for the caller to append with its own. A visit already
/// read as live is left alone (no statement): only `scheduled` can move, and the UPDATE
/// re-checks that.
pub async fn mark_started(
    tx: &mut Db,
    visit: &VisitRow,
    actor: &Actor,
    now: i64,
) -> Result<Option<NewEntry>, DbError> {
    if visit.status() != VisitStatus::Scheduled {
        return Ok(None);
    }
    let moved = store::visits::transition(
        tx,
        &visit.tenant_id,
        &visit.id,
        &[VisitStatus::Scheduled],
        VisitStatus::Waiting,
        now,
    )
    .await?;
    Ok(moved.then(|| NewEntry::success(&visit.tenant_id, actor, "visit.started", Some(&visit.id))))
}

/// `scheduled | waiting → in_progress`, audited as `visit.in_progress` by signaling, the
/// first time a clinician and a patient are both in the call. A visit already past that is
/// left as it is.
pub async fn mark_in_progress(app: &App, tenant: &str, visit: &str) -> Result<(), DbError> {
    let now = store::ms(Utc::now());
    let mut tx = app.store.begin().await?;
    let moved = store::visits::transition(
        &mut tx,
        tenant,
        visit,
        &[VisitStatus::Scheduled, VisitStatus::Waiting],
        VisitStatus::InProgress,
        now,
    )
    .await?;
    if moved {
        let actor = Actor::local("system:signaling");
        app.audit(
            &mut tx,
            NewEntry::success(tenant, &actor, "visit.in_progress", Some(visit)),
        )
        .await?;
    }
    tx.commit().await
}

/// How a visit is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Ended by its clinician (or an admin), from any live state.
    End,
    /// Cancelled before it began.
    Cancel,
}

impl Closing {
    fn from(self) -> &'static [VisitStatus] {
        match self {
            Closing::End => &[
                VisitStatus::Scheduled,
                VisitStatus::Waiting,
                VisitStatus::InProgress,
            ],
            Closing::Cancel => &[VisitStatus::Scheduled, VisitStatus::Waiting],
        }
    }

    fn to(self) -> VisitStatus {
        match self {
            Closing::End => VisitStatus::Ended,
            Closing::Cancel => VisitStatus::Cancelled,
        }
    }

    /// The audit event, and the `visits` metric label after its `visit.` prefix.
    fn event(self) -> &'static str {
        match self {
            Closing::End => "visit.ended",
            Closing::Cancel => "visit.cancelled",
        }
    }

    fn refused(self) -> VisitError {
        VisitError::Conflict(match self {
            Closing::End => "the visit is already over",
            Closing::Cancel => "only a visit that has not begun can be cancelled",
        })
    }
}

/// Closes `visit`: the status change, every link revoked and one audit row (actor `by`), in
/// one transaction; then counts it and announces [`VisitEvent::Closed`] here and to the other
/// nodes, whose signaling disconnects the room. A visit that cannot be closed that way
/// (already over; begun, for a cancel) is a [`VisitError::Conflict`] and changes nothing.
/// The media session is closed separately, by [`super::media::close_session`].
pub async fn close(
    app: &App,
    tenant: &str,
    visit: &str,
    by: &Actor,
    closing: Closing,
    via: Via,
) -> Result<(), VisitError> {
    let now = store::ms(Utc::now());
    let mut tx = app.store.begin().await?;
    if !store::visits::transition(&mut tx, tenant, visit, closing.from(), closing.to(), now).await?
    {
        return Err(closing.refused());
    }
    let revoked = store::links::revoke_all(&mut tx, tenant, visit, now).await?;
    let entry = NewEntry::success(tenant, by, closing.event(), Some(visit))
        .with_details(via.mark(json!({"links_revoked": revoked})));
    app.audit(&mut tx, entry).await?;
    tx.commit().await?;
    app.metrics
        .visits
        .with_label_values(&[closing.event().trim_start_matches("visit.")])
        .inc();
    app.publish(VisitEvent::Closed {
        tenant_id: tenant.to_owned(),
        visit_id: visit.to_owned(),
    })
    .await;
    Ok(())
}
