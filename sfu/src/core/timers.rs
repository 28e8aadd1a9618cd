use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use super::ids::{ParticipantId, RoomId, TrackId};

/// Everything in the core that waits for a moment in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// The deadline str0m asked for in one participant's `Rtc`.
    Rtc(ParticipantId),
    /// A coalesced keyframe request waits for the throttle interval of its track's layer
    /// (index into the track's layers) to pass.
    Keyframe(TrackId, u8),
    /// The end of a room's active-speaker window.
    Speakers(RoomId),
    /// The next periodic layer decision for one subscriber.
    Allocate(ParticipantId),
}

/// One deadline per [`Timer`], ordered so the next one is found in O(log n) instead of asking
/// every `Rtc` on every poll.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(Instant, Timer)>,
    armed: HashMap<Timer, Instant>,
}

impl Timers {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(old) = self.armed.insert(timer, at) {
            self.queue.remove(&(old, timer));
        }
        self.queue.insert((at, timer));
    }

    pub(crate) fn cancel(&mut self, timer: Timer) {
        if let Some(old) = self.armed.remove(&timer) {
            self.queue.remove(&(old, timer));
        }
    }

    pub(crate) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(at, _)| *at)
    }

    /// Disarms and returns every timer due at `now`. Taken all at once so that a timer re-armed
    /// for `now` while it is handled waits for the next call instead of spinning.
    pub(crate) fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let mut due = Vec::new();
        while let Some(&(at, timer)) = self.queue.first() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            self.armed.remove(&timer);
            due.push(timer);
        }
        due
    }

    pub(crate) fn len(&self) -> usize {
        self.armed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rearming_replaces_and_due_timers_come_out_in_order() {
        let t0 = Instant::now();
        let a = Timer::Rtc(ParticipantId(1));
        let b = Timer::Rtc(ParticipantId(2));
        let mut timers = Timers::default();
        timers.set(a, t0 + Duration::from_secs(5));
        timers.set(b, t0 + Duration::from_secs(2));
        timers.set(a, t0 + Duration::from_secs(1));
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.take_due(t0 + Duration::from_secs(3)), vec![a, b]);
        assert_eq!(timers.next(), None);
        timers.set(a, t0);
        timers.cancel(a);
        assert_eq!(timers.len(), 0);
        assert_eq!(timers.next(), None);
    }
}
