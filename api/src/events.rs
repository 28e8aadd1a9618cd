//! The visit event bus: what other parts of this node — and, through [`crate::cluster`], of
//! other nodes — must react to when a visit changes. Signaling subscribes to disconnect an
//! ended visit's room; the cluster relays events between nodes. Neither the bus nor its
//! events know about [`crate::App`], so the cluster and the visit domain depend on this
//! module and not on each other.

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events a subscriber that falls this far behind misses (it is told how many).
const CAPACITY: usize = 256;

/// Something other parts of the node or other nodes must react to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VisitEvent {
    /// The visit ended or was cancelled: disconnect everyone in its room.
    Closed {
        /// Tenant of the visit.
        tenant_id: String,
        /// The visit.
        visit_id: String,
    },
}

/// This node's visit events: one sender, any number of subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<VisitEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Hands `event` to every current subscriber of this node; nobody listening (a process
    /// without signaling) is not an error.
    pub fn send(&self, event: VisitEvent) {
        let _ = self.tx.send(event);
    }

    /// A receiver of every event sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<VisitEvent> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_events_sent_after_they_subscribed() {
        let bus = EventBus::default();
        bus.send(VisitEvent::Closed {
            tenant_id: "t".into(),
            visit_id: "before".into(),
        });
        let mut rx = bus.subscribe();
        let event = VisitEvent::Closed {
            tenant_id: "t".into(),
            visit_id: "after".into(),
        };
        bus.send(event.clone());
        assert_eq!(rx.try_recv().ok(), Some(event));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn events_keep_their_wire_form() {
        let event = VisitEvent::Closed {
            tenant_id: "t".into(),
            visit_id: "v".into(),
        };
        let json = serde_json::to_value(&event).unwrap_or_default();
        assert_eq!(
            json,
            serde_json::json!({"kind": "closed", "tenant_id": "t", "visit_id": "v"})
        );
    }
}
