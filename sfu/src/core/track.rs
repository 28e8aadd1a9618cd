use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use super::forwarder::Forwarder;
use super::ids::ParticipantId;

/// A published track and everyone it is forwarded to.
#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) kind: MediaKind,
    pub(crate) muted: bool,
    pub(crate) legs: HashMap<ParticipantId, Leg>,
    pub(crate) keyframes: KeyframeGate,
}

impl Track {
    pub(crate) fn new(kind: MediaKind) -> Self {
        Track {
            kind,
            muted: false,
            legs: HashMap::new(),
            keyframes: KeyframeGate::default(),
        }
    }
}

/// The path of one track to one subscriber: a send-only m-line in the subscriber's session.
#[derive(Debug)]
pub(crate) struct Leg {
    /// The m-line in the subscriber's session that carries the track.
    pub(crate) mid: Mid,
    /// Set once the subscriber answered the offer that created the m-line; before that str0m
    /// has no send stream for it.
    pub(crate) ready: bool,
    /// Decides, per packet, what the subscriber gets on this leg.
    pub(crate) forwarder: Forwarder,
}

impl Leg {
    /// A leg on the subscriber's new m-line `mid`, not ready until the subscriber answers.
    pub(crate) fn new(mid: Mid) -> Self {
        Leg {
            mid,
            ready: false,
            forwarder: Forwarder::default(),
        }
    }
}

/// Throttles keyframe requests to a publisher: at most one per interval, and requests inside
/// the interval collapse into one sent when it ends, so no subscriber is left without a
/// keyframe and the publisher is not flooded.
#[derive(Debug, Default)]
pub(crate) struct KeyframeGate {
    last_sent: Option<Instant>,
    deferred: Option<KeyframeRequestKind>,
}

/// What to do with a keyframe request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Send it now.
    Send,
    /// Deferred; arm a timer for this moment.
    DeferUntil(Instant),
    /// Merged into a request already deferred.
    Coalesced,
}

impl KeyframeGate {
    pub(crate) fn request(
        &mut self,
        now: Instant,
        kind: KeyframeRequestKind,
        interval: Duration,
    ) -> Gate {
        match self.last_sent {
            Some(last) if now < last + interval => {
                let first = self.deferred.is_none();
                self.deferred = Some(match self.deferred {
                    Some(KeyframeRequestKind::Fir) => KeyframeRequestKind::Fir,
                    _ => kind,
                });
                if first {
                    Gate::DeferUntil(last + interval)
                } else {
                    Gate::Coalesced
                }
            }
            _ => {
                self.last_sent = Some(now);
                Gate::Send
            }
        }
    }

    /// The deferred request, if any, now that its timer fired.
    pub(crate) fn take_deferred(&mut self, now: Instant) -> Option<KeyframeRequestKind> {
        let kind = self.deferred.take()?;
        self.last_sent = Some(now);
        Some(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_millis(500);

    #[test]
    fn at_most_one_request_per_interval() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        let pli = KeyframeRequestKind::Pli;
        assert_eq!(gate.request(t0, pli, INTERVAL), Gate::Send);
        let at = t0 + INTERVAL;
        assert_eq!(
            gate.request(t0 + Duration::from_millis(10), pli, INTERVAL),
            Gate::DeferUntil(at)
        );
        assert_eq!(
            gate.request(
                t0 + Duration::from_millis(20),
                KeyframeRequestKind::Fir,
                INTERVAL
            ),
            Gate::Coalesced
        );
        assert_eq!(
            gate.request(t0 + Duration::from_millis(30), pli, INTERVAL),
            Gate::Coalesced
        );
        assert_eq!(gate.take_deferred(at), Some(KeyframeRequestKind::Fir));
        assert_eq!(gate.take_deferred(at), None);
        assert_eq!(
            gate.request(at + Duration::from_millis(499), pli, INTERVAL),
            Gate::DeferUntil(at + INTERVAL)
        );
        assert_eq!(gate.take_deferred(at + INTERVAL), Some(pli));
        assert_eq!(gate.request(at + 2 * INTERVAL, pli, INTERVAL), Gate::Send);
    }
}
