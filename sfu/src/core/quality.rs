//! A participant's connection quality, as the server sees its session: packet loss both ways
//! and the round trip, graded once per statistics interval.
//!
//! str0m reports, about once per [`Config::stats_interval`](super::Config::stats_interval),
//! the session's loss both ways over the last second from TWCC (what browsers negotiate), the
//! loss per stream (what the server counts of the participant's streams, and what the
//! participant's RTCP receiver reports say of the server's), and round-trip times. The
//! [`QualityMeter`] keeps the worst of each since the last grade and grades them when the
//! session's statistics come ([`QualityMeter::grade`]): the grade follows the worse of loss and
//! round trip (thresholds in [`Quality::of`]). The session's TWCC loss is used when there is
//! one: the per-stream figures are as old as the last receiver report, so they lag by seconds;
//! they count only for a client without TWCC. A worse grade is reported at once, a better one only after
//! [`RISE_AFTER`] better grades in a row (the worse of them), so that one good second in a bad
//! minute does not flap. A
//! session ICE lost, or checking again for a path, is [`Quality::Lost`] until it is back.
//!
//! Pure: plain values in, a grade out; unit-tested here.

use std::time::Duration;

/// How a participant's connection is, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quality {
    /// Loss under 2% both ways and a round trip under 200 ms.
    Excellent,
    /// Loss under 8% and a round trip under 400 ms: a call holds well.
    Good,
    /// More loss or a longer round trip: audio and video suffer.
    Poor,
    /// ICE lost the session: nothing gets through until it reconnects.
    Lost,
}

impl Quality {
    /// The grade of a loss fraction (0–1, the worse direction) and a round trip.
    pub(crate) fn of(loss: f32, rtt: Option<Duration>) -> Quality {
        let rtt = rtt.unwrap_or_default();
        if loss < 0.02 && rtt < Duration::from_millis(200) {
            Quality::Excellent
        } else if loss < 0.08 && rtt < Duration::from_millis(400) {
            Quality::Good
        } else {
            Quality::Poor
        }
    }
}

/// Grades in a row a better grade must hold before it is reported.
pub(crate) const RISE_AFTER: u8 = 2;

/// The connection-quality state of one participant.
#[derive(Debug, Default)]
pub(crate) struct QualityMeter {
    /// The worst session (TWCC) loss fraction reported since the last grade, if any.
    loss: Option<f32>,
    /// The worst per-stream loss fraction reported since the last grade.
    stream_loss: f32,
    /// The longest round trip reported since the last grade.
    rtt: Option<Duration>,
    /// The grade last reported; `None` before the first.
    reported: Option<Quality>,
    /// While grades better than `reported` come in a row: the worst of them, and how many.
    rising: Option<(Quality, u8)>,
    lost: bool,
}

impl QualityMeter {
    /// The session's loss fraction (0–1) in either direction, from TWCC.
    pub(crate) fn loss(&mut self, fraction: f32) {
        if fraction.is_finite() {
            let fraction = fraction.clamp(0.0, 1.0);
            self.loss = Some(self.loss.map_or(fraction, |l| l.max(fraction)));
        }
    }

    /// One stream's loss fraction (0–1), either direction; used without TWCC only.
    pub(crate) fn stream_loss(&mut self, fraction: f32) {
        if fraction.is_finite() {
            self.stream_loss = self.stream_loss.max(fraction.clamp(0.0, 1.0));
        }
    }

    /// A round-trip time.
    pub(crate) fn rtt(&mut self, rtt: Duration) {
        self.rtt = Some(self.rtt.map_or(rtt, |r| r.max(rtt)));
    }

    /// Grades what was reported since the last grade; returns the grade when it is to be
    /// reported (the first one, a worse one, or a better one that held).
    pub(crate) fn grade(&mut self) -> Option<Quality> {
        let loss = self.loss.take().unwrap_or(self.stream_loss);
        let measured = Quality::of(loss, self.rtt.take());
        self.stream_loss = 0.0;
        if self.lost {
            return None;
        }
        match self.reported {
            Some(reported) if measured == reported => {
                self.rising = None;
                None
            }
            Some(reported) if measured < reported => {
                let (worst, held) = match self.rising {
                    Some((worst, held)) => (worst.max(measured), held + 1),
                    None => (measured, 1),
                };
                if held >= RISE_AFTER {
                    self.report(worst)
                } else {
                    self.rising = Some((worst, held));
                    None
                }
            }
            _ => self.report(measured),
        }
    }

    /// ICE lost the session.
    pub(crate) fn disconnected(&mut self) -> Option<Quality> {
        self.lost = true;
        self.report(Quality::Lost)
    }

    /// ICE is checking again: after the session had a grade, that means its path broke (str0m
    /// leaves a nominated pair only when it stops working, and an ICE restart starts over);
    /// it is lost until a pair works again. At the start it means nothing.
    pub(crate) fn checking(&mut self) -> Option<Quality> {
        if self.reported.is_some() {
            self.disconnected()
        } else {
            None
        }
    }

    /// ICE has the session again; the next grade says how it is.
    pub(crate) fn reconnected(&mut self) {
        if self.lost {
            self.lost = false;
            self.reported = None;
        }
    }

    fn report(&mut self, quality: Quality) -> Option<Quality> {
        self.rising = None;
        (self.reported != Some(quality)).then(|| {
            self.reported = Some(quality);
            quality
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn loss_and_round_trip_grade_by_the_worse_of_the_two() {
        assert_eq!(Quality::of(0.0, None), Quality::Excellent);
        assert_eq!(Quality::of(0.01, Some(ms(150))), Quality::Excellent);
        assert_eq!(Quality::of(0.03, Some(ms(20))), Quality::Good);
        assert_eq!(Quality::of(0.0, Some(ms(250))), Quality::Good);
        assert_eq!(Quality::of(0.10, Some(ms(20))), Quality::Poor);
        assert_eq!(Quality::of(0.0, Some(ms(600))), Quality::Poor);
    }

    #[test]
    fn the_first_grade_is_reported_then_only_changes() {
        let mut meter = QualityMeter::default();
        meter.loss(0.0);
        meter.rtt(ms(30));
        assert_eq!(meter.grade(), Some(Quality::Excellent));
        assert_eq!(meter.grade(), None);
    }

    #[test]
    fn the_worst_report_of_an_interval_counts_and_worse_is_reported_at_once() {
        let mut meter = QualityMeter::default();
        assert_eq!(meter.grade(), Some(Quality::Excellent));
        meter.loss(0.01);
        meter.loss(0.12);
        meter.loss(0.0);
        assert_eq!(meter.grade(), Some(Quality::Poor));
        meter.rtt(ms(10));
        meter.rtt(ms(300));
        assert_eq!(meter.grade(), None, "good after poor waits");
        assert_eq!(
            meter.grade(),
            Some(Quality::Good),
            "better two grades in a row: the worse of them"
        );
        assert_eq!(meter.grade(), None);
        assert_eq!(meter.grade(), Some(Quality::Excellent));
        meter.loss(f32::NAN);
        assert_eq!(meter.grade(), None, "a NaN loss says nothing");
    }

    #[test]
    fn stream_loss_counts_only_without_session_loss() {
        let mut meter = QualityMeter::default();
        meter.stream_loss(0.2);
        meter.loss(0.0);
        assert_eq!(meter.grade(), Some(Quality::Excellent), "TWCC says clean");
        meter.stream_loss(0.2);
        assert_eq!(
            meter.grade(),
            Some(Quality::Poor),
            "no TWCC: the streams say"
        );
    }

    #[test]
    fn a_better_grade_must_hold_in_a_row() {
        let mut meter = QualityMeter::default();
        meter.loss(0.2);
        assert_eq!(meter.grade(), Some(Quality::Poor));
        assert_eq!(meter.grade(), None);
        meter.loss(0.2);
        assert_eq!(meter.grade(), None, "poor again resets the climb");
        assert_eq!(meter.grade(), None);
        assert_eq!(meter.grade(), Some(Quality::Excellent));
    }

    #[test]
    fn checking_again_is_lost_but_checking_at_the_start_is_not() {
        let mut meter = QualityMeter::default();
        assert_eq!(meter.checking(), None);
        assert_eq!(meter.grade(), Some(Quality::Excellent));
        assert_eq!(meter.checking(), Some(Quality::Lost));
        meter.reconnected();
        assert_eq!(meter.grade(), Some(Quality::Excellent));
    }

    #[test]
    fn a_lost_session_is_lost_until_ice_is_back() {
        let mut meter = QualityMeter::default();
        assert_eq!(meter.grade(), Some(Quality::Excellent));
        assert_eq!(meter.disconnected(), Some(Quality::Lost));
        assert_eq!(meter.disconnected(), None);
        assert_eq!(meter.grade(), None, "no grade while lost");
        meter.reconnected();
        meter.loss(0.05);
        assert_eq!(
            meter.grade(),
            Some(Quality::Good),
            "the first grade after is reported"
        );
    }
}
