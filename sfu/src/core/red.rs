//! Audio redundancy (RFC 2198 RED) for subscribers whose downlink loses packets.
//!
//! Opus's in-band FEC covers a lost packet only at a lower quality and only when the encoder
//! chose to spend bits on it; RED repeats the previous packet whole in the next one, so one
//! loss in a row costs nothing. It doubles the audio's payload, so a subscriber gets it only
//! while its link loses packets ([`RED_ON_LOSS`]) and has room for audio twice over; it stops
//! after [`RED_CALM`] without loss, or at once when the room is gone (then it would be the
//! loss). Browsers decode RED by themselves once it is negotiated (the SFU offers it on every
//! audio line; Chromium accepts it, a client that does not gets plain Opus).
//!
//! A publisher may send RED itself (Chromium does: str0m's answers list RED before Opus, as
//! libwebrtc wants to enable it): its packets pass through to subscribers getting RED, and are
//! cut down to their primary block for the others. For a publisher of plain Opus, the core
//! builds RED from the track's previous packet.
//!
//! Pure: the gate is plain values in, a decision out; the payload functions are bytes in,
//! bytes out; unit-tested here.

use std::time::{Duration, Instant};

use str0m::rtp::{RedBlock, RedDecoder, RedEncoder, RedundantBlock};

/// Downlink loss (a fraction of packets, over the last statistics interval) from which a
/// subscriber gets redundant audio.
pub(crate) const RED_ON_LOSS: f32 = 0.02;
/// Loss under which the link counts as calm.
pub(crate) const RED_OFF_LOSS: f32 = 0.005;
/// How long the link must stay calm before redundancy stops.
pub(crate) const RED_CALM: Duration = Duration::from_secs(10);
/// RED's timestamp offset field (14 bits): a previous packet further back cannot be carried.
const MAX_OFFSET: u32 = 0x3fff;
/// RED's block length field (10 bits).
const MAX_BLOCK: usize = 0x3ff;

/// Whether one subscriber gets redundant audio, with its hysteresis.
#[derive(Debug, Default)]
pub(crate) struct RedGate {
    on: bool,
    /// Since when the link has been calm while redundancy was on.
    calm_since: Option<Instant>,
}

impl RedGate {
    /// Whether the subscriber gets redundant audio now.
    pub(crate) fn on(&self) -> bool {
        self.on
    }

    /// Decides from the downlink's `loss` over the last interval (`None` before any report)
    /// and whether the link has `room` for the audio twice over; returns whether it is on.
    pub(crate) fn decide(&mut self, now: Instant, loss: Option<f32>, room: bool) -> bool {
        let loss = loss.filter(|l| l.is_finite()).unwrap_or(0.0);
        if !room {
            self.on = false;
            self.calm_since = None;
        } else if loss >= RED_ON_LOSS {
            self.on = true;
            self.calm_since = None;
        } else if self.on && loss < RED_OFF_LOSS {
            let since = *self.calm_since.get_or_insert(now);
            if now - since >= RED_CALM {
                self.on = false;
                self.calm_since = None;
            }
        } else {
            self.calm_since = None;
        }
        self.on
    }
}

/// A track's previous audio packet, the redundancy the next one carries.
#[derive(Debug, Clone)]
pub(crate) struct Previous {
    /// The publisher's extended sequence number.
    pub(crate) seq_no: u64,
    /// The RTP timestamp.
    pub(crate) timestamp: u32,
    /// The Opus payload (a RED packet's primary block).
    pub(crate) payload: Vec<u8>,
}

/// A RED payload of `primary` (payload type `pt`, at `timestamp`, the publisher's `seq_no`),
/// carrying `previous` when it is the packet just before and fits RED's fields.
pub(crate) fn wrap(
    pt: u8,
    primary: &[u8],
    seq_no: u64,
    timestamp: u32,
    previous: Option<&Previous>,
) -> Vec<u8> {
    let redundant = previous
        .filter(|p| p.seq_no.wrapping_add(1) == seq_no && p.payload.len() <= MAX_BLOCK)
        .and_then(|p| {
            let offset = timestamp.wrapping_sub(p.timestamp);
            (offset > 0 && offset <= MAX_OFFSET).then(|| RedundantBlock {
                pt,
                timestamp_offset: offset,
                payload: p.payload.clone(),
            })
        });
    RedEncoder::encode(pt, primary, redundant.as_slice())
}

/// The primary block of a RED payload, or `None` when it is malformed.
pub(crate) fn primary(payload: &[u8]) -> Option<&[u8]> {
    RedDecoder::decode(payload)
        .ok()?
        .into_iter()
        .find(|b| b.is_primary)
        .map(|b| b.payload)
}

/// The RED payload with every block's payload type set to `pt` (a subscriber that numbers
/// Opus differently from the publisher), or `None` when it is malformed.
pub(crate) fn renumber(payload: &[u8], pt: u8) -> Option<Vec<u8>> {
    let blocks = RedDecoder::decode(payload).ok()?;
    let (primary, redundant): (Vec<RedBlock>, Vec<RedBlock>) =
        blocks.into_iter().partition(|b| b.is_primary);
    let primary = primary.first()?;
    let redundant: Vec<RedundantBlock> = redundant
        .into_iter()
        .map(|b| RedundantBlock {
            pt,
            timestamp_offset: b.timestamp_offset,
            payload: b.payload.to_vec(),
        })
        .collect();
    Some(RedEncoder::encode(pt, primary.payload, &redundant))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn redundancy_starts_on_loss_and_stops_after_a_calm_spell_or_at_once_without_room() {
        let t0 = Instant::now();
        let mut gate = RedGate::default();
        assert!(!gate.decide(t0, None, true), "off before any report");
        assert!(!gate.decide(t0, Some(0.01), true), "1% is not enough");
        assert!(gate.decide(secs(t0, 1.0), Some(0.03), true));
        // Calm, but not for long enough; a lossy second starts the calm spell over.
        assert!(gate.decide(secs(t0, 2.0), Some(0.0), true));
        assert!(gate.decide(secs(t0, 10.0), Some(0.0), true));
        assert!(gate.decide(secs(t0, 11.0), Some(0.01), true), "1% keeps it");
        assert!(gate.decide(secs(t0, 12.0), Some(0.0), true));
        assert!(gate.decide(secs(t0, 21.9), Some(0.0), true));
        assert!(!gate.decide(secs(t0, 22.0), Some(0.0), true), "10 s calm");
        // No room: off at once, however lossy.
        assert!(gate.decide(secs(t0, 23.0), Some(0.2), true));
        assert!(!gate.decide(secs(t0, 23.5), Some(0.2), false));
        assert!(!gate.decide(secs(t0, 24.0), Some(f32::NAN), true));
    }

    #[test]
    fn the_previous_packet_rides_along_only_when_it_is_the_one_just_before() {
        let previous = Previous {
            seq_no: 9,
            timestamp: 960,
            payload: vec![1, 2, 3],
        };
        let red = wrap(111, &[7, 8], 10, 1920, Some(&previous));
        let blocks = RedDecoder::decode(&red).expect("valid RED");
        assert_eq!(blocks.len(), 2);
        assert_eq!(
            (blocks[0].pt, blocks[0].timestamp_offset, blocks[0].payload),
            (111, 960, &[1, 2, 3][..])
        );
        assert!(blocks[1].is_primary);
        assert_eq!((blocks[1].pt, blocks[1].payload), (111, &[7, 8][..]));
        assert_eq!(primary(&red), Some(&[7, 8][..]));
        // A gap, a timestamp too far back, or none at all: the primary alone.
        for (seq_no, timestamp) in [(11, 1920), (10, 960 + MAX_OFFSET + 1), (10, 960)] {
            let red = wrap(111, &[7, 8], seq_no, timestamp, Some(&previous));
            assert_eq!(red, vec![111, 7, 8], "seq {seq_no} ts {timestamp}");
        }
        assert_eq!(wrap(111, &[7, 8], 10, 1920, None), vec![111, 7, 8]);
        // Across the timestamp's wrap.
        let late = Previous {
            timestamp: u32::MAX - 479,
            ..previous
        };
        let red = wrap(111, &[7], 10, 480, Some(&late));
        assert_eq!(
            RedDecoder::decode(&red).expect("valid")[0].timestamp_offset,
            960
        );
    }

    #[test]
    fn a_publishers_red_is_cut_to_its_primary_or_renumbered() {
        let previous = Previous {
            seq_no: 1,
            timestamp: 0,
            payload: vec![5; 40],
        };
        let red = wrap(109, &[6; 30], 2, 960, Some(&previous));
        assert_eq!(primary(&red), Some(&[6; 30][..]));
        let renumbered = renumber(&red, 111).expect("valid");
        let blocks = RedDecoder::decode(&renumbered).expect("valid");
        assert!(blocks.iter().all(|b| b.pt == 111));
        assert_eq!(blocks[0].payload, &[5; 40][..]);
        assert_eq!(blocks[1].payload, &[6; 30][..]);
        // Malformed: a redundant header whose block runs past the end.
        for junk in [
            &[][..],
            &[0x80 | 111, 0, 0][..],
            &[0x80 | 111, 0, 4, 200, 111][..],
        ] {
            assert_eq!(primary(junk), None, "{junk:?}");
            assert_eq!(renumber(junk, 111), None, "{junk:?}");
        }
    }
}
