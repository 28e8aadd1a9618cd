//! The pure rules of a visit: whether it is live, when it can be joined, when its links
//! expire, and whether a link may be used now. No database, no clock: the caller passes
//! the rows and `now` (Unix ms), so every rule is tested directly.

use crate::config::VisitsConfig;
use crate::model::VisitStatus;
use crate::store::from_ms;
use crate::store::links::{DeviceBinding, LinkRow};
use crate::store::visits::VisitRow;

use super::VisitError;

/// `Ok` while the visit is not over: a cancelled or ended visit refuses every act.
pub fn ensure_live(status: VisitStatus) -> Result<(), VisitError> {
    match status {
        VisitStatus::Cancelled => Err(VisitError::Cancelled),
        VisitStatus::Ended => Err(VisitError::Ended),
        _ => Ok(()),
    }
}

/// When a visit can be joined, Unix ms: from `visits.join_before_minutes` before its start to
/// `visits.join_after_minutes` after its scheduled end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindow {
    /// The first instant a link or the clinician's start works.
    pub opens: i64,
    /// The instant links stop working (their `expires_at`).
    pub closes: i64,
}

impl JoinWindow {
    /// The join window of `visit` under `config`.
    pub fn of(config: &VisitsConfig, visit: &VisitRow) -> Self {
        Self {
            opens: visit.scheduled_at - config.join_before_minutes * 60_000,
            closes: visit.scheduled_end() + config.join_after_minutes * 60_000,
        }
    }

    /// `too_early` before the window opens.
    fn ensure_open(self, now: i64) -> Result<(), VisitError> {
        if now < self.opens {
            return Err(VisitError::TooEarly {
                available_at: from_ms(self.opens),
            });
        }
        Ok(())
    }
}

/// Expiry of a visit's links: the end of its join window.
pub fn link_expiry(config: &VisitsConfig, visit: &VisitRow) -> i64 {
    JoinWindow::of(config, visit).closes
}

/// What a usable link does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usable {
    /// Never used: consuming it seats a new participant.
    Fresh,
    /// Used by this very device: it seats the same participant again.
    Rejoin(String),
}

/// Whether `link` of `visit` may be used now by `device` (`known_device`: the device sent
/// its cookie), and how; or why not.
pub fn usable(
    config: &VisitsConfig,
    link: &LinkRow,
    visit: &VisitRow,
    device: &DeviceBinding,
    known_device: bool,
    now: i64,
) -> Result<Usable, VisitError> {
    ensure_live(visit.status())?;
    if now >= link.expires_at {
        return Err(VisitError::LinkExpired);
    }
    if link.redeemed_at.is_some() {
        let bound = known_device
            && link.device_hash.as_deref() == Some(device.device_hash.as_slice())
            && link.ua_hash.as_deref() == Some(device.ua_hash.as_slice())
            && link.ip_prefix.as_deref() == Some(device.ip_prefix.as_str());
        return match (&link.participant_id, bound) {
            (Some(participant), true) => Ok(Usable::Rejoin(participant.clone())),
            _ => Err(VisitError::LinkUsed),
        };
    }
    if link.revoked_at.is_some() {
        return Err(VisitError::LinkExpired);
    }
    JoinWindow::of(config, visit).ensure_open(now)?;
    Ok(Usable::Fresh)
}

/// Whether the visit's clinician may start it with their API key now: the visit is live and
/// inside its join window.
pub fn clinician_may_start(
    config: &VisitsConfig,
    visit: &VisitRow,
    now: i64,
) -> Result<(), VisitError> {
    ensure_live(visit.status())?;
    let window = JoinWindow::of(config, visit);
    window.ensure_open(now)?;
    if now >= window.closes {
        return Err(VisitError::Conflict("the visit's join window has passed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;
    const START: i64 = 1_000 * MINUTE;

    fn config() -> VisitsConfig {
        VisitsConfig {
            join_before_minutes: 15,
            join_after_minutes: 30,
            ..VisitsConfig::default()
        }
    }

    fn visit(status: VisitStatus) -> VisitRow {
        VisitRow {
            id: "v".into(),
            tenant_id: "t".into(),
            clinician_id: "c".into(),
            status: status.as_str().into(),
            scheduled_at: START,
            duration_minutes: 20,
            media_backend: "sfu".into(),
            waiting_room: true,
            patient_name_ct: Vec::new(),
            patient_phone_ct: None,
            patient_email_ct: None,
            chief_complaint_ct: None,
            notes_ct: None,
            created_at: 0,
            updated_at: 0,
            started_at: None,
            ended_at: None,
        }
    }

    fn device(hash: u8) -> DeviceBinding {
        DeviceBinding {
            device_hash: vec![hash; 32],
            ua_hash: vec![7; 32],
            ip_prefix: "192.0.2.0/24".into(),
        }
    }

    fn link() -> LinkRow {
        LinkRow {
            id: "l".into(),
            tenant_id: "t".into(),
            visit_id: "v".into(),
            role: "patient".into(),
            expires_at: START + 50 * MINUTE,
            revoked_at: None,
            redeemed_at: None,
            participant_id: None,
            device_hash: None,
            ua_hash: None,
            ip_prefix: None,
        }
    }

    fn redeemed_by(hash: u8) -> LinkRow {
        let bound = device(hash);
        LinkRow {
            redeemed_at: Some(START),
            participant_id: Some("p".into()),
            device_hash: Some(bound.device_hash),
            ua_hash: Some(bound.ua_hash),
            ip_prefix: Some(bound.ip_prefix),
            ..link()
        }
    }

    #[test]
    fn only_cancelled_and_ended_visits_are_over() {
        assert!(ensure_live(VisitStatus::Scheduled).is_ok());
        assert!(ensure_live(VisitStatus::Waiting).is_ok());
        assert!(ensure_live(VisitStatus::InProgress).is_ok());
        assert!(matches!(
            ensure_live(VisitStatus::Cancelled),
            Err(VisitError::Cancelled)
        ));
        assert!(matches!(
            ensure_live(VisitStatus::Ended),
            Err(VisitError::Ended)
        ));
    }

    #[test]
    fn the_window_runs_from_before_the_start_to_after_the_end() {
        let window = JoinWindow::of(&config(), &visit(VisitStatus::Scheduled));
        assert_eq!(window.opens, START - 15 * MINUTE);
        assert_eq!(window.closes, START + 50 * MINUTE);
        assert_eq!(
            link_expiry(&config(), &visit(VisitStatus::Scheduled)),
            window.closes
        );
    }

    #[test]
    fn a_fresh_link_works_inside_the_window_only() {
        let v = visit(VisitStatus::Scheduled);
        let at = |now| usable(&config(), &link(), &v, &device(1), false, now);
        assert_eq!(at(START - 15 * MINUTE).ok(), Some(Usable::Fresh));
        assert!(matches!(
            at(START - 15 * MINUTE - 1),
            Err(VisitError::TooEarly { available_at }) if available_at == from_ms(START - 15 * MINUTE)
        ));
        assert!(matches!(
            at(START + 50 * MINUTE),
            Err(VisitError::LinkExpired)
        ));
    }

    #[test]
    fn a_used_link_seats_again_only_its_own_device() {
        let v = visit(VisitStatus::Waiting);
        let same = usable(&config(), &redeemed_by(1), &v, &device(1), true, START);
        assert_eq!(same.ok(), Some(Usable::Rejoin("p".into())));
        let other = usable(&config(), &redeemed_by(1), &v, &device(2), true, START);
        assert!(matches!(other, Err(VisitError::LinkUsed)));
        // The same hashes without the cookie are not the device.
        let no_cookie = usable(&config(), &redeemed_by(1), &v, &device(1), false, START);
        assert!(matches!(no_cookie, Err(VisitError::LinkUsed)));
    }

    #[test]
    fn a_revoked_link_is_expired_and_a_closed_visit_refuses_first() {
        let revoked = LinkRow {
            revoked_at: Some(START),
            ..link()
        };
        let v = visit(VisitStatus::Scheduled);
        assert!(matches!(
            usable(&config(), &revoked, &v, &device(1), false, START),
            Err(VisitError::LinkExpired)
        ));
        let ended = visit(VisitStatus::Ended);
        assert!(matches!(
            usable(&config(), &redeemed_by(1), &ended, &device(1), true, START),
            Err(VisitError::Ended)
        ));
    }

    #[test]
    fn the_clinician_starts_inside_the_window_of_a_live_visit() {
        let v = visit(VisitStatus::Scheduled);
        assert!(clinician_may_start(&config(), &v, START).is_ok());
        assert!(matches!(
            clinician_may_start(&config(), &v, START - 16 * MINUTE),
            Err(VisitError::TooEarly { .. })
        ));
        assert!(matches!(
            clinician_may_start(&config(), &v, START + 50 * MINUTE),
            Err(VisitError::Conflict(_))
        ));
        assert!(matches!(
            clinician_may_start(&config(), &visit(VisitStatus::Cancelled), START),
            Err(VisitError::Cancelled)
        ));
    }
}
