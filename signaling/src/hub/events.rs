//! What reaches the rooms from outside a socket: the SFU workers' events (one pump per
//! worker), the api's visit events (an ended visit's room is emptied), and the workers'
//! statistics folded into the metrics.

use std::sync::Arc;
use std::time::Instant;

use api::events::VisitEvent;
use sfu::core::{Event, ParticipantId, RoomId};
use sfu::driver::WorkerStats;
use tokio::sync::{broadcast, mpsc};

use super::{Hub, METRICS_PERIOD};
use crate::backend::MediaEvent;
use crate::backend::sfu::{Translated, translate};
use crate::wire::uuid_id;

impl Hub {
    pub(super) async fn pump(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Event>) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = self.stop.cancelled() => return,
            };
            let Some(event) = event else {
                return;
            };
            self.on_event(event).await;
        }
    }

    /// Hands one SFU event to the room it concerns.
    async fn on_event(&self, event: Event) {
        let (hint, event) = match translate(event) {
            Translated::Room { room, event } => (room, event),
            Translated::Rtt(rtt) => {
                self.metrics.rtt.observe(rtt.as_secs_f64());
                return;
            }
            Translated::Bandwidth(bps) => {
                self.metrics.bandwidth.observe(bps as f64);
                return;
            }
            Translated::Nothing => return,
        };
        if let MediaEvent::ConnectionQuality { quality, .. } = &event {
            self.metrics
                .connection_quality
                .with_label_values(&[quality.as_str()])
                .inc();
        }
        let subject = event.subject();
        let (room_id, pending) = {
            let mut state = self.state();
            let Some(room_id) = subject
                .and_then(|subject| state.index.get(&subject).copied())
                .or(hint)
            else {
                return;
            };
            let Some(entry) = state.rooms.get_mut(&room_id) else {
                return;
            };
            entry.room.on_media(Instant::now(), event);
            let touched: Vec<ParticipantId> = subject.into_iter().collect();
            (room_id, self.flush(&mut state, room_id, &touched))
        };
        let _ = self.execute(room_id, pending).await;
    }

    pub(super) async fn watch_visits(self: Arc<Self>, mut events: broadcast::Receiver<VisitEvent>) {
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = self.stop.cancelled() => return,
            };
            match event {
                Ok(VisitEvent::Closed {
                    tenant_id,
                    visit_id,
                }) => self.end_visit(&tenant_id, &visit_id).await,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "signaling missed visit events");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    /// Tells everyone in the visit's room that it ended and takes them out of its media;
    /// their sockets close with 4410 as each leaves.
    async fn end_visit(&self, tenant: &str, visit: &str) {
        let Some(room_id) = uuid_id(visit).map(RoomId) else {
            return;
        };
        let pending = {
            let mut state = self.state();
            let Some(entry) = state.rooms.get_mut(&room_id) else {
                return;
            };
            if entry.room.tenant() != tenant {
                return;
            }
            entry.room.end();
            self.flush(&mut state, room_id, &[])
        };
        let _ = self.execute(room_id, pending).await;
    }

    pub(super) async fn fold_stats(self: Arc<Self>) {
        let count = self.workers.read().map_or(0, |w| w.len());
        let mut last = vec![WorkerStats::default(); count];
        let mut tick = tokio::time::interval(METRICS_PERIOD);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.stop.cancelled() => return,
            }
            let workers = self.workers.read().map(|w| w.clone()).unwrap_or_default();
            for (index, (worker, last)) in workers.iter().zip(&mut last).enumerate() {
                let now = worker.stats();
                self.metrics.observe_worker(index, last, &now);
                *last = now;
            }
        }
    }
}
