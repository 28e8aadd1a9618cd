//! Rate limits: per client IP on link calls (redeem, start), per API key on writes.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::error::ApiError;

/// The limiters of one node.
#[derive(Debug)]
pub struct Limiters {
    link_by_ip: DefaultKeyedRateLimiter<IpAddr>,
    writes_by_key: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn quota(per_minute: u32, burst: u32) -> Quota {
    let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Limiters {
    /// Limiters with the configured quotas.
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            link_by_ip: RateLimiter::keyed(quota(config.link_per_ip_per_minute, config.link_burst)),
            writes_by_key: RateLimiter::keyed(quota(
                config.writes_per_key_per_minute,
                config.writes_burst,
            )),
            clock: DefaultClock::default(),
        }
    }

    fn refuse(&self, not_until: governor::NotUntil<governor::clock::QuantaInstant>) -> ApiError {
        let wait = not_until.wait_time_from(self.clock.now());
        ApiError::RateLimited {
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        }
    }

    /// Counts one redeem/start call from `ip`.
    pub fn check_link(&self, ip: IpAddr) -> Result<(), ApiError> {
        self.link_by_ip.check_key(&ip).map_err(|nu| self.refuse(nu))
    }

    /// Counts one write by API key `key_id`.
    pub fn check_write(&self, key_id: &str) -> Result<(), ApiError> {
        self.writes_by_key
            .check_key(&key_id.to_owned())
            .map_err(|nu| self.refuse(nu))
    }

    /// Forgets idle keys so the maps do not grow without bound.
    pub fn prune(&self) {
        self.link_by_ip.retain_recent();
        self.writes_by_key.retain_recent();
    }
}
