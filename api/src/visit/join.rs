//! Taking a seat in a visit: with a link's code (its first use binds it to the device; that
//! device may use it again), as the visit's clinician with an API key, or by refreshing a
//! grant. Each seats the participant in the media backend first — so a backend that is down
//! consumes nothing — then commits, with its audit rows, and answers a signed grant. Every
//! refusal of a known link or of a start is audited with its reason code.

use chrono::Utc;
use serde_json::json;

use crate::App;
use crate::audit::{Actor, NewEntry, Outcome};
use crate::media::Joined;
use crate::model::ParticipantRole;
use crate::store::{
    self, links::DeviceBinding, links::LinkRow, links::LinkWithVisit, visits::VisitRow,
};
use crate::tokens::{GrantClaims, TokenError, is_plausible_code, secret_hash};

use super::participants::{Seat, ensure_not_removed, standing};
use super::rules::{self, Usable};
use super::{VisitError, lifecycle, media};

/// A seat taken: the signed grant, its claims and the backend's join info.
#[derive(Debug)]
pub struct Granted {
    /// The ES256 session grant.
    pub grant: String,
    /// What it says (participant, role, expiry).
    pub claims: GrantClaims,
    /// What the browser needs to reach the media.
    pub joined: Joined,
}

/// The device asking, as its cookie and request show it.
#[derive(Debug, Clone)]
pub struct Device {
    /// Hashes of its cookie secret, User-Agent and address prefix.
    pub binding: DeviceBinding,
    /// Whether it sent a device cookie (a fresh one is no known device).
    pub known: bool,
}

/// The refusal audit row of `event` for `error` on `visit`.
pub fn refusal(
    tenant: &str,
    actor: &Actor,
    event: &'static str,
    visit: &str,
    error: &VisitError,
) -> NewEntry {
    NewEntry {
        outcome: Outcome::Refused,
        reason: Some(error.code().to_owned()),
        ..NewEntry::success(tenant, actor, event, Some(visit))
    }
}

fn signer(error: TokenError) -> VisitError {
    VisitError::Unavailable(error.to_string())
}

/// Signs the grant of `seat`, counted by `via` (start, rejoin, refresh…).
async fn sign(
    app: &App,
    seat: &Seat<'_>,
    joined: Joined,
    via: &str,
) -> Result<Granted, VisitError> {
    let now = Utc::now().timestamp().max(0).unsigned_abs();
    let claims = seat.claims(
        app.grants.issuer(),
        app.config.tokens.grant_ttl_seconds,
        now,
    );
    let grant = app.grants.issue(&claims).await.map_err(signer)?;
    app.metrics.grants.with_label_values(&[via]).inc();
    Ok(Granted {
        grant,
        claims,
        joined,
    })
}

fn count_refusal(app: &App, error: &VisitError) {
    app.metrics
        .links
        .with_label_values(&[&format!("refused_{}", error.code())])
        .inc();
}

/// The link, visit and clinician a code names (one statement), or `LinkInvalid`, which
/// reveals nothing (and is counted).
async fn lookup(app: &App, code: &str) -> Result<LinkWithVisit, VisitError> {
    let found = if is_plausible_code(code) {
        store::links::by_code_hash(&mut app.store.read().await?, &secret_hash(code)).await?
    } else {
        None
    };
    found.ok_or_else(|| {
        count_refusal(app, &VisitError::LinkInvalid);
        VisitError::LinkInvalid
    })
}

/// What a code names and whether `device` could use it now, consuming nothing (the join
/// page's check). A refusal is counted, not audited: nothing was attempted.
pub async fn check_link(
    app: &App,
    code: &str,
    device: &Device,
) -> Result<LinkWithVisit, VisitError> {
    let found = lookup(app, code).await?;
    let now = store::ms(Utc::now());
    rules::usable(
        &app.config.visits,
        &found.link,
        &found.visit,
        &device.binding,
        device.known,
        now,
    )
    .inspect_err(|error| count_refusal(app, error))?;
    Ok(found)
}

/// Counts and audits (`link.refused`) a refused use of `link` by `actor`; answers the
/// refusal, or the audit failure when the row could not be written.
async fn refuse(app: &App, link: &LinkRow, actor: &Actor, error: VisitError) -> VisitError {
    count_refusal(app, &error);
    let entry = refusal(
        &link.tenant_id,
        actor,
        "link.refused",
        &link.visit_id,
        &error,
    )
    .with_details(json!({"link_id": link.id, "role": link.role}));
    match app.audit_alone(entry).await {
        Ok(()) => error,
        Err(audit) => audit.into(),
    }
}

/// A link's use, as the start request asks it.
#[derive(Debug)]
pub struct LinkStart<'a> {
    /// The visit the request names (it must be the link's).
    pub visit_id: &'a str,
    /// The code.
    pub code: &'a str,
    /// The device.
    pub device: &'a Device,
    /// The name to show, if the person chose one.
    pub display_name: Option<String>,
    /// The caller's network context (the actor is named after the link).
    pub client: &'a Actor,
}

/// Uses a link: its first use consumes it (one conditional UPDATE), creates the participant,
/// binds the link to the device and marks the visit started; the device it is bound to may
/// use it again for the same participant (unless that participant was removed for good).
/// Any other use is refused and audited.
pub async fn start_with_link(app: &App, start: LinkStart<'_>) -> Result<Granted, VisitError> {
    let LinkWithVisit {
        link,
        visit,
        clinician_display_name,
    } = lookup(app, start.code).await?;
    if link.visit_id != start.visit_id {
        count_refusal(app, &VisitError::LinkInvalid);
        return Err(VisitError::LinkInvalid);
    }
    let actor = start.client.renamed(format!("link:{}", link.id));
    let device = start.device;
    let now = store::ms(Utc::now());
    let role = link.role();
    let name = match (start.display_name, role) {
        (Some(name), _) => name,
        (None, ParticipantRole::Patient) => "Patient".to_owned(),
        (None, ParticipantRole::Clinician) => {
            clinician_display_name.unwrap_or_else(|| "Clinician".to_owned())
        }
    };
    let usable = rules::usable(
        &app.config.visits,
        &link,
        &visit,
        &device.binding,
        device.known,
        now,
    );
    match usable {
        Err(error) => Err(refuse(app, &link, &actor, error).await),
        Ok(Usable::Rejoin(participant_id)) => {
            if let Err(error) =
                ensure_not_removed(app, &link.tenant_id, &visit.id, &participant_id).await
            {
                return Err(refuse(app, &link, &actor, error).await);
            }
            let seat = Seat {
                visit: &visit,
                participant_id,
                role,
                name,
            };
            let joined = media::join_alone(app, &seat).await?;
            let granted = sign(app, &seat, joined, "rejoin").await?;
            let entry =
                NewEntry::success(&link.tenant_id, &actor, "link.rejoined", Some(&visit.id))
                    .with_details(
                        json!({"link_id": link.id, "participant_id": seat.participant_id}),
                    );
            app.audit_alone(entry).await?;
            app.metrics.links.with_label_values(&["rejoined"]).inc();
            Ok(granted)
        }
        Ok(Usable::Fresh) => {
            let seat = Seat {
                visit: &visit,
                participant_id: store::new_id(),
                role,
                name,
            };
            // Media first, outside the transaction: if the backend is down nothing has
            // been written and the link stays usable.
            let joined = media::join(app, &seat).await?;
            let participant_id = seat.participant_id.clone();
            let staff_id =
                (role == ParticipantRole::Clinician).then_some(visit.clinician_id.as_str());
            let mut tx = app.store.begin().await?;
            store::links::insert_participant(
                &mut tx,
                &participant_id,
                &link.tenant_id,
                &visit.id,
                role,
                staff_id,
                now,
            )
            .await?;
            if !store::links::consume(
                &mut tx,
                &link.tenant_id,
                &link.id,
                &participant_id,
                &device.binding,
                now,
            )
            .await?
            {
                tx.rollback().await?;
                return Err(refuse(app, &link, &actor, VisitError::LinkUsed).await);
            }
            let started = lifecycle::mark_started(&mut tx, &visit, &actor, now).await?;
            let entry = NewEntry::success(&link.tenant_id, &actor, "link.redeemed", Some(&visit.id))
                .with_details(json!({"link_id": link.id, "participant_id": participant_id, "role": role.as_str()}));
            app.audit_all(&mut tx, started.into_iter().chain([entry]).collect())
                .await?;
            media::record_session(&mut tx, &visit, &joined).await?;
            // Signed before commit: if the signer is down, the link stays unconsumed.
            let granted = sign(app, &seat, joined, "start").await?;
            tx.commit().await?;
            app.metrics.links.with_label_values(&["redeemed"]).inc();
            Ok(granted)
        }
    }
}

/// The clinician's start with an API key: `visit` must be live and inside its join window
/// (a refusal is audited as `participant.start_refused`); the staff member's participant is
/// created on its first start and reused afterwards.
pub async fn start_as_clinician(
    app: &App,
    visit: &VisitRow,
    staff_id: &str,
    actor: &Actor,
    display_name: Option<String>,
) -> Result<Granted, VisitError> {
    let now = store::ms(Utc::now());
    if let Err(error) = rules::clinician_may_start(&app.config.visits, visit, now) {
        let entry = refusal(
            &visit.tenant_id,
            actor,
            "participant.start_refused",
            &visit.id,
            &error,
        );
        app.audit_alone(entry).await?;
        return Err(error);
    }
    let (name, existing) = {
        let mut db = app.store.read().await?;
        let name = match display_name {
            Some(name) => name,
            None => store::staff::get_staff(&mut db, &visit.tenant_id, &visit.clinician_id)
                .await?
                .map_or_else(|| "Clinician".to_owned(), |s| s.display_name),
        };
        let existing =
            store::links::staff_participant(&mut db, &visit.tenant_id, &visit.id, staff_id).await?;
        (name, existing)
    };
    let seat = Seat {
        visit,
        participant_id: existing.clone().unwrap_or_else(store::new_id),
        role: ParticipantRole::Clinician,
        name,
    };
    let joined = media::join(app, &seat).await?;
    let mut tx = app.store.begin().await?;
    if existing.is_none() {
        store::links::insert_participant(
            &mut tx,
            &seat.participant_id,
            &visit.tenant_id,
            &visit.id,
            ParticipantRole::Clinician,
            Some(staff_id),
            now,
        )
        .await?;
    }
    let started = lifecycle::mark_started(&mut tx, visit, actor, now).await?;
    let entry = NewEntry::success(
        &visit.tenant_id,
        actor,
        "participant.started",
        Some(&visit.id),
    )
    .with_details(json!({"participant_id": seat.participant_id, "role": "clinician"}));
    app.audit_all(&mut tx, started.into_iter().chain([entry]).collect())
        .await?;
    media::record_session(&mut tx, visit, &joined).await?;
    let granted = sign(app, &seat, joined, "start_authenticated").await?;
    tx.commit().await?;
    Ok(granted)
}

/// A fresh grant for the holder of a valid one (`claims`, already verified) while the visit
/// is live and its participant was not removed; a refusal is audited as
/// `grant.refresh_refused`. A visit or participant that does not exist is `NotFound`.
pub async fn refresh(
    app: &App,
    claims: &GrantClaims,
    actor: &Actor,
) -> Result<Granted, VisitError> {
    // One read for both lookups, released before any media or audit call.
    let (visit, removed) = {
        let mut db = app.store.read().await?;
        let visit = store::visits::get(&mut db, &claims.tenant, &claims.visit)
            .await?
            .ok_or(VisitError::NotFound)?;
        let removed =
            store::links::participant_removed(&mut db, &claims.tenant, &claims.visit, &claims.sub)
                .await?;
        if removed.is_none() {
            return Err(VisitError::NotFound);
        }
        (visit, removed)
    };
    // A participant removed for good gets no grant into the visit again.
    let refused = rules::ensure_live(visit.status()).and_then(|()| standing(removed));
    if let Err(error) = refused {
        let entry = refusal(
            &claims.tenant,
            actor,
            "grant.refresh_refused",
            &visit.id,
            &error,
        );
        app.audit_alone(entry).await?;
        return Err(error);
    }
    let seat = Seat {
        visit: &visit,
        participant_id: claims.sub.clone(),
        role: claims.role,
        name: claims.name.clone(),
    };
    let joined = media::join_alone(app, &seat).await?;
    let granted = sign(app, &seat, joined, "refresh").await?;
    app.audit_alone(
        NewEntry::success(&claims.tenant, actor, "grant.refreshed", Some(&visit.id))
            .with_details(json!({"participant_id": claims.sub})),
    )
    .await?;
    Ok(granted)
}
