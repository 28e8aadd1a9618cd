use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::SeqNo;

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
    pub(crate) mid: Mid,
    /// Set once the subscriber answered the offer that created the m-line; before that str0m
    /// has no send stream for it.
    pub(crate) ready: bool,
    seq_base: Option<u64>,
    pts: Vec<(Pt, Option<Pt>)>,
}

impl Leg {
    pub(crate) fn new(mid: Mid) -> Self {
        Leg {
            mid,
            ready: false,
            seq_base: None,
            pts: Vec::new(),
        }
    }

    /// The publisher's extended sequence number rebased for this subscriber.
    ///
    /// A subscriber that joins a long-running track would otherwise see a first packet with a
    /// rollover count above zero, which SRTP cannot decrypt without out-of-band signaling. Only
    /// whole rollovers are subtracted, so the low 16 bits (and thus NACKs) are unchanged.
    pub(crate) fn rebase(&mut self, seq: SeqNo) -> Option<SeqNo> {
        let base = *self.seq_base.get_or_insert(seq.roc() << 16);
        (*seq).checked_sub(base).map(SeqNo::from)
    }

    /// The subscriber's payload type for the publisher's `pt`, memoized per leg because the
    /// codec match is too slow for every packet.
    pub(crate) fn map_pt(&mut self, pt: Pt, resolve: impl FnOnce() -> Option<Pt>) -> Option<Pt> {
        if let Some((_, out)) = self.pts.iter().find(|(incoming, _)| *incoming == pt) {
            return *out;
        }
        let out = resolve();
        self.pts.push((pt, out));
        out
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

    #[test]
    fn rebasing_removes_whole_rollovers_only() {
        let mut leg = Leg::new(Mid::from("a"));
        let first = SeqNo::from(3 * 65_536 + 100);
        assert_eq!(*leg.rebase(first).unwrap(), 100);
        assert_eq!(
            *leg.rebase(SeqNo::from(4 * 65_536 + 5)).unwrap(),
            65_536 + 5
        );
        assert_eq!(leg.rebase(SeqNo::from(65_535)), None);
    }

    #[test]
    fn payload_types_are_resolved_once() {
        let mut leg = Leg::new(Mid::from("a"));
        let mut calls = 0;
        for _ in 0..3 {
            let out = leg.map_pt(Pt::from(96), || {
                calls += 1;
                Some(Pt::from(100))
            });
            assert_eq!(out, Some(Pt::from(100)));
        }
        assert_eq!(calls, 1);
    }
}
