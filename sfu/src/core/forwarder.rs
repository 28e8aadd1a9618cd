//! The per-packet forwarding decision for one leg (one track to one subscriber).
//!
//! For every RTP packet a publisher sends, the core asks the [`Forwarder`] of each leg of the
//! track whether the packet goes to that subscriber, and if so with which payload type,
//! sequence number, RTP timestamp, marker and VP8 picture ids; or else why not
//! ([`DropReason`]). The forwarder keeps the per-leg rewriting state that makes the answer
//! consistent from packet to packet.
//!
//! A simulcast track arrives as several layers (encodings of one camera, each its own RTP
//! stream with its own sequence numbers, timestamps and picture ids); a subscriber gets one of
//! them at a time on one m-line. The core picks the leg's *target* layer; the forwarder keeps
//! sending the *current* one until a keyframe of the target arrives, then switches and
//! rewrites the target's numbering to continue the subscriber's: the next sequence number, a
//! timestamp advanced by the time that passed, the next picture id. So the subscriber sees one
//! stream without gaps (which it would take for loss) or jumps back (which it would drop).
//!
//! The decision is pure: it sees only plain values the core read from the packet and from its
//! own state ([`Incoming`], [`LegState`]), plus a closure for the one answer that needs the
//! subscriber's session (its payload type for a codec, asked once per payload type). No str0m
//! `Rtc`, clock or socket is involved, so every rule is unit-tested directly here instead of
//! through whole simulated sessions, and it runs for every packet and leg without allocating.

use std::time::{Duration, Instant};

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
    /// The sequence number lies before the point where the leg started forwarding its layer
    /// (a late packet), so it has no place in the subscriber's numbering.
    BeforeBase,
    /// The packet belongs to a simulcast layer the leg neither forwards nor switches to.
    OtherLayer,
    /// The packet belongs to the leg's target layer, which is switched to only at a keyframe.
    AwaitingKeyframe,
    /// The leg is paused: the subscriber's link holds no video layer of the track.
    Paused,
    /// The packet starts a keyframe of the target layer, but later packets of it arrived
    /// first and were dropped: switching here would leave a gap the subscriber cannot get
    /// back. The core asks for another keyframe.
    MissedKeyframe,
}

/// The VP8 payload descriptor fields that number pictures (RFC 7741 §4.2), as far as present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Vp8Ids {
    /// PictureID and whether it is the 15-bit form (else 7-bit).
    pub(crate) picture_id: Option<(u16, bool)>,
    /// TL0PICIDX.
    pub(crate) tl0_pic_idx: Option<u8>,
    /// KEYIDX (5 bits).
    pub(crate) key_idx: Option<u8>,
}

/// What the core knows about one publisher packet, read once and shared by every leg of the
/// track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Incoming {
    /// The publisher's payload type.
    pub(crate) pt: Pt,
    /// The publisher's extended (rollover-counting) sequence number in its layer's stream.
    pub(crate) seq_no: SeqNo,
    /// The RTP timestamp.
    pub(crate) timestamp: u32,
    /// The RTP marker bit (last packet of a video frame).
    pub(crate) marker: bool,
    /// Whether the publisher has muted the track.
    pub(crate) muted: bool,
    /// Whether the publisher is in the waiting room.
    pub(crate) waiting: bool,
    /// The simulcast layer (index into the track's layers, lowest first; 0 without simulcast).
    pub(crate) layer: u8,
    /// Whether the packet starts a keyframe, so a leg can switch to its layer here.
    pub(crate) keyframe: bool,
    /// When it arrived, to advance the timestamp across a switch by the time that passed.
    pub(crate) arrival: Instant,
    /// The codec's RTP clock rate (ticks per second).
    pub(crate) clock_rate: u32,
    /// Its VP8 picture numbering, for VP8 packets of a simulcast track.
    pub(crate) vp8: Option<Vp8Ids>,
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
    /// Whether the subscriber's session is connected and it holds the SRTP keys.
    pub(crate) connected: bool,
}

/// A packet as the subscriber gets it: what the core writes to the leg's send stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Forward {
    /// The subscriber's payload type for the packet's codec.
    pub(crate) pt: Pt,
    /// The sequence number in the subscriber's numbering.
    pub(crate) seq_no: SeqNo,
    /// The RTP timestamp in the subscriber's timeline.
    pub(crate) timestamp: u32,
    /// The RTP marker bit, as the publisher sent it.
    pub(crate) marker: bool,
    /// Rewritten VP8 picture numbering; `None` when the payload goes out unchanged.
    pub(crate) vp8: Option<Vp8Ids>,
    /// Whether this packet switched the leg to another layer.
    pub(crate) switched: bool,
}

/// How the current layer's numbering maps onto the subscriber's, fixed at the switch to it.
#[derive(Debug, Clone, Copy)]
struct Mapping {
    layer: u8,
    /// Packets of the layer before this sequence number are late: dropped.
    first_seq: u64,
    /// Subtracted (wrapping) from the layer's sequence numbers.
    seq_offset: u64,
    /// Added (wrapping) to the layer's timestamps.
    ts_offset: u32,
    /// Added to picture ids (modulo their width), TL0PICIDX and KEYIDX.
    picture_id_offset: u16,
    tl0_offset: u8,
    key_idx_offset: u8,
}

/// The newest packet the leg sent, which the numbering after a switch continues.
#[derive(Debug, Clone, Copy)]
struct Last {
    seq: u64,
    timestamp: u32,
    arrival: Instant,
    vp8: Vp8Ids,
}

/// The rewriting state of one leg, carried from packet to packet.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// The layer the core wants this subscriber to get; `None` pauses the leg.
    target: Option<u8>,
    /// The layer being forwarded and its mapping; `None` until the first packet.
    current: Option<Mapping>,
    last: Option<Last>,
    /// The highest sequence number of the target layer dropped while awaiting its keyframe.
    skipped: Option<u64>,
    /// The subscriber's payload type (or none) for each publisher payload type seen so far.
    pts: Vec<(Pt, Option<Pt>)>,
}

impl Mapping {
    /// The mapping of the first packet a leg forwards: numbering kept, only whole sequence
    /// number rollovers removed.
    ///
    /// A subscriber that joins a long-running track would otherwise see a first packet with a
    /// rollover count above zero, which SRTP cannot decrypt without out-of-band signaling.
    /// Only whole rollovers are subtracted, so the low 16 bits (and thus NACKs) are unchanged,
    /// and packets earlier in the same rollover still have a number.
    fn first(packet: &Incoming) -> Self {
        let base = packet.seq_no.roc() << 16;
        Mapping {
            layer: packet.layer,
            first_seq: base,
            seq_offset: base,
            ts_offset: 0,
            picture_id_offset: 0,
            tl0_offset: 0,
            key_idx_offset: 0,
        }
    }

    /// The mapping that continues `last` with `packet`, a keyframe of another layer: the next
    /// sequence number, the timestamp advanced by the time since `last` arrived (at least one
    /// tick, so it is a new frame), and the next picture ids.
    fn continuing(last: &Last, packet: &Incoming) -> Self {
        let seq = *packet.seq_no;
        let elapsed = packet.arrival.saturating_duration_since(last.arrival);
        let timestamp = last
            .timestamp
            .wrapping_add(ticks(elapsed, packet.clock_rate).max(1));
        let ids = packet.vp8.unwrap_or_default();
        let picture_id_offset = match (last.vp8.picture_id, ids.picture_id) {
            (Some((out, _)), Some((incoming, _))) => out.wrapping_add(1).wrapping_sub(incoming),
            _ => 0,
        };
        let tl0_offset = match (last.vp8.tl0_pic_idx, ids.tl0_pic_idx) {
            (Some(out), Some(incoming)) => out.wrapping_add(1).wrapping_sub(incoming),
            _ => 0,
        };
        let key_idx_offset = match (last.vp8.key_idx, ids.key_idx) {
            (Some(out), Some(incoming)) => {
                out.wrapping_add(1).wrapping_sub(incoming) & KEY_IDX_MASK
            }
            _ => 0,
        };
        Mapping {
            layer: packet.layer,
            first_seq: seq,
            seq_offset: seq.wrapping_sub(last.seq + 1),
            ts_offset: timestamp.wrapping_sub(packet.timestamp),
            picture_id_offset,
            tl0_offset,
            key_idx_offset,
        }
    }

    /// `ids` in the subscriber's numbering, or `None` when they are unchanged.
    fn rewrite(&self, ids: Vp8Ids) -> Option<Vp8Ids> {
        if self.picture_id_offset == 0 && self.tl0_offset == 0 && self.key_idx_offset == 0 {
            return None;
        }
        Some(Vp8Ids {
            picture_id: ids.picture_id.map(|(id, long)| {
                let mask = if long { 0x7fff } else { 0x7f };
                (id.wrapping_add(self.picture_id_offset) & mask, long)
            }),
            tl0_pic_idx: ids.tl0_pic_idx.map(|t| t.wrapping_add(self.tl0_offset)),
            key_idx: ids
                .key_idx
                .map(|k| k.wrapping_add(self.key_idx_offset) & KEY_IDX_MASK),
        })
    }
}

/// KEYIDX is five bits.
const KEY_IDX_MASK: u8 = 0x1f;

/// `elapsed` in RTP ticks of a `clock_rate` clock, saturating.
fn ticks(elapsed: Duration, clock_rate: u32) -> u32 {
    let ticks = elapsed.as_micros() * u128::from(clock_rate) / 1_000_000;
    u32::try_from(ticks).unwrap_or(u32::MAX)
}

impl Default for Forwarder {
    /// A leg that forwards layer 0 (the only one of a track without simulcast).
    fn default() -> Self {
        Forwarder {
            target: Some(0),
            current: None,
            last: None,
            skipped: None,
            pts: Vec::new(),
        }
    }
}

impl Forwarder {
    /// The layer the core wants this leg to forward; `None` while paused.
    pub(crate) fn target(&self) -> Option<u8> {
        self.target
    }

    /// The layer being forwarded; `None` before the first packet.
    pub(crate) fn current(&self) -> Option<u8> {
        self.current.map(|mapping| mapping.layer)
    }

    /// Asks for `layer` from now on, or pauses the leg (`None`). The leg keeps forwarding its
    /// current layer until a keyframe of `layer` arrives, so the caller must see that one is
    /// requested; after a pause it forwards nothing until then, since the subscriber missed
    /// the frames in between.
    pub(crate) fn set_target(&mut self, layer: Option<u8>) {
        if layer != self.target {
            self.skipped = None;
        }
        if layer.is_none() {
            self.current = None;
        }
        self.target = layer;
    }

    /// Decides what `packet` becomes on this leg.
    ///
    /// Rules, in order: drop it if the track is muted or the publisher waits
    /// ([`Incoming::check`]), if the leg is not ready, or if the subscriber is not connected.
    /// A packet of the current layer is forwarded (even while a switch waits). A packet of
    /// the target layer starts the leg if nothing was forwarded yet, switches it if it starts
    /// a keyframe, and is dropped otherwise; packets of other layers are dropped. A forwarded
    /// packet gets the subscriber's payload type and numbering, and is dropped if either has
    /// no answer. Packets dropped by the first rules leave the state untouched.
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
        if self.target.is_none() {
            return Err(DropReason::Paused);
        }
        let seq = *packet.seq_no;
        let mapping = match (self.current, &self.last) {
            (Some(mapping), _) if mapping.layer == packet.layer => mapping,
            _ if Some(packet.layer) != self.target => return Err(DropReason::OtherLayer),
            (_, None) => Mapping::first(packet),
            _ if !packet.keyframe => {
                self.skipped = self.skipped.max(Some(seq));
                return Err(DropReason::AwaitingKeyframe);
            }
            _ if self.skipped.is_some_and(|skipped| skipped > seq) => {
                return Err(DropReason::MissedKeyframe);
            }
            (_, Some(last)) => Mapping::continuing(last, packet),
        };
        let switched = self.current.is_some_and(|m| m.layer != mapping.layer);
        self.current = Some(mapping);
        if switched {
            self.skipped = None;
        }
        // The mapping is fixed by the first packet that gets here, whatever its payload type.
        let pt = self
            .map_pt(packet.pt, resolve)
            .ok_or(DropReason::UnmatchedPayloadType)?;
        if seq < mapping.first_seq {
            return Err(DropReason::BeforeBase);
        }
        let seq = seq.wrapping_sub(mapping.seq_offset);
        let timestamp = packet.timestamp.wrapping_add(mapping.ts_offset);
        let vp8 = packet.vp8.and_then(|ids| mapping.rewrite(ids));
        if self.last.as_ref().is_none_or(|last| seq > last.seq) {
            self.last = Some(Last {
                seq,
                timestamp,
                arrival: packet.arrival,
                vp8: vp8.or(packet.vp8).unwrap_or_default(),
            });
        }
        Ok(Forward {
            pt,
            seq_no: SeqNo::from(seq),
            timestamp,
            marker: packet.marker,
            vp8,
            switched,
        })
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
    use std::sync::LazyLock;

    use super::*;

    const ROLLOVER: u64 = 1 << 16;

    /// One start time for every test packet, so arrivals can be offsets from it.
    static T0: LazyLock<Instant> = LazyLock::new(Instant::now);

    /// A packet nothing drops: payload type 96, layer 0, unmuted, publisher admitted.
    fn packet(seq_no: u64) -> Incoming {
        Incoming {
            pt: Pt::from(96),
            seq_no: SeqNo::from(seq_no),
            timestamp: 90_000,
            marker: false,
            muted: false,
            waiting: false,
            layer: 0,
            keyframe: false,
            arrival: *T0,
            clock_rate: 90_000,
            vp8: None,
        }
    }

    /// A packet of `layer` that arrived `ms` after [`T0`].
    fn layered(layer: u8, seq_no: u64, timestamp: u32, ms: u64) -> Incoming {
        Incoming {
            layer,
            timestamp,
            arrival: *T0 + Duration::from_millis(ms),
            ..packet(seq_no)
        }
    }

    fn keyframe(packet: Incoming) -> Incoming {
        Incoming {
            keyframe: true,
            ..packet
        }
    }

    fn with_vp8(packet: Incoming, picture_id: (u16, bool), tl0: u8, key_idx: u8) -> Incoming {
        Incoming {
            vp8: Some(Vp8Ids {
                picture_id: Some(picture_id),
                tl0_pic_idx: Some(tl0),
                key_idx: Some(key_idx),
            }),
            ..packet
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

    fn send(forwarder: &mut Forwarder, packet: Incoming) -> Result<Forward, DropReason> {
        forwarder.forward(&packet, OPEN, matched)
    }

    #[test]
    fn first_packet_after_rollovers_is_rebased_to_roc_zero() {
        let mut forwarder = Forwarder::default();
        let first = forwarder
            .forward(&packet(3 * ROLLOVER + 100), OPEN, matched)
            .unwrap();
        assert_eq!(first.seq_no.roc(), 0);
        assert_eq!(*first.seq_no, 100);
        assert!(!first.switched);
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
    fn timestamp_and_marker_pass_through_on_one_layer() {
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
                    vp8: None,
                    switched: false,
                })
            );
        }
    }

    #[test]
    fn a_leg_starts_on_any_packet_of_its_target_and_ignores_other_layers() {
        let mut forwarder = Forwarder::default();
        forwarder.set_target(Some(1));
        assert_eq!(forwarder.current(), None);
        assert_eq!(
            send(&mut forwarder, layered(0, 500, 1_000, 0)),
            Err(DropReason::OtherLayer)
        );
        assert_eq!(
            send(&mut forwarder, layered(2, 900, 7_000, 0)),
            Err(DropReason::OtherLayer)
        );
        // No keyframe is needed to start: the subscriber asks for one itself.
        let first = send(&mut forwarder, layered(1, 300, 4_000, 0)).unwrap();
        assert_eq!((*first.seq_no, first.timestamp), (300, 4_000));
        assert_eq!(forwarder.current(), Some(1));
        assert_eq!(forwarder.target(), Some(1));
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_target_then_continues_the_numbering() {
        let mut forwarder = Forwarder::default();
        // Layer 0 at 30 fps: 3,000 ticks and 33 ms per frame.
        for frame in 0..3u32 {
            let p = layered(
                0,
                1_000 + u64::from(frame),
                10_000 + frame * 3_000,
                33 * u64::from(frame),
            );
            assert_eq!(
                *send(&mut forwarder, p).unwrap().seq_no,
                1_000 + u64::from(frame)
            );
        }
        forwarder.set_target(Some(2));
        // Until a keyframe of layer 2 comes, layer 0 still flows and layer 2 waits.
        assert_eq!(
            send(&mut forwarder, layered(2, 40_000, 777_000, 70)),
            Err(DropReason::AwaitingKeyframe)
        );
        let still = send(&mut forwarder, layered(0, 1_003, 19_000, 99)).unwrap();
        assert_eq!((*still.seq_no, still.timestamp), (1_003, 19_000));
        // The keyframe switches: next sequence number, timestamp advanced by 33 ms (2,970
        // ticks) since the last packet sent.
        let switch = send(&mut forwarder, keyframe(layered(2, 40_001, 780_000, 132))).unwrap();
        assert!(switch.switched);
        assert_eq!((*switch.seq_no, switch.timestamp), (1_004, 19_000 + 2_970));
        assert_eq!(forwarder.current(), Some(2));
        // Later packets of layer 2 keep their distance; layer 0 is now another layer.
        let next = send(&mut forwarder, layered(2, 40_002, 783_000, 165)).unwrap();
        assert_eq!(
            (*next.seq_no, next.timestamp),
            (1_005, 19_000 + 2_970 + 3_000)
        );
        assert!(!next.switched);
        assert_eq!(
            send(&mut forwarder, layered(0, 1_004, 22_000, 132)),
            Err(DropReason::OtherLayer)
        );
        // A late packet of layer 2 from before the switch has no place: dropped.
        assert_eq!(
            send(&mut forwarder, layered(2, 40_000, 780_000, 170)),
            Err(DropReason::BeforeBase)
        );
        // And back down: the numbering goes on from layer 2's last packet.
        forwarder.set_target(Some(0));
        let down = send(&mut forwarder, keyframe(layered(0, 1_010, 40_000, 198))).unwrap();
        assert_eq!(
            (*down.seq_no, down.timestamp),
            (1_006, 19_000 + 5_970 + 2_970)
        );
    }

    #[test]
    fn a_keyframe_whose_later_packets_came_first_is_not_switched_at() {
        let mut forwarder = Forwarder::default();
        send(&mut forwarder, layered(0, 10, 1_000, 0)).unwrap();
        forwarder.set_target(Some(1));
        // The network reordered the keyframe: its second packet came before its first.
        assert_eq!(
            send(&mut forwarder, layered(1, 501, 9_000, 30)),
            Err(DropReason::AwaitingKeyframe)
        );
        assert_eq!(
            send(&mut forwarder, keyframe(layered(1, 500, 9_000, 31))),
            Err(DropReason::MissedKeyframe)
        );
        assert_eq!(forwarder.current(), Some(0));
        // Layer 0 goes on; the next keyframe, in order, switches.
        assert_eq!(
            *send(&mut forwarder, layered(0, 11, 4_000, 33))
                .unwrap()
                .seq_no,
            11
        );
        let switch = send(&mut forwarder, keyframe(layered(1, 520, 30_000, 60))).unwrap();
        assert!(switch.switched);
        assert_eq!(*switch.seq_no, 12);
        // A new target forgets what was skipped for the old one.
        forwarder.set_target(Some(0));
        assert_eq!(
            send(&mut forwarder, layered(0, 40, 8_000, 90)),
            Err(DropReason::AwaitingKeyframe)
        );
        forwarder.set_target(Some(1));
        forwarder.set_target(Some(0));
        assert!(
            send(&mut forwarder, keyframe(layered(0, 39, 8_000, 91)))
                .unwrap()
                .switched
        );
    }

    #[test]
    fn a_paused_leg_drops_everything_and_resumes_only_at_a_keyframe() {
        let mut forwarder = Forwarder::default();
        assert_eq!(
            *send(&mut forwarder, layered(0, 10, 1_000, 0))
                .unwrap()
                .seq_no,
            10
        );
        forwarder.set_target(None);
        assert_eq!(forwarder.target(), None);
        for seq in [11, 12] {
            assert_eq!(
                send(&mut forwarder, keyframe(layered(0, seq, 4_000, 33))),
                Err(DropReason::Paused)
            );
        }
        // Resumed on the same layer: the frames in between are gone, so a keyframe is needed
        // and the numbering continues without a gap.
        forwarder.set_target(Some(0));
        assert_eq!(
            send(&mut forwarder, layered(0, 13, 7_000, 66)),
            Err(DropReason::AwaitingKeyframe)
        );
        let resumed = send(&mut forwarder, keyframe(layered(0, 14, 10_000, 99))).unwrap();
        assert_eq!((*resumed.seq_no, resumed.timestamp), (11, 1_000 + 8_910));
        assert!(!resumed.switched, "a resume is not a layer switch");
        assert_eq!(
            *send(&mut forwarder, layered(0, 15, 13_000, 132))
                .unwrap()
                .seq_no,
            12
        );
    }

    #[test]
    fn sequence_numbers_and_timestamps_wrap_across_a_switch() {
        let mut forwarder = Forwarder::default();
        // The subscriber's numbering is near a 16-bit rollover and its timestamps near 2^32.
        let last = send(&mut forwarder, layered(0, 65_534, u32::MAX - 100, 0)).unwrap();
        assert_eq!(*last.seq_no, 65_534);
        forwarder.set_target(Some(1));
        // The target layer's own numbering is far below: the output still moves forward.
        let switch = send(&mut forwarder, keyframe(layered(1, 17, 5, 10))).unwrap();
        assert_eq!(*switch.seq_no, 65_535);
        assert_eq!(switch.timestamp, (u32::MAX - 100).wrapping_add(900));
        let next = send(&mut forwarder, layered(1, 18, 3_005, 43)).unwrap();
        assert_eq!(*next.seq_no, ROLLOVER);
        assert_eq!(next.timestamp, 799 + 3_000);
    }

    #[test]
    fn the_timestamp_advances_at_least_one_tick_at_a_switch() {
        let mut forwarder = Forwarder::default();
        send(&mut forwarder, layered(0, 10, 1_000, 5)).unwrap();
        forwarder.set_target(Some(1));
        let switch = send(&mut forwarder, keyframe(layered(1, 90, 50_000, 5))).unwrap();
        assert_eq!(switch.timestamp, 1_001);
    }

    #[test]
    fn vp8_picture_ids_continue_across_a_switch_and_wrap() {
        let mut forwarder = Forwarder::default();
        // Layer 0 near the 15-bit picture id wrap; nothing is rewritten before a switch.
        let before = send(
            &mut forwarder,
            with_vp8(layered(0, 1, 0, 0), (0x7ffe, true), 255, 31),
        )
        .unwrap();
        assert_eq!(before.vp8, None);
        forwarder.set_target(Some(1));
        let switch = send(
            &mut forwarder,
            keyframe(with_vp8(layered(1, 1, 0, 33), (1_234, true), 40, 3)),
        )
        .unwrap();
        assert_eq!(
            switch.vp8,
            Some(Vp8Ids {
                picture_id: Some((0x7fff, true)),
                tl0_pic_idx: Some(0),
                key_idx: Some(0),
            })
        );
        let next = send(
            &mut forwarder,
            with_vp8(layered(1, 2, 3_000, 66), (1_235, true), 41, 3),
        )
        .unwrap();
        assert_eq!(
            next.vp8,
            Some(Vp8Ids {
                picture_id: Some((0, true)),
                tl0_pic_idx: Some(1),
                key_idx: Some(0),
            })
        );
    }

    #[test]
    fn seven_bit_picture_ids_wrap_at_128() {
        let mut forwarder = Forwarder::default();
        send(
            &mut forwarder,
            with_vp8(layered(0, 1, 0, 0), (126, false), 0, 0),
        )
        .unwrap();
        forwarder.set_target(Some(1));
        let ids = |forward: Forward| forward.vp8.and_then(|ids| ids.picture_id);
        let switch = send(
            &mut forwarder,
            keyframe(with_vp8(layered(1, 1, 0, 33), (5, false), 0, 0)),
        )
        .unwrap();
        assert_eq!(ids(switch), Some((127, false)));
        let next = send(
            &mut forwarder,
            with_vp8(layered(1, 2, 0, 66), (6, false), 0, 0),
        )
        .unwrap();
        assert_eq!(ids(next), Some((0, false)));
    }
}
