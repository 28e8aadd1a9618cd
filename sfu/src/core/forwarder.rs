//! The per-packet forwarding decision for one leg (one track to one subscriber).
//!
//! For every RTP packet a publisher sends, the core asks the [`Forwarder`] of each leg of the
//! track whether the packet goes to that subscriber, and if so with which payload type,
//! sequence number, RTP timestamp and marker; or else why not ([`DropReason`]). The forwarder
//! keeps the per-leg rewriting state that makes the answer consistent from packet to packet:
//! the sequence-number base and the memoized payload-type map.
//!
//! The decision is pure: it sees only plain values the core read from the packet and from its
//! own state ([`Incoming`], [`LegState`]), plus a closure for the one answer that needs the
//! subscriber's session (its payload type for a codec, asked once per payload type). No str0m
//! `Rtc`, clock or socket is involved, so every rule is unit-tested directly here instead of
//! through whole simulated sessions, and it runs for every packet and leg without allocating.

use str0m::media::Pt;
use str0m::rtp::SeqNo;

/// Why a packet is not forwarded on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The publisher muted the track.
    Muted,
    /// The publisher is in the waiting room.
    Waiting,
    /// The subscriber has not yet answered the offer that created the leg's m-line, so str0m
    /// has no send stream for it.
    NotReady,
    /// The subscriber's session is not connected.
    Disconnected,
    /// The subscriber accepted no codec matching the packet's payload type.
    UnmatchedPayloadType,
    /// The sequence number lies before the leg's base (a late packet from a rollover before the
    /// first one the leg forwarded), so it has no rebased number.
    BeforeBase,
}

/// What the core knows about one publisher packet, read once and shared by every leg of the
/// track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// The publisher's payload type.
    pub(crate) pt: Pt,
    /// The publisher's extended (rollover-counting) sequence number.
    pub(crate) seq_no: SeqNo,
    /// The RTP timestamp.
    pub(crate) timestamp: u32,
    /// The RTP marker bit (last packet of a video frame).
    pub(crate) marker: bool,
    /// Whether the publisher has muted the track.
    pub(crate) muted: bool,
    /// Whether the publisher is in the waiting room.
    pub(crate) waiting: bool,
}

impl Incoming {
    /// The rules that drop the packet on every leg alike. [`Forwarder::forward`] applies them
    /// first; the core also asks once per packet, so that a muted track costs no work per leg.
    pub(crate) fn check(&self) -> Result<(), DropReason> {
        if self.muted {
            Err(DropReason::Muted)
        } else if self.waiting {
            Err(DropReason::Waiting)
        } else {
            Ok(())
        }
    }
}

/// What the core knows about one leg when a packet reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LegState {
    /// Whether the subscriber answered the offer that created the leg's m-line.
    pub(crate) ready: bool,
    /// Whether the subscriber's session is connected.
    pub(crate) connected: bool,
}

/// A packet as the subscriber gets it: what the core writes to the leg's send stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forward {
    /// The subscriber's payload type for the packet's codec.
    pub(crate) pt: Pt,
    /// The rebased extended sequence number.
    pub(crate) seq_no: SeqNo,
    /// The RTP timestamp, as the publisher sent it.
    pub(crate) timestamp: u32,
    /// The RTP marker bit, as the publisher sent it.
    pub(crate) marker: bool,
}

/// The rewriting state of one leg, carried from packet to packet.
#[derive(Debug, Default)]
pub(crate) struct Forwarder {
    /// Whole rollovers subtracted from every sequence number, fixed by the first packet that
    /// got as far as rebasing.
    seq_base: Option<u64>,
    /// The subscriber's payload type (or none) for each publisher payload type seen so far.
    pts: Vec<(Pt, Option<Pt>)>,
}

impl Forwarder {
    /// Decides what `packet` becomes on this leg.
    ///
    /// Rules, in order: drop it if the track is muted or the publisher waits
    /// ([`Incoming::check`]), if the leg is not ready, or if the subscriber is not connected;
    /// otherwise map its payload type and rebase its sequence number, and drop it if either has
    /// no answer. Timestamp and marker pass through. Packets dropped by the first rules leave
    /// the state untouched.
    ///
    /// `resolve` returns the subscriber's payload type matching the publisher's codec for
    /// `packet.pt`; it is called at most once per publisher payload type, because the codec
    /// match is too slow for every packet.
    pub(crate) fn forward(
        &mut self,
        packet: &Incoming,
        leg: LegState,
        resolve: impl FnOnce() -> Option<Pt>,
    ) -> Result<Forward, DropReason> {
        packet.check()?;
        if !leg.ready {
            return Err(DropReason::NotReady);
        }
        if !leg.connected {
            return Err(DropReason::Disconnected);
        }
        // Both are updated before either can drop the packet: the base is fixed by the first
        // packet that gets here, whatever its payload type.
        let pt = self.map_pt(packet.pt, resolve);
        let seq_no = self.rebase(packet.seq_no);
        Ok(Forward {
            pt: pt.ok_or(DropReason::UnmatchedPayloadType)?,
            seq_no: seq_no.ok_or(DropReason::BeforeBase)?,
            timestamp: packet.timestamp,
            marker: packet.marker,
        })
    }

    /// The publisher's extended sequence number rebased for this subscriber.
    ///
    /// A subscriber that joins a long-running track would otherwise see a first packet with a
    /// rollover count above zero, which SRTP cannot decrypt without out-of-band signaling. Only
    /// whole rollovers are subtracted, so the low 16 bits (and thus NACKs) are unchanged.
    fn rebase(&mut self, seq: SeqNo) -> Option<SeqNo> {
        let base = *self.seq_base.get_or_insert(seq.roc() << 16);
        (*seq).checked_sub(base).map(SeqNo::from)
    }

    /// The subscriber's payload type for the publisher's `pt`, memoized (unmatched ones too).
    fn map_pt(&mut self, pt: Pt, resolve: impl FnOnce() -> Option<Pt>) -> Option<Pt> {
        if let Some((_, out)) = self.pts.iter().find(|(incoming, _)| *incoming == pt) {
            return *out;
        }
        let out = resolve();
        self.pts.push((pt, out));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLLOVER: u64 = 1 << 16;

    /// A packet nothing drops: payload type 96, unmuted, publisher admitted.
    fn packet(seq_no: u64) -> Incoming {
        Incoming {
            pt: Pt::from(96),
            seq_no: SeqNo::from(seq_no),
            timestamp: 90_000,
            marker: false,
            muted: false,
            waiting: false,
        }
    }

    const OPEN: LegState = LegState {
        ready: true,
        connected: true,
    };

    /// Resolves every payload type to 100.
    fn matched() -> Option<Pt> {
        Some(Pt::from(100))
    }

    /// The rebased sequence number of a packet that is forwarded.
    fn rebased(forwarder: &mut Forwarder, seq_no: u64) -> u64 {
        *forwarder
            .forward(&packet(seq_no), OPEN, matched)
            .unwrap()
            .seq_no
    }

    #[test]
    fn first_packet_after_rollovers_is_rebased_to_roc_zero() {
        let mut forwarder = Forwarder::default();
        let first = forwarder
            .forward(&packet(3 * ROLLOVER + 100), OPEN, matched)
            .unwrap();
        assert_eq!(first.seq_no.roc(), 0);
        assert_eq!(*first.seq_no, 100);
        // Later packets keep their distance from the first and their low 16 bits.
        assert_eq!(rebased(&mut forwarder, 3 * ROLLOVER + 101), 101);
        assert_eq!(rebased(&mut forwarder, 4 * ROLLOVER + 5), ROLLOVER + 5);
    }

    #[test]
    fn low_sixteen_bits_are_preserved_so_nacks_match() {
        let mut forwarder = Forwarder::default();
        for seq_no in [
            7 * ROLLOVER + 65_530,
            8 * ROLLOVER + 3,
            8 * ROLLOVER + 40_000,
        ] {
            let out = rebased(&mut forwarder, seq_no);
            assert_eq!(out as u16, seq_no as u16);
        }
    }

    #[test]
    fn sequence_numbers_before_the_base_are_dropped() {
        let mut forwarder = Forwarder::default();
        assert_eq!(rebased(&mut forwarder, 3 * ROLLOVER + 100), 100);
        // The base is whole rollovers: the same rollover before the first packet is fine.
        assert_eq!(rebased(&mut forwarder, 3 * ROLLOVER + 2), 2);
        for late in [3 * ROLLOVER - 1, 65_535, 0] {
            assert_eq!(
                forwarder.forward(&packet(late), OPEN, matched),
                Err(DropReason::BeforeBase)
            );
        }
        assert_eq!(rebased(&mut forwarder, 3 * ROLLOVER + 101), 101);
    }

    #[test]
    fn payload_types_are_resolved_once_each() {
        let mut forwarder = Forwarder::default();
        let mut calls = 0;
        for (seq_no, pt, out) in [(1, 96, 100), (2, 96, 100), (3, 111, 109), (4, 96, 100)] {
            let incoming = Incoming {
                pt: Pt::from(pt),
                ..packet(seq_no)
            };
            let forwarded = forwarder.forward(&incoming, OPEN, || {
                calls += 1;
                Some(Pt::from(out))
            });
            assert_eq!(forwarded.unwrap().pt, Pt::from(out));
        }
        assert_eq!(calls, 2);
    }

    #[test]
    fn unmatched_payload_type_is_dropped_and_memoized() {
        let mut forwarder = Forwarder::default();
        let mut calls = 0;
        for seq_no in [2 * ROLLOVER + 1, 2 * ROLLOVER + 2] {
            let dropped = forwarder.forward(&packet(seq_no), OPEN, || {
                calls += 1;
                None
            });
            assert_eq!(dropped, Err(DropReason::UnmatchedPayloadType));
        }
        assert_eq!(calls, 1);
        // Another payload type is resolved on its own.
        let other = Incoming {
            pt: Pt::from(111),
            ..packet(2 * ROLLOVER + 3)
        };
        let forwarded = forwarder.forward(&other, OPEN, matched).unwrap();
        // The dropped packets fixed the base, as the first packet to reach the rewrite does.
        assert_eq!(*forwarded.seq_no, 3);
    }

    #[test]
    fn leg_not_ready_or_disconnected_drops_without_touching_state() {
        let mut forwarder = Forwarder::default();
        let not_ready = LegState {
            ready: false,
            connected: true,
        };
        let disconnected = LegState {
            ready: true,
            connected: false,
        };
        let unused = || -> Option<Pt> { panic!("resolved a payload type for a dropped packet") };
        assert_eq!(
            forwarder.forward(&packet(5 * ROLLOVER), not_ready, unused),
            Err(DropReason::NotReady)
        );
        assert_eq!(
            forwarder.forward(&packet(5 * ROLLOVER + 1), disconnected, unused),
            Err(DropReason::Disconnected)
        );
        // Neither packet fixed the base or memoized a payload type.
        assert_eq!(rebased(&mut forwarder, ROLLOVER + 9), 9);
    }

    #[test]
    fn muted_track_or_waiting_publisher_drops_on_every_leg() {
        let muted = Incoming {
            muted: true,
            ..packet(5 * ROLLOVER)
        };
        let waiting = Incoming {
            waiting: true,
            ..packet(5 * ROLLOVER)
        };
        assert_eq!(muted.check(), Err(DropReason::Muted));
        assert_eq!(waiting.check(), Err(DropReason::Waiting));
        assert_eq!(packet(0).check(), Ok(()));
        let mut forwarder = Forwarder::default();
        let unused = || -> Option<Pt> { panic!("resolved a payload type for a dropped packet") };
        assert_eq!(
            forwarder.forward(&muted, OPEN, unused),
            Err(DropReason::Muted)
        );
        assert_eq!(
            forwarder.forward(&waiting, OPEN, unused),
            Err(DropReason::Waiting)
        );
        // Track-wide drops come before the leg's own state.
        let idle = LegState {
            ready: false,
            connected: false,
        };
        assert_eq!(
            forwarder.forward(&muted, idle, unused),
            Err(DropReason::Muted)
        );
        assert_eq!(rebased(&mut forwarder, ROLLOVER + 9), 9);
    }

    #[test]
    fn timestamp_and_marker_pass_through() {
        let mut forwarder = Forwarder::default();
        for (seq_no, timestamp, marker) in
            [(10, 3_000, false), (11, 3_000, true), (12, 6_000, false)]
        {
            let incoming = Incoming {
                timestamp,
                marker,
                ..packet(seq_no)
            };
            assert_eq!(
                forwarder.forward(&incoming, OPEN, matched),
                Ok(Forward {
                    pt: Pt::from(100),
                    seq_no: SeqNo::from(seq_no),
                    timestamp,
                    marker,
                })
            );
        }
    }
}
