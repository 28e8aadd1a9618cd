//! Which simulcast layer each video leg of one subscriber gets, from the subscriber's
//! bandwidth estimate: the per-subscriber half of adapting media to the network.
//!
//! Every 500 ms (and when an estimate or a layer changes) the core describes the subscriber's
//! video legs ([`LegInput`]: the measured rate of each layer the publisher sends, the highest
//! layer the rendered size calls for, the current target) and its link ([`Link`]: the
//! send-side estimate and what its audio takes), and [`allocate`] answers with a target per
//! leg, `None` meaning paused. Audio is never allocated: it goes first, and video gets what is
//! left.
//!
//! The rules trade reaction against flapping, as LiveKit's and mediasoup's allocators do:
//! step down at once when the current layers do not fit; pause a leg only when not even its
//! lowest layer fits for [`PAUSE_HOLD`] (after [`QUICK_PAUSE`] when the budget is under half
//! of it); climb one layer at a time, only after the higher one fit for [`UP_HOLD`], and not
//! within [`DOWN_COOLDOWN`] of a step down the falling link forced; but with twice the room
//! the better layers need, climb to them at once. A paused leg resumes only after its lowest
//! layer fit for the resume hold, however much room there seems to be: an estimate measured
//! while only audio flows comes from probes, and resuming on a wrong one costs audio. The
//! hold starts at [`UP_HOLD`] and doubles (up to [`MAX_RESUME_HOLD`]) each time a leg is
//! paused again within [`RESUME_PROBATION`] of resuming.
//!
//! Pure: plain values in, targets out, with the hysteresis timers in [`AllocState`]; no str0m,
//! clock or socket, so the rules are tested directly below.

use std::time::{Duration, Instant};

/// How long the layers must keep fitting before a leg climbs (or resumes) one layer.
pub(crate) const UP_HOLD: Duration = Duration::from_secs(3);
/// How long not even the lowest layer must fit before a leg is paused: GCC's estimate dips
/// for a second or two as a link settles (at 400 kbit/s in virtual time, to half the link
/// for 2 s now and then), and video that stops for that is worse than video held back by
/// the pacer.
pub(crate) const PAUSE_HOLD: Duration = Duration::from_secs(4);
/// How long a budget under half the lowest layer must last before a leg is paused: one
/// estimate that dips is not a link.
pub(crate) const QUICK_PAUSE: Duration = Duration::from_millis(500);
/// A leg paused again this soon after it resumed doubles the next resume's hold.
pub(crate) const RESUME_PROBATION: Duration = Duration::from_secs(10);
/// The longest resume hold.
pub(crate) const MAX_RESUME_HOLD: Duration = Duration::from_secs(24);
/// After a step down, no step up for this long (unless the budget is twice the need).
pub(crate) const DOWN_COOLDOWN: Duration = Duration::from_secs(10);
/// The share of the estimate media may use: the rest absorbs the estimate's error, RTCP and
/// retransmissions.
const USABLE: f64 = 0.9;
/// Kept free beside audio and video, for RTCP and retransmissions.
const HEADROOM_BPS: u64 = 20_000;
/// A layer needs its measured rate plus this share, for its keyframes and rate swings.
const NEED_MARGIN: f64 = 1.1;

/// One video leg as the allocator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LegInput {
    /// The rate of each layer of the track, lowest first, in bit/s; `None` for a layer the
    /// publisher is not sending.
    pub(crate) rates: Vec<Option<u64>>,
    /// The highest layer worth sending for the size the subscriber renders the video at.
    pub(crate) cap: u8,
    /// The layer the leg is set to now; `None` while paused.
    pub(crate) target: Option<u8>,
    /// Legs with a higher priority choose first in every round of the share: a screen share
    /// (which must stay readable) before a camera.
    pub(crate) priority: u8,
}

impl LegInput {
    /// The layers the publisher sends up to the size cap, lowest first.
    fn usable(&self) -> impl Iterator<Item = u8> + '_ {
        (0u8..)
            .zip(&self.rates)
            .filter(|(index, rate)| *index <= self.cap && rate.is_some())
            .map(|(index, _)| index)
    }

    /// What `layer` needs on the link, in bit/s.
    pub(crate) fn need(&self, layer: Option<u8>) -> u64 {
        let rate = layer
            .and_then(|l| self.rates.get(usize::from(l)).copied().flatten())
            .unwrap_or(0);
        (rate as f64 * NEED_MARGIN) as u64
    }

    /// What the lowest usable layer needs: what keeps the leg unpaused.
    pub(crate) fn lowest_need(&self) -> u64 {
        self.need(self.usable().next())
    }

    /// What the best usable layer needs: the most worth probing for.
    pub(crate) fn best_need(&self) -> u64 {
        self.need(self.usable().last())
    }

    /// What the next usable layer above `target` needs (the lowest one while paused, the
    /// target's own at the top): the least worth probing for.
    pub(crate) fn next_need(&self, target: Option<u8>) -> u64 {
        self.need(self.above(target).or(target))
    }

    /// The next usable layer above `layer` (the lowest one above `None`).
    fn above(&self, layer: Option<u8>) -> Option<u8> {
        self.usable()
            .find(|l| layer.is_none_or(|current| *l > current))
    }
}

/// The subscriber's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    /// The send-side bandwidth estimate towards the subscriber (TWCC); `None` when there is
    /// none (the subscriber sends no transport-wide feedback), and then layers follow only the
    /// publisher and the size.
    pub(crate) estimate: Option<u64>,
    /// The rate of the audio forwarded to the subscriber, which comes first.
    pub(crate) audio: u64,
}

impl Link {
    /// What video may use, in bit/s.
    fn budget(&self, estimate: u64) -> u64 {
        ((estimate as f64 * USABLE) as u64).saturating_sub(self.audio + HEADROOM_BPS)
    }

    /// Whether the link holds the audio twice over, as redundant audio needs, beside `video`
    /// (without an estimate, whether it does is not known, and loss alone decides).
    pub(crate) fn holds_audio_twice(&self, video: u64) -> bool {
        self.estimate
            .is_none_or(|estimate| self.budget(estimate) >= self.audio + video)
    }
}

/// The hysteresis timers of one subscriber.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AllocState {
    /// Since when some leg could climb.
    upgrade_since: Option<Instant>,
    /// Since when some leg's lowest layer does not fit.
    pause_since: Option<Instant>,
    /// The last step down or pause forced by a falling budget.
    last_down: Option<Instant>,
    /// The budget of the previous decision, to tell a falling link from other changes.
    last_budget: Option<u64>,
    /// How long the lowest layer must fit before a paused leg resumes; `None` for
    /// [`UP_HOLD`].
    resume_hold: Option<Duration>,
    /// When a paused leg last resumed.
    last_resume: Option<Instant>,
}

impl AllocState {
    fn resume_hold(&self) -> Duration {
        self.resume_hold.unwrap_or(UP_HOLD)
    }
}

/// The target of every leg in `legs` (in the same order): see the [module docs](self).
pub(crate) fn allocate(
    now: Instant,
    link: Link,
    legs: &[LegInput],
    state: &mut AllocState,
) -> Vec<Option<u8>> {
    let Some(estimate) = link.estimate else {
        *state = AllocState::default();
        return legs
            .iter()
            .map(|leg| leg.usable().last().or(leg.target))
            .collect();
    };
    let budget = link.budget(estimate);
    // Only a falling link makes climbing cautious; a publisher's layer or a measured rate
    // changing does not.
    let falling = state.last_budget.is_some_and(|last| budget < last);
    state.last_budget = Some(budget);
    let fit = fit(budget, legs);
    let mut targets: Vec<Option<u8>> = legs.iter().map(|leg| leg.target).collect();
    let mut wants_up = false;
    let mut wants_pause = false;
    for ((leg, fit), target) in legs.iter().zip(&fit).zip(targets.iter_mut()) {
        match (*fit, leg.target) {
            // Nothing the publisher sends yet: leave the leg as it is.
            _ if leg.usable().next().is_none() => {}
            (Some(fit), Some(current)) if fit < current => {
                *target = Some(fit);
                if falling {
                    state.last_down = Some(now);
                }
            }
            (None, Some(_)) => {
                wants_pause = true;
                let lowest = leg.usable().next();
                let since = *state.pause_since.get_or_insert(now);
                let held = now - since;
                if held >= PAUSE_HOLD || (held >= QUICK_PAUSE && budget < leg.need(lowest) / 2) {
                    *target = None;
                    let relapse = state
                        .last_resume
                        .is_some_and(|resumed| now - resumed < RESUME_PROBATION);
                    state.resume_hold =
                        relapse.then(|| (state.resume_hold() * 2).min(MAX_RESUME_HOLD));
                } else if lowest < leg.target {
                    *target = lowest;
                }
                if falling || target.is_none() {
                    state.last_down = Some(now);
                }
            }
            (Some(fit), current) if current.is_none_or(|c| fit > c) => wants_up = true,
            _ => {}
        }
    }
    if !wants_pause {
        state.pause_since = None;
    }
    if !wants_up {
        state.upgrade_since = None;
        return targets;
    }
    let since = *state.upgrade_since.get_or_insert(now);
    let need: u64 = legs.iter().zip(&fit).map(|(leg, fit)| leg.need(*fit)).sum();
    // With twice the room the better layers need, nothing is at risk: take them at once.
    let ample = budget >= 2 * need;
    let cooled = state
        .last_down
        .is_none_or(|down| now - down >= DOWN_COOLDOWN);
    let resuming = legs
        .iter()
        .zip(&fit)
        .any(|(leg, fit)| leg.target.is_none() && fit.is_some());
    if (resuming && now - since < state.resume_hold())
        || (!ample && (now - since < UP_HOLD || !cooled))
    {
        return targets;
    }
    for ((leg, fit), target) in legs.iter().zip(&fit).zip(targets.iter_mut()) {
        if fit.is_some_and(|fit| leg.target.is_none_or(|current| fit > current)) {
            *target = if ample { *fit } else { leg.above(leg.target) };
            if leg.target.is_none() {
                state.last_resume = Some(now);
            }
        }
    }
    state.upgrade_since = Some(now);
    targets
}

/// The best layers that fit `budget` together: every leg climbs one layer per round, in
/// turn (higher priority first), while the total fits, so legs share the link evenly.
fn fit(budget: u64, legs: &[LegInput]) -> Vec<Option<u8>> {
    let mut fit: Vec<Option<u8>> = vec![None; legs.len()];
    let mut order: Vec<usize> = (0..legs.len()).collect();
    order.sort_by_key(|&index| std::cmp::Reverse(legs[index].priority));
    let mut used = 0;
    loop {
        let mut climbed = false;
        for &index in &order {
            let (leg, layer) = (&legs[index], &mut fit[index]);
            let Some(next) = leg.above(*layer) else {
                continue;
            };
            let more = leg.need(Some(next)) - leg.need(*layer).min(leg.need(Some(next)));
            if used + more <= budget {
                used += more;
                *layer = Some(next);
                climbed = true;
            }
        }
        if !climbed {
            return fit;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: u64 = 150_000;
    const H: u64 = 500_000;
    const F: u64 = 1_500_000;

    fn leg(target: Option<u8>) -> LegInput {
        LegInput {
            rates: vec![Some(Q), Some(H), Some(F)],
            cap: 2,
            target,
            priority: 0,
        }
    }

    fn link(estimate: u64) -> Link {
        Link {
            estimate: Some(estimate),
            audio: 60_000,
        }
    }

    /// The estimate that leaves exactly `video` for video.
    fn for_video(video: u64) -> u64 {
        ((video + 80_000) as f64 / USABLE).ceil() as u64 + 1
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    #[test]
    fn without_an_estimate_a_leg_gets_the_best_layer_sent_up_to_its_size() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let mut small = leg(Some(2));
        small.cap = 1;
        let mut partial = leg(None);
        partial.rates[2] = None;
        let none = Link {
            estimate: None,
            audio: 0,
        };
        let targets = allocate(t0, none, &[leg(Some(0)), small, partial], &mut state);
        assert_eq!(targets, vec![Some(2), Some(1), Some(1)]);
    }

    #[test]
    fn steps_down_at_once_to_what_fits() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let h_fits = for_video((H as f64 * NEED_MARGIN) as u64);
        assert_eq!(
            allocate(t0, link(h_fits), &[leg(Some(2))], &mut state),
            vec![Some(1)]
        );
        let q_fits = for_video((Q as f64 * NEED_MARGIN) as u64);
        assert_eq!(
            allocate(t0, link(q_fits), &[leg(Some(2))], &mut state),
            vec![Some(0)]
        );
    }

    #[test]
    fn pauses_only_after_the_hold_unless_far_too_short() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        // Just under what q needs: step to q now, pause after PAUSE_HOLD.
        let short = link(for_video(Q));
        assert_eq!(
            allocate(t0, short, &[leg(Some(2))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 3.9), short, &[leg(Some(0))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 4.0), short, &[leg(Some(0))], &mut state),
            vec![None]
        );
        // Under half of q: once that held for QUICK_PAUSE.
        let mut state = AllocState::default();
        let tiny = link(for_video(Q / 3));
        assert_eq!(
            allocate(t0, tiny, &[leg(Some(1))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 0.5), tiny, &[leg(Some(0))], &mut state),
            vec![None]
        );
    }

    #[test]
    fn a_short_dip_does_not_pause() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let short = link(for_video(Q));
        let q_fits = link(for_video(Q * 2));
        assert_eq!(
            allocate(t0, short, &[leg(Some(0))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 1.0), q_fits, &[leg(Some(0))], &mut state),
            vec![Some(0)]
        );
        // The dip ended, so a new one starts its hold again.
        assert_eq!(
            allocate(secs(t0, 2.5), short, &[leg(Some(0))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 6.4), short, &[leg(Some(0))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 6.5), short, &[leg(Some(0))], &mut state),
            vec![None]
        );
    }

    #[test]
    fn climbs_one_layer_per_hold_and_not_soon_after_a_step_down() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let plenty = link(for_video(4 * F));
        assert_eq!(
            allocate(t0, plenty, &[leg(Some(2))], &mut state),
            vec![Some(2)]
        );
        // A step down (to q) because the link fell starts the cooldown.
        let q_only = link(for_video(Q * 2));
        assert_eq!(
            allocate(t0, q_only, &[leg(Some(2))], &mut state),
            vec![Some(0)]
        );
        // Plenty again, but not twice the need: wait for the cooldown.
        let enough = link(for_video((H + F) / 2 + F / 2));
        let mut target = Some(0);
        for s in [1.0, 4.0, 9.9] {
            target = allocate(secs(t0, s), enough, &[leg(target)], &mut state)[0];
            assert_eq!(target, Some(0), "at {s} s");
        }
        target = allocate(secs(t0, 10.0), enough, &[leg(target)], &mut state)[0];
        assert_eq!(target, Some(1), "one layer at a time");
        target = allocate(secs(t0, 12.9), enough, &[leg(target)], &mut state)[0];
        assert_eq!(target, Some(1));
        target = allocate(secs(t0, 13.0), enough, &[leg(target)], &mut state)[0];
        assert_eq!(target, Some(2));
        // Twice the need skips the cooldown and the hold, and climbs all the way.
        let mut state = AllocState::default();
        assert_eq!(
            allocate(t0, plenty, &[leg(Some(2))], &mut state),
            vec![Some(2)]
        );
        assert_eq!(
            allocate(t0, q_only, &[leg(Some(2))], &mut state),
            vec![Some(0)]
        );
        assert_eq!(
            allocate(secs(t0, 0.5), plenty, &[leg(Some(0))], &mut state),
            vec![Some(2)]
        );
    }

    #[test]
    fn a_step_down_the_link_did_not_cause_has_no_cooldown() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let steady = link(for_video(F));
        // The top layer's rate rose above the link: down at once, up after the hold alone.
        let mut heavy = leg(Some(2));
        heavy.rates[2] = Some(2 * F);
        assert_eq!(allocate(t0, steady, &[heavy], &mut state), vec![Some(1)]);
        let mut light = leg(Some(1));
        light.rates[2] = Some(F / 2);
        assert_eq!(
            allocate(secs(t0, 0.5), steady, &[light.clone()], &mut state),
            vec![Some(1)]
        );
        assert_eq!(
            allocate(secs(t0, 3.5), steady, &[light], &mut state),
            vec![Some(2)]
        );
    }

    #[test]
    fn a_paused_leg_resumes_on_its_lowest_layer_after_the_hold() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let q_fits = link(for_video(Q * 2));
        assert_eq!(allocate(t0, q_fits, &[leg(None)], &mut state), vec![None]);
        assert_eq!(
            allocate(secs(t0, 3.0), q_fits, &[leg(None)], &mut state),
            vec![Some(0)]
        );
    }

    #[test]
    fn a_leg_paused_again_soon_after_resuming_waits_twice_as_long_next_time() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let tiny = link(for_video(Q / 3));
        let plenty = link(for_video(4 * F));
        let mut target = Some(0);
        for s in [0.0, 0.5] {
            target = allocate(secs(t0, s), tiny, &[leg(target)], &mut state)[0];
        }
        assert_eq!(target, None);
        // However much room the estimate shows, the resume waits for its hold.
        target = allocate(secs(t0, 1.0), plenty, &[leg(target)], &mut state)[0];
        assert_eq!(target, None);
        target = allocate(secs(t0, 4.0), plenty, &[leg(target)], &mut state)[0];
        assert_eq!(
            target,
            Some(2),
            "resumed after UP_HOLD, at once to what is ample"
        );
        // Paused again 5 s later: the next resume waits 6 s, then 12, up to the cap.
        let mut at = 9.0;
        for hold in [6.0, 12.0, 24.0, 24.0] {
            target = allocate(secs(t0, at), tiny, &[leg(target)], &mut state)[0];
            target = allocate(secs(t0, at + 0.5), tiny, &[leg(target)], &mut state)[0];
            assert_eq!(target, None);
            let start = at + 1.0;
            target = allocate(secs(t0, start), plenty, &[leg(target)], &mut state)[0];
            target = allocate(
                secs(t0, start + hold - 0.1),
                plenty,
                &[leg(target)],
                &mut state,
            )[0];
            assert_eq!(target, None, "still waiting {hold} s");
            target = allocate(secs(t0, start + hold), plenty, &[leg(target)], &mut state)[0];
            assert_eq!(target, Some(2), "resumed after {hold} s");
            at = start + hold + 5.0;
        }
        // A leg that stayed resumed past the probation starts from UP_HOLD again.
        at += 20.0;
        target = allocate(secs(t0, at), tiny, &[leg(target)], &mut state)[0];
        target = allocate(secs(t0, at + 0.5), tiny, &[leg(target)], &mut state)[0];
        assert_eq!(target, None);
        target = allocate(secs(t0, at + 1.0), plenty, &[leg(target)], &mut state)[0];
        target = allocate(secs(t0, at + 4.0), plenty, &[leg(target)], &mut state)[0];
        assert_eq!(target, Some(2));
    }

    #[test]
    fn legs_share_the_budget_evenly_and_respect_their_size() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        // Room for two h layers, not for an f beside a q.
        let two_h = for_video((2.0 * H as f64 * NEED_MARGIN) as u64 + 1_000);
        let legs = [leg(Some(2)), leg(Some(2))];
        assert_eq!(
            allocate(t0, link(two_h), &legs, &mut state),
            vec![Some(1), Some(1)]
        );
        // A leg shown small takes q, leaving the other room for f.
        let mut small = leg(Some(2));
        small.cap = 0;
        let room = for_video(((Q + F) as f64 * NEED_MARGIN) as u64 + 1_000);
        let mut state = AllocState::default();
        assert_eq!(
            allocate(t0, link(room), &[small, leg(Some(2))], &mut state),
            vec![Some(0), Some(2)]
        );
    }

    #[test]
    fn a_screen_share_chooses_before_a_camera() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        // One encoding of 800 kbit/s; the link holds it or the camera's h, not both.
        let screen = LegInput {
            rates: vec![Some(800_000)],
            cap: 0,
            target: Some(0),
            priority: 1,
        };
        let room = link(for_video(
            ((800_000 + Q) as f64 * NEED_MARGIN) as u64 + 1_000,
        ));
        assert_eq!(
            allocate(t0, room, &[leg(Some(2)), screen], &mut state),
            vec![Some(0), Some(0)],
            "the camera drops to q, the screen share stays"
        );
    }

    #[test]
    fn a_leg_whose_publisher_sends_nothing_is_left_alone() {
        let t0 = Instant::now();
        let mut state = AllocState::default();
        let silent = LegInput {
            rates: vec![None, None, None],
            cap: 2,
            target: Some(2),
            priority: 0,
        };
        assert_eq!(
            allocate(t0, link(10_000), &[silent], &mut state),
            vec![Some(2)]
        );
    }

    #[test]
    fn redundant_audio_needs_room_for_the_audio_twice_beside_the_lowest_layers() {
        let floor = leg(Some(0)).lowest_need();
        assert_eq!(floor, (Q as f64 * NEED_MARGIN) as u64);
        // The audio again (60 kbit/s) and q fit: room.
        assert!(link(for_video(60_000 + floor)).holds_audio_twice(floor));
        assert!(!link(for_video(60_000 + floor) - 2_000).holds_audio_twice(floor));
        // Without an estimate, whether there is room is not known: loss alone decides.
        let unknown = Link {
            estimate: None,
            audio: 60_000,
        };
        assert!(unknown.holds_audio_twice(floor));
    }
}
