//! The visit domain: roles, statuses, the visit as integrators see it, and request bodies
//! with their validation rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::MediaBackend;
use crate::error::FieldError;

/// Role of a staff credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StaffRole {
    /// Manages staff, keys, audit; sees everything in the tenant.
    Admin,
    /// Schedules visits and sends links.
    Scheduler,
    /// Holds visits; sees only their own.
    Clinician,
}

impl StaffRole {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Scheduler => "scheduler",
            Self::Clinician => "clinician",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "admin" => Some(Self::Admin),
            "scheduler" => Some(Self::Scheduler),
            "clinician" => Some(Self::Clinician),
            _ => None,
        }
    }
}

/// Role of a visit participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParticipantRole {
    /// The patient.
    Patient,
    /// The visit's clinician.
    Clinician,
}

impl ParticipantRole {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Patient => "patient",
            Self::Clinician => "clinician",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "patient" => Some(Self::Patient),
            "clinician" => Some(Self::Clinician),
            _ => None,
        }
    }
}

/// Lifecycle of a visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VisitStatus {
    /// Created, nobody has joined.
    Scheduled,
    /// Someone has started; the visit is live but the call has not begun.
    Waiting,
    /// The call is running.
    InProgress,
    /// Ended by a clinician or admin.
    Ended,
    /// Cancelled before it happened.
    Cancelled,
}

impl VisitStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Waiting => "waiting",
            Self::InProgress => "in_progress",
            Self::Ended => "ended",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "scheduled" => Some(Self::Scheduled),
            "waiting" => Some(Self::Waiting),
            "in_progress" => Some(Self::InProgress),
            "ended" => Some(Self::Ended),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// Whether the visit is over for good.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Ended | Self::Cancelled)
    }
}

/// Patient details (PHI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Patient {
    /// Full name.
    pub name: String,
    /// Mobile number, E.164 (`+15551234567`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Email address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A visit as the API returns it. PHI fields only for roles allowed them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Visit {
    /// Visit id.
    pub id: String,
    /// Lifecycle state.
    pub status: VisitStatus,
    /// Start time.
    pub scheduled_at: DateTime<Utc>,
    /// Planned length.
    pub duration_minutes: u32,
    /// The clinician (staff id).
    pub clinician_id: String,
    /// Media backend for this visit.
    pub media_backend: MediaBackend,
    /// Whether the patient waits to be admitted.
    pub waiting_room: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// When the first participant started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the visit ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Patient details (PHI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<Patient>,
    /// Reason for the visit (PHI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chief_complaint: Option<String>,
    /// Clinical notes (PHI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// `POST /api/visits` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVisit {
    /// Staff id of a clinician of this tenant.
    pub clinician_id: String,
    /// Start time, RFC 3339.
    pub scheduled_at: DateTime<Utc>,
    /// 5–240 minutes.
    #[schema(minimum = 5, maximum = 240)]
    pub duration_minutes: u32,
    /// Patient details.
    pub patient: Patient,
    /// Reason for the visit.
    #[serde(default)]
    pub chief_complaint: Option<String>,
    /// Clinical notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Hold the patient until admitted (default true).
    #[serde(default)]
    pub waiting_room: Option<bool>,
    /// Override of `media.backend`.
    #[serde(default)]
    pub media_backend: Option<MediaBackend>,
}

/// `PATCH /api/visits/{id}` body: only the fields given change.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchVisit {
    /// New clinician.
    #[serde(default)]
    pub clinician_id: Option<String>,
    /// New start time.
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// New length, 5–240 minutes.
    #[serde(default)]
    #[schema(minimum = 5, maximum = 240)]
    pub duration_minutes: Option<u32>,
    /// Replaces the patient details.
    #[serde(default)]
    pub patient: Option<Patient>,
    /// Replaces the reason for the visit.
    #[serde(default)]
    pub chief_complaint: Option<String>,
    /// Replaces the notes.
    #[serde(default)]
    pub notes: Option<String>,
    /// Changes the waiting room setting.
    #[serde(default)]
    pub waiting_room: Option<bool>,
}

/// Shortest allowed visit.
pub const MIN_DURATION: u32 = 5;
/// Longest allowed visit.
pub const MAX_DURATION: u32 = 240;

/// Whether `phone` is E.164: `+`, a non-zero digit, then 1–14 more digits.
pub fn is_e164(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// A deliberately small plausibility check: one `@`, a dotted domain, no spaces.
pub fn is_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.contains(char::is_whitespace)
        && !domain.contains('@')
}

fn check_text(errors: &mut Vec<FieldError>, field: &str, value: &str, max: usize) {
    if value.trim().is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if value.chars().count() > max {
        errors.push(FieldError::new(field, format!("at most {max} characters")));
    }
}

impl Patient {
    /// Field errors of this patient, prefixed with `patient.`.
    pub fn validate(&self, errors: &mut Vec<FieldError>) {
        check_text(errors, "patient.name", &self.name, 200);
        if let Some(phone) = &self.phone
            && !is_e164(phone)
        {
            errors.push(FieldError::new(
                "patient.phone",
                "must be E.164, like +15551234567",
            ));
        }
        if let Some(email) = &self.email
            && !is_email(email)
        {
            errors.push(FieldError::new("patient.email", "not an email address"));
        }
    }
}

fn check_duration(errors: &mut Vec<FieldError>, minutes: u32) {
    if !(MIN_DURATION..=MAX_DURATION).contains(&minutes) {
        errors.push(FieldError::new(
            "duration_minutes",
            format!("must be between {MIN_DURATION} and {MAX_DURATION}"),
        ));
    }
}

fn check_optional_texts(
    errors: &mut Vec<FieldError>,
    chief_complaint: Option<&str>,
    notes: Option<&str>,
) {
    if let Some(text) = chief_complaint {
        check_text(errors, "chief_complaint", text, 2000);
    }
    if let Some(text) = notes {
        check_text(errors, "notes", text, 20_000);
    }
}

impl CreateVisit {
    /// Every field error at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if self.clinician_id.is_empty() {
            errors.push(FieldError::new("clinician_id", "must not be empty"));
        }
        check_duration(&mut errors, self.duration_minutes);
        self.patient.validate(&mut errors);
        check_optional_texts(
            &mut errors,
            self.chief_complaint.as_deref(),
            self.notes.as_deref(),
        );
        errors
    }
}

impl PatchVisit {
    /// Every field error at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if let Some(minutes) = self.duration_minutes {
            check_duration(&mut errors, minutes);
        }
        if let Some(patient) = &self.patient {
            patient.validate(&mut errors);
        }
        check_optional_texts(
            &mut errors,
            self.chief_complaint.as_deref(),
            self.notes.as_deref(),
        );
        errors
    }
}

/// `POST /api/staff` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStaff {
    /// Role of the new staff member and their key.
    pub role: StaffRole,
    /// Name shown to patients (the first word appears in notifications).
    pub display_name: String,
    /// Work email (optional).
    #[serde(default)]
    pub email: Option<String>,
}

impl CreateStaff {
    /// Every field error at once.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        check_text(&mut errors, "display_name", &self.display_name, 120);
        if let Some(email) = &self.email
            && !is_email(email)
        {
            errors.push(FieldError::new("email", "not an email address"));
        }
        errors
    }
}

/// Notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Text message to `patient.phone`.
    Sms,
    /// Email to `patient.email`.
    Email,
}

impl Channel {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sms => "sms",
            Self::Email => "email",
        }
    }
}

/// The first word of a display name: all a notification reveals of the clinician.
pub fn first_name(display_name: &str) -> &str {
    let mut words = display_name.split_whitespace();
    let first = words.next().unwrap_or("");
    // "Dr. Grey" → "Dr. Grey": a title alone says nothing.
    if first.ends_with('.')
        && let Some(second) = words.next()
    {
        let end = display_name
            .find(second)
            .map_or(first.len(), |i| i + second.len());
        return display_name[..end].trim();
    }
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e164() {
        assert!(is_e164("+15551234567"));
        assert!(!is_e164("15551234567"));
        assert!(!is_e164("+0555"));
        assert!(!is_e164("+1555123456789012"));
        assert!(!is_e164("+1 555 123"));
    }

    #[test]
    fn emails() {
        assert!(is_email("a@b.co"));
        assert!(!is_email("a@b"));
        assert!(!is_email("a b@c.de"));
        assert!(!is_email("@c.de"));
    }

    #[test]
    fn first_names() {
        assert_eq!(first_name("Meredith Grey"), "Meredith");
        assert_eq!(first_name("Dr. Grey Smith"), "Dr. Grey");
        assert_eq!(first_name(""), "");
    }
}
