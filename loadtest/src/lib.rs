//! Load generator for Bedside: N concurrent video visits, each with a patient and a clinician
//! peer, driven through the real REST API and `/ws` signaling, with receiver-side statistics
//! and host CPU/memory figures. The peers are light str0m sessions ([`lite`]) for capacity
//! runs, or webrtc-rs (an independent WebRTC implementation, [`peer`]) for interop runs.
//!
//! [`run::run`] makes a run and returns a [`report::Report`]; the `bedside-loadtest` binary
//! wraps it with a command line, a progress bar, a table and `--json`. [`peer`] is also used
//! by the root package's interop tests.

pub mod client;
pub mod impair;
pub mod janus;
pub mod lite;
pub mod media;
pub mod peer;
pub mod prom;
pub mod report;
pub mod run;
pub mod stats;
pub mod sys;

use std::time::Duration;

/// Parses a duration such as `60s`, `2m`, `500ms` or `90` (seconds).
///
/// # Errors
/// When the text is not a non-negative number followed by `ms`, `s`, `m` or nothing.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {text:?} (use e.g. 60s, 2m, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit in {text:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

/// Parses a rate such as `20/s`, `600/m` or `20` (per second) into events per second.
///
/// # Errors
/// When the text is not a positive number, optionally followed by `/s` or `/m`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let (number, per) = match text.split_once('/') {
        Some((number, per)) => (number, per),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("not a rate: {text:?} (use e.g. 20/s)"))?;
    let per_second = match per {
        "s" => value,
        "m" => value / 60.0,
        _ => return Err(format!("unknown unit in {text:?}: use /s or /m")),
    };
    if per_second.is_finite() && per_second > 0.0 {
        Ok(per_second)
    } else {
        Err(format!("the rate must be positive: {text:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse_as_the_command_line_writes_them() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert_eq!(parse_rate("20/s"), Ok(20.0));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert_eq!(parse_rate("5"), Ok(5.0));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
