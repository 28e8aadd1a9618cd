//! The few Prometheus series the report reads from the server's `/metrics`: the SFU's RTT
//! histogram (measured from RTCP receiver reports) and its workers' busy time.

/// Cumulative buckets `(upper bound, count)` of a histogram, in the order exposed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram(pub Vec<(f64, f64)>);

impl Histogram {
    /// The buckets of `name` (`name_bucket{…le="x"…} n`) in a Prometheus text exposition,
    /// summed over label sets that share a bound.
    #[must_use]
    pub fn parse(text: &str, name: &str) -> Histogram {
        let prefix = format!("{name}_bucket{{");
        let mut buckets: Vec<(f64, f64)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with(&prefix)) {
            let Some(le) = line
                .split("le=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
            else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                }
            };
            let Some(count) = line.rsplit(' ').next().and_then(|c| c.parse::<f64>().ok()) else {
                continue;
            };
            match buckets.iter_mut().find(|(b, _)| *b == bound) {
                Some(bucket) => bucket.1 += count,
                None => buckets.push((bound, count)),
            }
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram(buckets)
    }

    /// The observations made between `earlier` and `self`.
    #[must_use]
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram(
            self.0
                .iter()
                .map(|(bound, count)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(b, _)| b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (*bound, (count - before).max(0.0))
                })
                .collect(),
        )
    }

    /// Observations counted.
    #[must_use]
    pub fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile (0–1), interpolated linearly inside its bucket as Prometheus's
    /// `histogram_quantile` does; the highest finite bound when it falls in `+Inf`.
    #[must_use]
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.0 {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let width = count - lower.1;
                let within = if width > 0.0 {
                    (rank - lower.1) / width
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * within);
            }
            lower = (bound, count);
        }
        None
    }
}

/// The sum of every sample of counter `name` (all label sets).
#[must_use]
pub fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of the samples of counter `name` whose labels include `label` (e.g.
/// `counter="forwarded_packets"`).
#[must_use]
pub fn counter_labelled(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('{'))
                .and_then(|rest| rest.split_once('}'))
                .is_some_and(|(labels, _)| labels.split(',').any(|l| l == label))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE bedside_sfu_rtt_seconds histogram\n\
bedside_sfu_rtt_seconds_bucket{le=\"0.001\"} 10\n\
bedside_sfu_rtt_seconds_bucket{le=\"0.01\"} 90\n\
bedside_sfu_rtt_seconds_bucket{le=\"0.1\"} 100\n\
bedside_sfu_rtt_seconds_bucket{le=\"+Inf\"} 100\n\
bedside_sfu_rtt_seconds_sum 0.5\n\
bedside_sfu_rtt_seconds_count 100\n\
bedside_sfu_worker_busy_seconds_total{worker=\"0\"} 1.5\n\
bedside_sfu_worker_busy_seconds_total{worker=\"1\"} 2.5\n\
bedside_sfu_events_total{counter=\"forwarded_packets\"} 1200\n\
bedside_sfu_events_total{counter=\"forwarded_packets_x\"} 7\n";

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = Histogram::parse(TEXT, "bedside_sfu_rtt_seconds");
        assert_eq!(h.count(), 100.0);
        let p50 = h.quantile(0.5).unwrap_or_default();
        assert!((p50 - 0.005_5).abs() < 1e-9, "{p50}");
        let earlier = Histogram(vec![
            (0.001, 10.0),
            (0.01, 10.0),
            (0.1, 10.0),
            (f64::INFINITY, 10.0),
        ]);
        let delta = h.since(&earlier);
        assert_eq!(delta.count(), 90.0);
        let median = delta.quantile(0.5).unwrap_or_default();
        assert!(median > 0.001 && median < 0.01, "{median}");
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn counters_sum_over_labels() {
        assert_eq!(
            counter_sum(TEXT, "bedside_sfu_worker_busy_seconds_total"),
            4.0
        );
        assert_eq!(counter_sum(TEXT, "bedside_sfu_worker_busy"), 0.0);
        let events = "bedside_sfu_events_total";
        assert_eq!(
            counter_labelled(TEXT, events, "counter=\"forwarded_packets\""),
            1200.0
        );
        assert_eq!(counter_labelled(TEXT, events, "counter=\"nacks\""), 0.0);
    }
}
