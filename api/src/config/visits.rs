//! `[visits]`: when a visit's links work and how many visits a tenant may make.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// `[visits]`: the join window around a visit and the tenants' quotas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VisitsConfig {
    /// Links open this many minutes before `scheduled_at`.
    pub join_before_minutes: i64,
    /// Links stay usable this many minutes after the scheduled end.
    pub join_after_minutes: i64,
    /// Visits a tenant may create per UTC day.
    pub daily_quota: u32,
    /// Patient link resends allowed per visit per hour.
    pub resends_per_hour: u32,
}

impl Default for VisitsConfig {
    fn default() -> Self {
        Self {
            join_before_minutes: 15,
            join_after_minutes: 15,
            daily_quota: 2000,
            resends_per_hour: 3,
        }
    }
}

impl VisitsConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(0..=1440).contains(&self.join_before_minutes) {
            return Err(ConfigError::new(
                "visits.join_before_minutes",
                "must be between 0 and 1440",
            ));
        }
        if !(0..=1440).contains(&self.join_after_minutes) {
            return Err(ConfigError::new(
                "visits.join_after_minutes",
                "must be between 0 and 1440",
            ));
        }
        Ok(())
    }
}
