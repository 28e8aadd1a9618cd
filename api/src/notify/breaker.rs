//! A circuit breaker per transport. After `threshold` consecutive provider failures it
//! opens for `cooldown`: the outbox stops calling the provider and pushes due
//! notifications back without spending their attempts, so an outage neither hammers the
//! provider nor burns every message's retries. When the cooldown has passed the next
//! delivery is a trial: success closes the breaker, failure opens it again at once.
//!
//! Time is an argument (Unix milliseconds, as stored in the outbox), so the state machine
//! is tested without waiting.

use std::time::Duration;

/// Whether the outbox may call the provider now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Closed, or open with its cooldown over (a trial send).
    Pass,
    /// Open until this Unix millisecond; do not call the provider.
    Hold(i64),
}

/// The breaker of one transport.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown_ms: i64,
    failures: u32,
    open_until: Option<i64>,
}

impl Breaker {
    /// A closed breaker opening after `threshold` consecutive failures for `cooldown`.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown_ms: i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX),
            failures: 0,
            open_until: None,
        }
    }

    /// May a delivery be attempted at `now`?
    pub fn gate(&self, now: i64) -> Gate {
        match self.open_until {
            Some(until) if now < until => Gate::Hold(until),
            _ => Gate::Pass,
        }
    }

    /// Whether the breaker is open at `now`.
    pub fn is_open(&self, now: i64) -> bool {
        matches!(self.gate(now), Gate::Hold(_))
    }

    /// A delivery succeeded: close.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.open_until = None;
    }

    /// A delivery failed at `now`. Returns when the breaker now stays open until, if this
    /// failure opened it (or re-opened it after a failed trial).
    pub fn failed(&mut self, now: i64) -> Option<i64> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < self.threshold {
            return None;
        }
        let until = now.saturating_add(self.cooldown_ms);
        self.open_until = Some(until);
        Some(until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_holds_then_trials() {
        let mut breaker = Breaker::new(3, Duration::from_secs(60));
        assert_eq!(breaker.failed(1_000), None);
        breaker.succeeded();
        assert_eq!(breaker.failed(1_000), None, "a success resets the count");
        assert_eq!(breaker.failed(2_000), None);
        assert_eq!(breaker.gate(2_000), Gate::Pass);
        assert_eq!(breaker.failed(3_000), Some(63_000));
        assert_eq!(breaker.gate(3_001), Gate::Hold(63_000));
        assert!(breaker.is_open(62_999));
        assert_eq!(breaker.gate(63_000), Gate::Pass, "cooldown over: a trial");
        assert_eq!(
            breaker.failed(63_000),
            Some(123_000),
            "failed trial re-opens"
        );
        assert!(breaker.is_open(100_000));
        breaker.succeeded();
        assert_eq!(breaker.gate(100_000), Gate::Pass, "successful trial closes");
    }
}
