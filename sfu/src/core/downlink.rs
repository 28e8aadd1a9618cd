//! Adapting each subscriber's video to its link: the layer of every video leg, pausing and
//! resuming legs, and what str0m's bandwidth estimator should probe for.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{Direction, KeyframeRequestKind};

use super::allocator::{self, AllocState, LegInput, Link};
use super::error::CoreError;
use super::event::Event;
use super::ids::{ParticipantId, TrackId};
use super::red::RedGate;
use super::timers::Timer;
use super::{Core, KeyframeReason, negotiate};

/// How often each subscriber's layers are decided, beside estimate and layer changes.
pub(crate) const ALLOCATE_EVERY: Duration = Duration::from_millis(500);
/// The largest rendered size a client may report, in device pixels per side.
const MAX_VIDEO_SIDE: u32 = 8192;
/// The share above the wanted layers' rates that str0m is asked to probe for.
const PROBE_MARGIN: f64 = 1.2;
/// How far (as a share) the rates str0m was given must move before it is given new ones:
/// str0m probes at every increase of the desired rate, and measured rates and the estimate
/// move a little at every allocation; on a link that holds little more than audio, probes
/// that often were what it lost.
const RETELL_SHARE: f64 = 0.25;
/// How long a layer switch waits for its keyframe before it is asked for again.
const SWITCH_RETRY: Duration = Duration::from_secs(1);

/// What the core knows about one subscriber's link.
#[derive(Debug, Default)]
pub(crate) struct Downlink {
    /// The smoothed send-side estimate (str0m's `EgressBitrateEstimate`), while str0m can
    /// probe (the subscriber sends transport-wide feedback).
    pub(crate) smoothed: Option<u64>,
    /// The latest raw estimate (`PeerStats::bwe_tx`), which reacts before the smoothed one.
    pub(crate) raw: Option<u64>,
    /// The allocator's hysteresis timers.
    pub(crate) alloc: AllocState,
    /// The (minimum, desired) rates str0m was last given.
    told: Option<(u64, u64)>,
    /// The downlink's loss over the last statistics interval (TWCC, else receiver reports).
    pub(crate) loss: Option<f32>,
    /// The worst loss receiver reports gave since the last statistics, for a subscriber
    /// without TWCC.
    pub(crate) report_loss: Option<f32>,
    /// Whether the subscriber gets redundant audio.
    pub(crate) red: RedGate,
}

/// Whether `now` moved more than [`RETELL_SHARE`] away from `before`.
fn moved(before: u64, now: u64) -> bool {
    (now as f64 - before as f64).abs() > before as f64 * RETELL_SHARE
}

impl Downlink {
    /// The estimate layers are chosen by: the lower of the smoothed and the raw one, so a
    /// falling link is followed at once and a rising one once it held.
    pub(super) fn estimate(&self) -> Option<u64> {
        let smoothed = self.smoothed?;
        Some(self.raw.map_or(smoothed, |raw| raw.min(smoothed)))
    }
}

impl Core {
    /// Decides the layer of every video leg of `id` as a subscriber (see `allocator.rs`),
    /// pausing and resuming legs, asking for the keyframes switches wait for, and telling
    /// str0m's estimator the rates to keep and to probe for.
    pub(super) fn allocate(&mut self, now: Instant, id: ParticipantId) {
        // Until the subscriber holds the keys, whatever str0m sends it (probes included) only
        // crowds its link: str0m desires nothing until it is first told here.
        if !self
            .participants
            .get_mut(&id)
            .is_some_and(|p| p.receives_media(now))
        {
            return;
        }
        let Some(participant) = self.participants.get(&id) else {
            return;
        };
        let mut tracks = Vec::new();
        let mut legs = Vec::new();
        let mut audio = 0;
        for track_id in participant.outgoing.values() {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            let Some(leg) = track.legs.get(&id) else {
                continue;
            };
            if !track.kind.is_video() {
                audio += track.layers.first().and_then(|l| l.rate.bps()).unwrap_or(0);
                continue;
            }
            if track.muted {
                continue;
            }
            // The page publishes its camera first and a screen share as a later video.
            let screen = self
                .participants
                .get(&track_id.participant)
                .is_some_and(|p| {
                    p.published
                        .iter()
                        .filter(|mid| {
                            self.tracks
                                .get(&TrackId {
                                    participant: track_id.participant,
                                    mid: **mid,
                                })
                                .is_some_and(|t| t.kind.is_video())
                        })
                        .position(|mid| *mid == track_id.mid)
                        .is_some_and(|index| index > 0)
                });
            tracks.push(*track_id);
            legs.push(LegInput {
                rates: track.rates(now),
                cap: track.cap(leg.size),
                target: leg.forwarder.target(),
                priority: u8::from(screen),
            });
        }
        let Some(participant) = self.participants.get_mut(&id) else {
            return;
        };
        let mut link = Link {
            estimate: participant.downlink.estimate(),
            audio,
        };
        // Redundant audio is paid for from the video's budget, but never at the cost of a
        // paused video: only when the link also holds every leg's lowest layer (on a link
        // that congested, loss is the link's, and redundancy would only add to it).
        let loss = participant.downlink.loss;
        let negotiated = participant
            .rtc
            .codec_config()
            .params()
            .iter()
            .any(|p| p.red().is_some());
        let floor: u64 = legs.iter().map(LegInput::lowest_need).sum();
        let room = negotiated && link.holds_audio_twice(floor);
        let was = participant.downlink.red.on();
        if participant.downlink.red.decide(now, loss, room) {
            link.audio = audio.saturating_mul(2);
        }
        if was != participant.downlink.red.on() {
            tracing::debug!(
                subscriber = %id,
                on = !was,
                ?loss,
                estimate = ?link.estimate,
                audio,
                floor,
                "redundant audio"
            );
        }
        if legs.is_empty() {
            return;
        }
        let targets = allocator::allocate(now, link, &legs, &mut participant.downlink.alloc);
        if link.estimate.is_some() {
            // str0m probes in bursts of up to twice the desired rate: asking for the top
            // layers on a link far below them floods it, audio included. So ask for at most
            // twice the estimate, but always for the next step up.
            let best: u64 = legs.iter().map(LegInput::best_need).sum();
            let next: u64 = legs
                .iter()
                .zip(&targets)
                .map(|(leg, target)| leg.next_need(*target))
                .sum();
            let estimate = link.estimate.unwrap_or(0);
            let wanted = best.min(next.max(estimate.saturating_mul(2)));
            let keep: u64 = legs
                .iter()
                .zip(&targets)
                .map(|(leg, target)| leg.need(*target))
                .sum();
            let desired = audio + (wanted as f64 * PROBE_MARGIN) as u64;
            tracing::trace!(
                subscriber = %id,
                estimate,
                audio,
                keep,
                desired,
                ?targets,
                "allocated"
            );
            let minimum = audio + keep;
            let retell = participant
                .downlink
                .told
                .is_none_or(|(told_minimum, told_desired)| {
                    moved(told_minimum, minimum) || moved(told_desired, desired)
                });
            if retell {
                participant.downlink.told = Some((minimum, desired));
                participant
                    .rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
                participant.drain(&mut self.out);
            }
        }
        for ((track, leg), target) in tracks.into_iter().zip(&legs).zip(targets) {
            if target != leg.target {
                tracing::debug!(
                    subscriber = %id,
                    %track,
                    from = ?leg.target,
                    to = ?target,
                    estimate = ?link.estimate,
                    audio = link.audio,
                    rates = ?leg.rates,
                    cap = leg.cap,
                    "simulcast layer changed"
                );
                self.retarget(now, track, id, leg.target, target);
            }
        }
    }

    /// Points `subscriber`'s leg of `track` at `target` (from `before`): tells the subscriber
    /// when this pauses or resumes it, and asks for a keyframe of a layer it must switch to.
    fn retarget(
        &mut self,
        now: Instant,
        track: TrackId,
        subscriber: ParticipantId,
        before: Option<u8>,
        target: Option<u8>,
    ) {
        let Some(leg) = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.legs.get_mut(&subscriber))
        else {
            return;
        };
        let mid = leg.mid;
        let Some(participant) = self.participants.get_mut(&subscriber) else {
            return;
        };
        if before.is_none()
            && target.is_some()
            && participant.negotiation.queued(mid, Direction::Inactive)
        {
            // The pause is not offered yet, so the m-line's next offer could not tell the
            // subscriber the new SSRCs of its resume; stay paused until it is.
            return;
        }
        let current = leg.forwarder.current();
        leg.forwarder.set_target(target);
        match (before, target) {
            (Some(_), None) => {
                self.counters.legs_paused += 1;
                // Paused again before its resume was answered: the subscriber still has it
                // as paused (`track_resumed` comes with the answer).
                let told = !participant.negotiation.resuming(mid);
                negotiate::stand_down(&mut participant.rtc, mid, &mut participant.retired);
                participant
                    .negotiation
                    .set_direction(mid, Direction::Inactive);
                if told {
                    self.out
                        .events
                        .push_back(Event::TrackPaused { subscriber, track });
                }
                self.negotiate(subscriber);
            }
            (None, Some(_)) => {
                participant
                    .negotiation
                    .set_direction(mid, Direction::SendOnly);
                leg.ready = false;
                self.negotiate(subscriber);
            }
            _ => {}
        }
        if let Some(layer) = target
            && (current != Some(layer) || before.is_none())
        {
            self.request_switch_keyframe(now, track, layer);
        }
    }

    /// Re-decides the layers of every subscriber of `track` (a layer started or stopped).
    pub(super) fn reallocate_track(&mut self, now: Instant, track: TrackId) {
        let Some(subscribers) = self
            .tracks
            .get(&track)
            .map(|t| t.legs.keys().copied().collect::<Vec<_>>())
        else {
            return;
        };
        for subscriber in subscribers {
            self.allocate(now, subscriber);
        }
    }

    /// The periodic allocation of `id`, re-armed while it is in a room.
    pub(super) fn allocate_tick(&mut self, now: Instant, id: ParticipantId) {
        if !self.participants.contains_key(&id) {
            return;
        }
        self.allocate(now, id);
        self.chase_switches(now, id);
        self.out
            .timers
            .set(Timer::Allocate(id), now + ALLOCATE_EVERY);
    }

    /// Asks again for the keyframe each of `id`'s pending layer switches waits for, once the
    /// layer's last request is [`SWITCH_RETRY`] old: the one asked for by the switch can be
    /// lost or merged away by the publisher, and a leg would then stay on its old layer (or
    /// paused) for good.
    fn chase_switches(&mut self, now: Instant, id: ParticipantId) {
        let Some(participant) = self.participants.get(&id) else {
            return;
        };
        if !participant.rtc.is_connected() {
            return;
        }
        let mut pending = Vec::new();
        for track_id in participant.outgoing.values() {
            let Some(track) = self.tracks.get(track_id) else {
                continue;
            };
            if !track.kind.is_video() || track.muted {
                continue;
            }
            let Some(leg) = track.legs.get(&id).filter(|leg| leg.ready) else {
                continue;
            };
            let Some(target) = leg.forwarder.target() else {
                continue;
            };
            let waiting = leg.forwarder.current() != Some(target);
            let quiet = track
                .layers
                .get(usize::from(target))
                .is_some_and(|layer| layer.keyframes.quiet_for(now, SWITCH_RETRY));
            if waiting && quiet {
                pending.push((*track_id, target));
            }
        }
        for (track, layer) in pending {
            tracing::debug!(subscriber = %id, %track, layer, "layer switch still waits; asking again");
            self.request_switch_keyframe(now, track, layer);
        }
    }

    /// Asks `track`'s publisher for the keyframe of `layer` that a leg's switch waits for.
    pub(super) fn request_switch_keyframe(&mut self, now: Instant, track: TrackId, layer: u8) {
        self.request_layer_keyframe(
            now,
            track,
            layer,
            KeyframeRequestKind::Pli,
            KeyframeReason::LayerSwitch,
        );
    }

    /// `subscriber` renders `track` at `width` × `height` device pixels (0 × 0: not shown):
    /// its leg gets no larger layer than that needs.
    pub(super) fn video_size(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        track: TrackId,
        width: u32,
        height: u32,
    ) -> Result<(), CoreError> {
        if !self.participants.contains_key(&subscriber) {
            return Err(CoreError::UnknownParticipant(subscriber));
        }
        let leg = self
            .tracks
            .get_mut(&track)
            .and_then(|t| t.legs.get_mut(&subscriber))
            .ok_or(CoreError::UnknownTrack(track))?;
        leg.size = Some((width.min(MAX_VIDEO_SIDE), height.min(MAX_VIDEO_SIDE)));
        self.allocate(now, subscriber);
        Ok(())
    }
}
