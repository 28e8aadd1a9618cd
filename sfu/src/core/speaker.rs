//! Who is speaking in a room, from the audio levels its publishers put on their packets.
//!
//! Browsers write the level of every audio packet in the RFC 6464 header extension (str0m
//! reads it into `ExtensionValues::audio_level`, in dBov: 0 is the loudest, -127 silence). The
//! [`Speakers`] of a room collect them over a [`WINDOW`] and then decide, like LiveKit's and
//! Jitsi's dominant-speaker rules but simpler (a visit has two or three people): a participant
//! speaks in a window when at least [`MIN_LOUD_SHARE`] of its packets are louder than
//! [`LOUD_DBOV`]; the loudest of those (by mean excess over the threshold) becomes the active
//! speaker; a current speaker who still speaks is replaced only by someone [`SWITCH_RATIO`]
//! times louder, so that two people talking over each other do not make it flap; after
//! [`QUIET_WINDOWS`] windows in which nobody speaks there is no active speaker.
//!
//! Pure: it sees levels and window ends, never a clock or a session, so it is unit-tested here
//! directly.

use std::time::Duration;

use super::ids::ParticipantId;

/// How long the levels of one decision are collected.
pub(crate) const WINDOW: Duration = Duration::from_millis(500);

/// A packet at least this loud (dBov) counts as speech; quieter is silence or background.
pub(crate) const LOUD_DBOV: i8 = -50;

/// The share of a participant's packets in a window that must be speech for it to speak.
const MIN_LOUD_SHARE: f64 = 0.3;

/// Fewer packets than this in a window (100 ms of 20 ms Opus frames) say nothing.
const MIN_PACKETS: u32 = 5;

/// How much louder someone must be to take over from a speaker who still speaks.
const SWITCH_RATIO: f64 = 1.5;

/// Windows without speech after which nobody is the active speaker (1.5 s).
const QUIET_WINDOWS: u8 = 3;

/// One participant's packets in the current window.
#[derive(Debug, Clone, Copy)]
struct Levels {
    participant: ParticipantId,
    packets: u32,
    loud: u32,
    /// Sum over loud packets of how many dB they are above [`LOUD_DBOV`] (plus one).
    excess: u32,
}

impl Levels {
    /// How loudly this participant spoke in the window, when it spoke at all.
    fn score(&self) -> Option<f64> {
        let packets = f64::from(self.packets);
        let speaks =
            self.packets >= MIN_PACKETS && f64::from(self.loud) >= MIN_LOUD_SHARE * packets;
        speaks.then(|| f64::from(self.excess) / packets)
    }
}

/// The end of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decision {
    /// `Some` when the active speaker changed: the new one, or `None` for nobody.
    pub(crate) changed: Option<Option<ParticipantId>>,
    /// Whether another window must be collected (someone sent audio, or a speaker is still
    /// to be cleared after silence).
    pub(crate) again: bool,
}

/// The active-speaker state of one room.
#[derive(Debug, Default)]
pub(crate) struct Speakers {
    window: Vec<Levels>,
    current: Option<ParticipantId>,
    quiet: u8,
    /// Whether a window is being collected (the room's timer is armed).
    collecting: bool,
}

impl Speakers {
    /// Records one audio packet of `participant` at `dbov`. Returns `true` when this packet
    /// opens a window: the caller arms the room's timer for [`WINDOW`] from now.
    pub(crate) fn observe(&mut self, participant: ParticipantId, dbov: i8) -> bool {
        let index = match self
            .window
            .iter()
            .position(|l| l.participant == participant)
        {
            Some(index) => index,
            None => {
                self.window.push(Levels {
                    participant,
                    packets: 0,
                    loud: 0,
                    excess: 0,
                });
                self.window.len() - 1
            }
        };
        let levels = &mut self.window[index];
        levels.packets += 1;
        if dbov >= LOUD_DBOV {
            levels.loud += 1;
            levels.excess += u32::from(dbov.abs_diff(LOUD_DBOV)) + 1;
        }
        let opens = !self.collecting;
        self.collecting = true;
        opens
    }

    /// Ends the current window and decides who speaks.
    pub(crate) fn decide(&mut self) -> Decision {
        let scores: Vec<(ParticipantId, f64)> = self
            .window
            .iter()
            .filter_map(|l| l.score().map(|s| (l.participant, s)))
            .collect();
        let heard = !self.window.is_empty();
        self.window.clear();
        let loudest = scores
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let current_score = self
            .current
            .and_then(|c| scores.iter().find(|(p, _)| *p == c).map(|(_, s)| *s));
        let next = match (loudest, current_score) {
            (None, _) => {
                self.quiet = self.quiet.saturating_add(1);
                if self.quiet >= QUIET_WINDOWS {
                    None
                } else {
                    self.current
                }
            }
            (Some((_, loudest)), Some(current)) if loudest < SWITCH_RATIO * current => {
                self.quiet = 0;
                self.current
            }
            (Some((loudest, _)), _) => {
                self.quiet = 0;
                Some(loudest)
            }
        };
        let changed = (next != self.current).then_some(next);
        self.current = next;
        self.collecting = heard || self.current.is_some();
        Decision {
            changed,
            again: self.collecting,
        }
    }

    /// `participant` left the room: its levels are dropped, and if it was the active speaker
    /// nobody is. Returns the change, if any.
    pub(crate) fn forget(&mut self, participant: ParticipantId) -> Option<Option<ParticipantId>> {
        self.window.retain(|l| l.participant != participant);
        if self.current == Some(participant) {
            self.current = None;
            self.quiet = 0;
            Some(None)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: ParticipantId = ParticipantId(1);
    const B: ParticipantId = ParticipantId(2);

    /// One window of 25 packets (500 ms of Opus) from each `(participant, dBov)`, then the
    /// decision.
    fn window(speakers: &mut Speakers, levels: &[(ParticipantId, i8)]) -> Decision {
        for _ in 0..25 {
            for &(participant, dbov) in levels {
                speakers.observe(participant, dbov);
            }
        }
        speakers.decide()
    }

    #[test]
    fn the_one_who_speaks_becomes_the_active_speaker_at_the_end_of_the_window() {
        let mut speakers = Speakers::default();
        assert!(speakers.observe(A, -20), "the first packet opens a window");
        assert!(!speakers.observe(B, -127), "later ones do not");
        let decision = window(&mut speakers, &[(A, -20), (B, -127)]);
        assert_eq!(decision.changed, Some(Some(A)));
        assert!(decision.again);
        assert_eq!(
            window(&mut speakers, &[(A, -25), (B, -110)]).changed,
            None,
            "no change, no event"
        );
    }

    #[test]
    fn background_noise_and_short_bursts_are_not_speech() {
        let mut speakers = Speakers::default();
        assert_eq!(window(&mut speakers, &[(A, -60), (B, -127)]).changed, None);
        // 4 loud packets of 25 (16%): a cough, a click.
        for i in 0..25 {
            speakers.observe(A, if i < 4 { -10 } else { -90 });
        }
        assert_eq!(speakers.decide().changed, None);
        // Fewer packets than a decision needs, however loud.
        for _ in 0..4 {
            speakers.observe(B, 0);
        }
        assert_eq!(speakers.decide().changed, None);
    }

    #[test]
    fn a_speaker_keeps_the_floor_unless_someone_is_clearly_louder() {
        let mut speakers = Speakers::default();
        window(&mut speakers, &[(A, -30)]);
        // B talks over A, a little louder: A keeps it.
        assert_eq!(window(&mut speakers, &[(A, -30), (B, -27)]).changed, None);
        // B much louder (excess 24 against 21 is not enough; 44 against 21 is).
        assert_eq!(
            window(&mut speakers, &[(A, -30), (B, -7)]).changed,
            Some(Some(B))
        );
        // A stops: B stays; A alone again takes over at once.
        assert_eq!(window(&mut speakers, &[(A, -100), (B, -20)]).changed, None);
        assert_eq!(
            window(&mut speakers, &[(A, -30), (B, -100)]).changed,
            Some(Some(A))
        );
    }

    #[test]
    fn silence_clears_the_active_speaker_after_three_windows_and_then_the_timer_stops() {
        let mut speakers = Speakers::default();
        window(&mut speakers, &[(A, -20)]);
        assert_eq!(window(&mut speakers, &[(A, -100)]).changed, None);
        assert_eq!(window(&mut speakers, &[(A, -100)]).changed, None);
        let cleared = window(&mut speakers, &[(A, -100)]);
        assert_eq!(cleared.changed, Some(None));
        assert!(cleared.again, "audio still arrives");
        // No packets at all (everyone muted): one more window, then nothing to collect.
        let idle = speakers.decide();
        assert_eq!(idle.changed, None);
        assert!(!idle.again);
        assert!(
            speakers.observe(B, -20),
            "the next packet opens a window again"
        );
    }

    #[test]
    fn a_speaker_who_goes_silent_without_packets_is_cleared_by_the_timer() {
        let mut speakers = Speakers::default();
        window(&mut speakers, &[(A, -20)]);
        for _ in 0..2 {
            let decision = speakers.decide();
            assert_eq!(decision.changed, None);
            assert!(decision.again, "a speaker is still to be cleared");
        }
        let cleared = speakers.decide();
        assert_eq!(cleared.changed, Some(None));
        assert!(!cleared.again);
    }

    #[test]
    fn a_departing_speaker_is_cleared_at_once() {
        let mut speakers = Speakers::default();
        window(&mut speakers, &[(A, -20), (B, -127)]);
        assert_eq!(speakers.forget(B), None);
        assert_eq!(speakers.forget(A), Some(None));
        assert_eq!(speakers.forget(A), None);
    }
}
