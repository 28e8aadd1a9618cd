//! The visit domain: every rule of a visit's life, written once, called by the REST handlers
//! (`crate::http`) and by signaling alike. Nothing here knows HTTP or WebSocket frames: errors
//! are [`VisitError`]s, which each entry point renders in its own vocabulary.
//!
//! # Layout
//! - [`rules`]: pure rules — is the visit live, its join window, when its links expire, may
//!   a link be used now (fresh, a rejoin by its device, or why not).
//! - [`lifecycle`]: status changes — started, in progress, closed (ended or cancelled): the
//!   transition, link revocation, audit row, metric and cross-node event, in one place.
//! - [`join`]: taking a seat — with a link's code, as the clinician, by refreshing a grant —
//!   each answering a signed grant, each refusal audited.
//! - [`participants`]: who may take a seat, and removal for good (stored and audited, so it
//!   holds across an empty room, a restart and another node).
//! - [`media`]: the media backend of a visit — placement on a node, joining, the Chime
//!   attendee, taking a participant out, closing the session with its audit row.

mod error;
pub mod join;
pub mod lifecycle;
pub mod media;
pub mod participants;
pub mod rules;

pub use error::VisitError;

/// Which entry point asked for an act; signaling's acts say so in their audit details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The REST API.
    Api,
    /// A WebSocket request of a seated participant.
    Signaling,
}

impl Via {
    /// Adds `"via": "signaling"` to audit `details` for acts made over signaling.
    fn mark(self, mut details: serde_json::Value) -> serde_json::Value {
        if self == Via::Signaling
            && let Some(map) = details.as_object_mut()
        {
            map.insert("via".into(), "signaling".into());
        }
        details
    }
}
