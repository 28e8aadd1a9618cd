use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};

use super::forwarder::Forwarder;
use super::ids::ParticipantId;
use super::red::Previous;

/// A published track and everyone it is forwarded to.
#[derive(Debug)]
pub(crate) struct Track {
    pub(crate) kind: MediaKind,
    pub(crate) muted: bool,
    pub(crate) legs: HashMap<ParticipantId, Leg>,
    /// The encodings the publisher sends, lowest first: one without a rid, or a simulcast
    /// layer per rid. A leg's forwarder names a layer by its index here.
    pub(crate) layers: Vec<Layer>,
    /// An audio track's previous packet, kept while a subscriber gets redundant audio.
    pub(crate) red_previous: Option<Previous>,
}

impl Track {
    /// A track of `kind` sent as the simulcast layers `rids` (in any order), or as one
    /// encoding when `rids` is empty.
    pub(crate) fn new(kind: MediaKind, rids: &[Rid]) -> Self {
        let mut rids = rids.to_vec();
        rids.sort_by_key(layer_rank);
        rids.dedup();
        let layers = if rids.is_empty() {
            vec![Layer::new(None)]
        } else {
            rids.into_iter().map(|rid| Layer::new(Some(rid))).collect()
        };
        Track {
            kind,
            muted: false,
            legs: HashMap::new(),
            layers,
            red_previous: None,
        }
    }

    /// The index of the layer a packet with `rid` belongs to; `None` for a rid the track was
    /// not negotiated with.
    pub(crate) fn layer_of(&self, rid: Option<Rid>) -> Option<u8> {
        let index = self.layers.iter().position(|layer| layer.rid == rid)?;
        u8::try_from(index).ok()
    }

    /// Whether the track is sent as more than one layer.
    pub(crate) fn is_simulcast(&self) -> bool {
        self.layers.len() > 1
    }

    /// The best layer for a leg: the highest one the publisher is sending, or the lowest
    /// when it sends none (a switch then waits for the layer to come back).
    pub(crate) fn best_layer(&self) -> u8 {
        let best = self.layers.iter().rposition(|layer| layer.active);
        best.and_then(|index| u8::try_from(index).ok()).unwrap_or(0)
    }

    /// The rate of each layer, lowest first; `None` for a layer the publisher is not sending.
    /// A layer not yet measured counts as a typical camera layer of its rank.
    pub(crate) fn rates(&self, now: Instant) -> Vec<Option<u64>> {
        self.layers
            .iter()
            .enumerate()
            .map(|(index, layer)| {
                let typical = TYPICAL_BPS[index.min(TYPICAL_BPS.len() - 1)];
                layer
                    .active
                    .then(|| layer.rate.estimate(now).unwrap_or(typical))
            })
            .collect()
    }

    /// The lowest layer at least as large as `size` (the width and height a subscriber
    /// renders the video at, in device pixels), or the top one; `(0, 0)`, a hidden video, gets
    /// the lowest. Layers whose size is not known yet (no keyframe parsed) are passed over.
    pub(crate) fn cap(&self, size: Option<(u32, u32)>) -> u8 {
        let top = u8::try_from(self.layers.len().saturating_sub(1)).unwrap_or(u8::MAX);
        let Some((width, height)) = size else {
            return top;
        };
        if width == 0 || height == 0 {
            return 0;
        }
        let large_enough = self.layers.iter().position(|layer| {
            layer
                .size
                .is_some_and(|(w, h)| u32::from(w) >= width && u32::from(h) >= height)
        });
        large_enough
            .and_then(|index| u8::try_from(index).ok())
            .unwrap_or(top)
    }
}

/// What a camera layer of each rank typically sends (bit/s), counted until its own rate is
/// measured: the join page's `q`, `h` and `f` limits.
const TYPICAL_BPS: [u64; 3] = [150_000, 500_000, 1_500_000];

/// A bit rate measured over whole windows.
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    window_start: Option<Instant>,
    bytes: u64,
    bps: Option<u64>,
}

/// The length of a [`RateMeter`] window.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl RateMeter {
    /// Counts `bytes` that arrived at `now`.
    pub(crate) fn add(&mut self, now: Instant, bytes: usize) {
        let start = *self.window_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= RATE_WINDOW {
            let bits = u128::from(self.bytes) * 8 * 1_000_000;
            let bps = bits / elapsed.as_micros().max(1);
            self.bps = Some(u64::try_from(bps).unwrap_or(u64::MAX));
            self.bytes = 0;
            self.window_start = Some(now);
        }
        self.bytes += bytes as u64;
    }

    /// The rate over the last whole window; `None` before one has passed.
    pub(crate) fn bps(&self) -> Option<u64> {
        self.bps
    }

    /// [`RateMeter::bps`], or before a whole window the rate so far, once a quarter of a
    /// window has passed.
    pub(crate) fn estimate(&self, now: Instant) -> Option<u64> {
        self.bps.or_else(|| {
            let elapsed = now.saturating_duration_since(self.window_start?);
            (elapsed >= RATE_WINDOW / 4).then(|| {
                let bps = u128::from(self.bytes) * 8 * 1_000_000 / elapsed.as_micros().max(1);
                u64::try_from(bps).unwrap_or(u64::MAX)
            })
        })
    }
}

/// Where a simulcast rid sorts among the layers: the page's `q`, `h`, `f` (quarter, half,
/// full resolution) in that order, then any other rid by name (`r0` < `r1` < `r2`, as other
/// clients name them). Never by SDP position: some browsers list encodings high to low.
fn layer_rank(rid: &Rid) -> (u8, String) {
    let name: &str = rid;
    let known = match name {
        "q" => 0,
        "h" => 1,
        "f" => 2,
        _ => 3,
    };
    (known, name.to_owned())
}

/// One encoding of a track.
#[derive(Debug)]
pub(crate) struct Layer {
    /// Its simulcast rid; `None` for a track sent as one encoding.
    pub(crate) rid: Option<Rid>,
    /// Whether packets of it arrive: set by the first one, cleared when str0m reports the
    /// stream paused (the publisher's browser stopped it, as Chrome does on a short uplink).
    pub(crate) active: bool,
    /// Throttles keyframe requests for this layer.
    pub(crate) keyframes: KeyframeGate,
    /// Its bit rate, RTP payloads and headers.
    pub(crate) rate: RateMeter,
    /// Its width and height, from its last VP8 keyframe.
    pub(crate) size: Option<(u16, u16)>,
}

impl Layer {
    fn new(rid: Option<Rid>) -> Self {
        Layer {
            rid,
            active: false,
            keyframes: KeyframeGate::default(),
            rate: RateMeter::default(),
            size: None,
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
    /// The size the subscriber renders the video at (device pixels), once it said so.
    pub(crate) size: Option<(u32, u32)>,
}

impl Leg {
    /// A leg on the subscriber's new m-line `mid` that will forward `layer`, not ready until
    /// the subscriber answers.
    pub(crate) fn new(mid: Mid, layer: u8) -> Self {
        let mut forwarder = Forwarder::default();
        forwarder.set_target(Some(layer));
        Leg {
            mid,
            ready: false,
            forwarder,
            size: None,
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
            // A request sent at this very moment brings a keyframe that arrives after it, so
            // it serves this one too (several subscribers switching at once).
            Some(last) if now == last && self.deferred.is_none() => Gate::Coalesced,
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

    /// Whether no request was sent within `span` before `now` and none waits.
    pub(crate) fn quiet_for(&self, now: Instant, span: Duration) -> bool {
        self.deferred.is_none() && self.last_sent.is_none_or(|last| now >= last + span)
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

    #[test]
    fn layers_sort_by_rid_meaning_not_by_sdp_order() {
        let rids = |names: &[&str]| names.iter().map(|n| Rid::from(*n)).collect::<Vec<_>>();
        let track = Track::new(MediaKind::Video, &rids(&["f", "q", "h"]));
        let order: Vec<_> = track.layers.iter().map(|l| l.rid).collect();
        assert_eq!(
            order,
            rids(&["q", "h", "f"])
                .into_iter()
                .map(Some)
                .collect::<Vec<_>>()
        );
        assert_eq!(track.layer_of(Some(Rid::from("h"))), Some(1));
        assert_eq!(track.layer_of(Some(Rid::from("x"))), None);
        assert_eq!(track.layer_of(None), None);
        let other = Track::new(MediaKind::Video, &rids(&["r2", "r0", "r1"]));
        assert_eq!(other.layer_of(Some(Rid::from("r0"))), Some(0));
        assert_eq!(other.layer_of(Some(Rid::from("r2"))), Some(2));
        let single = Track::new(MediaKind::Audio, &[]);
        assert_eq!(single.layer_of(None), Some(0));
        assert!(!single.is_simulcast());
    }

    #[test]
    fn the_best_layer_is_the_highest_one_sent() {
        let rids = [Rid::from("q"), Rid::from("h"), Rid::from("f")];
        let mut track = Track::new(MediaKind::Video, &rids);
        assert_eq!(track.best_layer(), 0);
        track.layers[1].active = true;
        assert_eq!(track.best_layer(), 1);
        track.layers[2].active = true;
        assert_eq!(track.best_layer(), 2);
        track.layers[2].active = false;
        track.layers[0].active = true;
        assert_eq!(track.best_layer(), 1);
    }

    #[test]
    fn the_size_cap_is_the_lowest_layer_large_enough() {
        let rids = [Rid::from("q"), Rid::from("h"), Rid::from("f")];
        let mut track = Track::new(MediaKind::Video, &rids);
        assert_eq!(track.cap(None), 2);
        assert_eq!(track.cap(Some((640, 360))), 2, "sizes unknown: no cap");
        assert_eq!(track.cap(Some((0, 0))), 0, "hidden");
        for (layer, size) in track
            .layers
            .iter_mut()
            .zip([(320, 180), (640, 360), (1280, 720)])
        {
            layer.size = Some(size);
        }
        assert_eq!(track.cap(Some((300, 170))), 0);
        assert_eq!(track.cap(Some((640, 360))), 1);
        assert_eq!(track.cap(Some((641, 200))), 2);
        assert_eq!(track.cap(Some((3840, 2160))), 2);
    }

    #[test]
    fn a_rate_is_measured_over_whole_windows() {
        let t0 = Instant::now();
        let mut meter = RateMeter::default();
        for ms in (0..1000).step_by(20) {
            meter.add(t0 + Duration::from_millis(ms), 250);
        }
        assert_eq!(meter.bps(), None);
        assert_eq!(meter.estimate(t0 + Duration::from_millis(100)), None);
        assert_eq!(
            meter.estimate(t0 + Duration::from_millis(1000)),
            Some(100_000)
        );
        meter.add(t0 + Duration::from_millis(1000), 250);
        assert_eq!(meter.bps(), Some(100_000));
    }

    const INTERVAL: Duration = Duration::from_millis(500);

    #[test]
    fn at_most_one_request_per_interval() {
        let t0 = Instant::now();
        let mut gate = KeyframeGate::default();
        let pli = KeyframeRequestKind::Pli;
        assert_eq!(gate.request(t0, pli, INTERVAL), Gate::Send);
        assert_eq!(gate.request(t0, pli, INTERVAL), Gate::Coalesced);
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
