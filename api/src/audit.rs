//! The audit model (DESIGN.md §5): one row per security-relevant act, written in the same
//! transaction as the act, chained per tenant by `hash = SHA-256(prev_hash ‖ canonical row)`.
//! This module is pure (canonical form, hashing, masking, verification); the store
//! appends and reads rows.

use std::net::IpAddr;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `prev_hash` of a tenant's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Result of the audited act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The act happened.
    Success,
    /// The act was refused (reason says why).
    Refused,
    /// The act was attempted and failed.
    Failure,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Refused => "refused",
            Self::Failure => "failure",
        }
    }
}

/// Who did it and from where, as much as may be recorded (masked IP, hashed UA).
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// `apikey:<id>`, `participant:<id>`, `link:<id>`, `cli`, `system`.
    pub actor: String,
    /// Client IP with the host part zeroed.
    pub ip_masked: Option<String>,
    /// Hex SHA-256 of the User-Agent, first 16 characters.
    pub ua_hash: Option<String>,
}

impl Actor {
    /// An actor without network context (CLI, background jobs).
    pub fn local(actor: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            ip_masked: None,
            ua_hash: None,
        }
    }

    /// The same network context, another actor name.
    pub fn renamed(&self, actor: String) -> Self {
        Self {
            actor,
            ..self.clone()
        }
    }
}

/// A row about to be appended.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Tenant whose chain receives the row.
    pub tenant_id: String,
    /// Who and from where.
    pub actor: Actor,
    /// Dotted event name (`visit.created`, `link.refused`…).
    pub event: &'static str,
    /// The visit concerned, if any.
    pub visit_id: Option<String>,
    /// Result.
    pub outcome: Outcome,
    /// Why it was refused or failed (a problem code or short text, never PHI).
    pub reason: Option<String>,
    /// Extra non-PHI facts.
    pub details: serde_json::Value,
}

impl NewEntry {
    /// A successful act with no details.
    pub fn success(
        tenant_id: &str,
        actor: &Actor,
        event: &'static str,
        visit_id: Option<&str>,
    ) -> Self {
        Self {
            tenant_id: tenant_id.to_owned(),
            actor: actor.clone(),
            event,
            visit_id: visit_id.map(str::to_owned),
            outcome: Outcome::Success,
            reason: None,
            details: serde_json::Value::Object(Default::default()),
        }
    }

    /// A refused act with its reason.
    pub fn refused(
        tenant_id: &str,
        actor: &Actor,
        event: &'static str,
        visit_id: Option<&str>,
        reason: &str,
    ) -> Self {
        Self {
            outcome: Outcome::Refused,
            reason: Some(reason.to_owned()),
            ..Self::success(tenant_id, actor, event, visit_id)
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

crate::store::record! {
    /// A stored row, as the API returns it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
    pub struct Entry {
        /// Position in the log (global, increasing).
        pub seq: i64,
        /// Row id.
        pub id: String,
        /// Tenant.
        pub tenant_id: String,
        /// When, Unix milliseconds.
        pub at: i64,
        /// Who.
        pub actor: String,
        /// What.
        pub event: String,
        /// Visit concerned.
        pub visit_id: Option<String>,
        /// `success`, `refused` or `failure`.
        pub outcome: String,
        /// Why refused or failed.
        pub reason: Option<String>,
        /// Masked client IP.
        pub ip_masked: Option<String>,
        /// Truncated User-Agent hash.
        pub ua_hash: Option<String>,
        /// Non-PHI details: stored (and hashed) as compact JSON text with sorted keys, shown
        /// by the API as the object that text is (docs/api.md lists every key).
        #[serde(with = "details_object")]
        #[schema(value_type = Object)]
        pub details: String,
        /// Hash of the tenant's previous row.
        pub prev_hash: String,
        /// This row's hash.
        pub hash: String,
    }
}

/// An audit row's `details` text as the JSON object it holds, both ways: the API shows an
/// object, not JSON text inside JSON. Re-encoding the parsed object gives back the stored
/// text (compact, keys sorted), which is what the row's hash covers.
mod details_object {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(details: &str, serializer: S) -> Result<S::Ok, S::Error> {
        let object: serde_json::Value =
            serde_json::from_str(details).map_err(serde::ser::Error::custom)?;
        object.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        let object = serde_json::Value::deserialize(deserializer)?;
        Ok(object.to_string())
    }
}

#[derive(Serialize)]
struct Canonical<'a> {
    id: &'a str,
    tenant_id: &'a str,
    at: i64,
    actor: &'a str,
    event: &'a str,
    visit_id: Option<&'a str>,
    outcome: &'a str,
    reason: Option<&'a str>,
    ip_masked: Option<&'a str>,
    ua_hash: Option<&'a str>,
    details: &'a str,
}

impl Entry {
    /// The hash this row must carry given its content and `prev_hash`.
    pub fn expected_hash(&self) -> String {
        let canonical = Canonical {
            id: &self.id,
            tenant_id: &self.tenant_id,
            at: self.at,
            actor: &self.actor,
            event: &self.event,
            visit_id: self.visit_id.as_deref(),
            outcome: &self.outcome,
            reason: self.reason.as_deref(),
            ip_masked: self.ip_masked.as_deref(),
            ua_hash: self.ua_hash.as_deref(),
            details: &self.details,
        };
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(self.prev_hash.as_bytes());
        ctx.update(&serde_json::to_vec(&canonical).unwrap_or_default());
        hex::encode(ctx.finish().as_ref())
    }
}

/// The first row at which a tenant's chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant {tenant_id}: audit row seq {seq} (id {id}) {why}")]
pub struct ChainBreak {
    /// Tenant of the chain.
    pub tenant_id: String,
    /// Position of the bad row.
    pub seq: i64,
    /// Id of the bad row.
    pub id: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Walks one tenant's chain incrementally, row by row in `seq` order.
#[derive(Debug)]
pub struct ChainVerifier {
    prev: String,
    checked: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            prev: GENESIS.to_owned(),
            checked: 0,
        }
    }
}

impl ChainVerifier {
    /// Checks the next row.
    pub fn check(&mut self, row: &Entry) -> Result<(), ChainBreak> {
        let broken = |why| ChainBreak {
            tenant_id: row.tenant_id.clone(),
            seq: row.seq,
            id: row.id.clone(),
            why,
        };
        if row.prev_hash != self.prev {
            return Err(broken(
                "does not follow the previous row (a row was removed or reordered)",
            ));
        }
        if row.expected_hash() != row.hash {
            return Err(broken(
                "content does not match its hash (the row was altered)",
            ));
        }
        self.prev.clone_from(&row.hash);
        self.checked += 1;
        Ok(())
    }

    /// Rows checked so far.
    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// Hash of the last row checked (what the next row must name as `prev_hash`).
    pub fn head(&self) -> &str {
        &self.prev
    }
}

/// `jane@example.com` → `j***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// `+15551234567` → `***-***-4567`.
pub fn mask_phone(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(4)..].iter().collect();
    format!("***-***-{tail}")
}

/// The network a client is in: IPv4 /24, IPv6 /48. Used for audit and device binding.
pub fn ip_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => ip_prefix(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

/// Truncated hex SHA-256 of a User-Agent.
pub fn ua_hash(user_agent: &str) -> String {
    hex::encode(&digest::digest(&digest::SHA256, user_agent.as_bytes()).as_ref()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, prev: &str) -> Entry {
        let mut row = Entry {
            seq,
            id: format!("a{seq}"),
            tenant_id: "t".into(),
            at: 1000 + seq,
            actor: "cli".into(),
            event: "visit.created".into(),
            visit_id: Some("v".into()),
            outcome: "success".into(),
            reason: None,
            ip_masked: None,
            ua_hash: None,
            details: "{}".into(),
            prev_hash: prev.into(),
            hash: String::new(),
        };
        row.hash = row.expected_hash();
        row
    }

    #[test]
    fn the_api_shows_details_as_an_object_and_the_hash_still_holds() {
        let stored = NewEntry::success("t", &Actor::local("cli"), "visit.ended", Some("v"))
            .with_details(serde_json::json!({"via": "signaling", "links_revoked": 2}))
            .details
            .to_string();
        let mut entry = row(1, GENESIS);
        entry.details = stored.clone();
        entry.hash = entry.expected_hash();
        let shown = serde_json::to_value(&entry).unwrap_or_default();
        assert_eq!(
            shown["details"],
            serde_json::json!({"links_revoked": 2, "via": "signaling"})
        );
        let read: Entry = serde_json::from_value(shown).unwrap_or_else(|_| row(9, GENESIS));
        assert_eq!(
            read.details, stored,
            "the object's compact form is the stored text"
        );
        assert_eq!(read.expected_hash(), entry.hash);
    }

    #[test]
    fn chain_detects_edit_removal_and_reorder() {
        let a = row(1, GENESIS);
        let b = row(2, &a.hash);
        let c = row(3, &b.hash);
        let mut ok = ChainVerifier::default();
        for r in [&a, &b, &c] {
            ok.check(r).unwrap();
        }
        assert_eq!(ok.checked(), 3);

        let mut edited = b.clone();
        edited.outcome = "refused".into();
        let mut v = ChainVerifier::default();
        v.check(&a).unwrap();
        assert_eq!(v.check(&edited).unwrap_err().seq, 2);

        let mut v = ChainVerifier::default();
        v.check(&a).unwrap();
        assert_eq!(v.check(&c).unwrap_err().seq, 3, "removed row is detected");
    }

    #[test]
    fn masks() {
        assert_eq!(mask_email("jane@example.com"), "j***@example.com");
        assert_eq!(mask_phone("+15551234567"), "***-***-4567");
        assert_eq!(ip_prefix("203.0.113.7".parse().unwrap()), "203.0.113.0/24");
        assert_eq!(
            ip_prefix("2001:db8:1:2::5".parse().unwrap()),
            "2001:db8:1::/48"
        );
    }
}
