//! The per-connection state machine, pure: it sees frames and the time, and says what to do.
//! It enforces everything that needs no database or media server — the join deadline, frame
//! size, message rate, message order and role permissions — so all of that is unit-tested
//! without sockets. The WebSocket handler ([`crate::ws`]) performs the [`Step`]s.

use std::time::{Duration, Instant};

use crate::protocol::{ClientMessage, CloseCode, ErrorCode, PROTOCOL_VERSION, Role, ServerMessage};

/// The largest video size a client may report in `video_size`, per side.
const MAX_VIDEO_SIDE: u32 = 8192;

/// Per-socket limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The first frame must arrive within this time.
    pub join_timeout: Duration,
    /// Frames larger than this are refused with `frame_too_large`.
    pub max_frame_bytes: usize,
    /// Sustained frames per second.
    pub messages_per_second: u32,
    /// Frames allowed in a burst above the sustained rate.
    pub burst: u32,
    /// How long a seat survives a dropped socket, waiting for `resume`.
    pub resume_window: Duration,
    /// Participants per room; joins beyond are refused with `room_full`.
    pub max_participants: usize,
}

impl Default for Limits {
    /// 5 s to join, 64 KiB frames (an SDP with many m-lines is ~10 KiB), 20 frames per
    /// second with bursts of 40, 30 s to resume, 4 participants per room.
    fn default() -> Self {
        Self {
            join_timeout: Duration::from_secs(5),
            max_frame_bytes: 64 * 1024,
            messages_per_second: 20,
            burst: 40,
            resume_window: Duration::from_secs(30),
            max_participants: 4,
        }
    }
}

/// Who is on the other end, once the grant is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Participant id (the grant's `sub`).
    pub participant: String,
    /// Role in the visit.
    pub role: Role,
}

/// A request of a seated participant that needs the room or the media server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Renegotiation offer.
    Offer {
        /// SDP.
        sdp: String,
    },
    /// Answer to the server's offer.
    Answer {
        /// SDP.
        sdp: String,
    },
    /// Admit a waiting participant (checked: the sender is the clinician).
    Admit {
        /// Participant id.
        participant: String,
    },
    /// Remove a participant (checked: the sender is the clinician).
    Remove {
        /// Participant id.
        participant: String,
    },
    /// Mute or unmute an own track.
    Mute {
        /// Track id.
        track: String,
        /// New state.
        muted: bool,
    },
    /// Report the size another participant's video is shown at.
    VideoSize {
        /// Track id.
        track: String,
        /// Width in device pixels.
        width: u32,
        /// Height in device pixels.
        height: u32,
    },
    /// Leave for good.
    Leave,
    /// End the visit for everyone (checked: the sender is the clinician).
    EndVisit,
}

/// What the handler must do with one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Verify the grant and take a seat; call [`Session::seated`] on success.
    Join {
        /// The grant.
        grant: String,
        /// The client's initial offer.
        offer: Option<String>,
    },
    /// Verify the grant and token and resume a seat; call [`Session::seated`] on success.
    Resume {
        /// The grant.
        grant: String,
        /// The resume token.
        session: String,
    },
    /// Pass a request to the room.
    Request(Request),
    /// Send this frame back; nothing else happens.
    Reply(ServerMessage),
    /// Send the frame, if any, then close the socket with this code.
    Close(Option<ServerMessage>, CloseCode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for `join` or `resume` until the deadline.
    AwaitingJoin { deadline: Instant },
    /// A `join`/`resume` is being checked; further frames wait their turn.
    Joining,
    /// Seated.
    Seated(Identity),
    /// Closing or closed; every input is ignored.
    Closed,
}

/// A token bucket in caller-supplied time.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// One connection's state. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Session {
    limits: Limits,
    phase: Phase,
    bucket: Bucket,
}

impl Session {
    /// A fresh connection accepted at `now`.
    pub fn new(limits: Limits, now: Instant) -> Self {
        Self {
            limits,
            phase: Phase::AwaitingJoin {
                deadline: now + limits.join_timeout,
            },
            bucket: Bucket {
                tokens: f64::from(limits.burst),
                last: now,
            },
        }
    }

    /// When [`Session::on_timeout`] must be called, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingJoin { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// The seated participant, if any.
    pub fn identity(&self) -> Option<&Identity> {
        match &self.phase {
            Phase::Seated(identity) => Some(identity),
            _ => None,
        }
    }

    /// Whether the socket is done.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Time passed: closes with 4401 if no join arrived in time.
    pub fn on_timeout(&mut self, now: Instant) -> Option<Step> {
        match self.phase {
            Phase::AwaitingJoin { deadline } if now >= deadline => {
                Some(self.close(None, CloseCode::Unauthorized))
            }
            _ => None,
        }
    }

    /// The join or resume succeeded.
    pub fn seated(&mut self, identity: Identity) {
        self.phase = Phase::Seated(identity);
    }

    /// The join or resume failed; the handler closes the socket.
    pub fn refused(&mut self) {
        self.phase = Phase::Closed;
    }

    /// The socket closes for a reason outside the session (removed, visit ended, replaced).
    pub fn closed(&mut self) {
        self.phase = Phase::Closed;
    }

    /// A binary frame: the protocol has none.
    pub fn on_binary(&mut self, now: Instant, len: usize) -> Option<Step> {
        self.admit_frame(now, len).err().or_else(|| {
            self.refuse_unparsed(ServerMessage::error(
                ErrorCode::InvalidMessage,
                "binary frames are not part of the protocol",
            ))
        })
    }

    /// A text frame.
    pub fn on_text(&mut self, now: Instant, text: &str) -> Option<Step> {
        if let Err(step) = self.admit_frame(now, text.len()) {
            return Some(step);
        }
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(error) => {
                return self.refuse_unparsed(ServerMessage::error(
                    ErrorCode::InvalidMessage,
                    format!("not a valid message: {error}"),
                ));
            }
        };
        match &self.phase {
            Phase::Closed => None,
            Phase::AwaitingJoin { .. } => Some(self.first(message)),
            Phase::Joining => Some(Step::Reply(ServerMessage::error(
                ErrorCode::InvalidMessage,
                "wait for `joined` before sending more",
            ))),
            Phase::Seated(identity) => Some(Self::seated_message(identity, message)),
        }
    }

    /// Size and rate checks shared by every frame. `Err` holds the refusal.
    fn admit_frame(&mut self, now: Instant, len: usize) -> Result<(), Step> {
        if self.phase == Phase::Closed {
            return Err(Step::Close(None, CloseCode::Normal));
        }
        if len > self.limits.max_frame_bytes {
            return Err(self.refuse_early(ServerMessage::error(
                ErrorCode::FrameTooLarge,
                format!(
                    "frames are limited to {} bytes",
                    self.limits.max_frame_bytes
                ),
            )));
        }
        let elapsed = now
            .saturating_duration_since(self.bucket.last)
            .as_secs_f64();
        self.bucket.last = now.max(self.bucket.last);
        self.bucket.tokens = (self.bucket.tokens
            + elapsed * f64::from(self.limits.messages_per_second))
        .min(f64::from(self.limits.burst));
        if self.bucket.tokens < 1.0 {
            return Err(Step::Reply(ServerMessage::error(
                ErrorCode::RateLimited,
                format!(
                    "at most {} messages per second; this one was dropped",
                    self.limits.messages_per_second
                ),
            )));
        }
        self.bucket.tokens -= 1.0;
        Ok(())
    }

    /// Before the seat, anything but a valid join closes the socket; after, it is an error
    /// frame.
    fn refuse_early(&mut self, error: ServerMessage) -> Step {
        match self.phase {
            Phase::AwaitingJoin { .. } => self.close(Some(error), CloseCode::Protocol),
            _ => Step::Reply(error),
        }
    }

    fn refuse_unparsed(&mut self, error: ServerMessage) -> Option<Step> {
        Some(self.refuse_early(error))
    }

    fn close(&mut self, frame: Option<ServerMessage>, code: CloseCode) -> Step {
        self.phase = Phase::Closed;
        Step::Close(frame, code)
    }

    fn first(&mut self, message: ClientMessage) -> Step {
        match message {
            ClientMessage::Join {
                grant,
                protocol,
                offer,
            } => {
                if protocol != PROTOCOL_VERSION {
                    return self.close(
                        Some(ServerMessage::error(
                            ErrorCode::UnsupportedProtocol,
                            format!("this server speaks protocol {PROTOCOL_VERSION}"),
                        )),
                        CloseCode::Protocol,
                    );
                }
                self.phase = Phase::Joining;
                Step::Join { grant, offer }
            }
            ClientMessage::Resume { grant, session } => {
                self.phase = Phase::Joining;
                Step::Resume { grant, session }
            }
            other => self.close(
                Some(ServerMessage::error(
                    ErrorCode::InvalidMessage,
                    format!(
                        "the first message must be `join` or `resume`, not `{}`",
                        other.kind()
                    ),
                )),
                CloseCode::Protocol,
            ),
        }
    }

    fn seated_message(identity: &Identity, message: ClientMessage) -> Step {
        let clinician_only = |what: &str| {
            Step::Reply(ServerMessage::error(
                ErrorCode::Forbidden,
                format!("only the visit's clinician may {what}"),
            ))
        };
        match message {
            ClientMessage::Join { .. } | ClientMessage::Resume { .. } => Step::Reply(
                ServerMessage::error(ErrorCode::AlreadyJoined, "this socket already has a seat"),
            ),
            ClientMessage::Ping { id } => Step::Reply(ServerMessage::Pong { id }),
            ClientMessage::Offer { sdp } => Step::Request(Request::Offer { sdp }),
            ClientMessage::Answer { sdp } => Step::Request(Request::Answer { sdp }),
            ClientMessage::Admit { .. } if identity.role != Role::Clinician => {
                clinician_only("admit")
            }
            ClientMessage::Admit { participant } => Step::Request(Request::Admit { participant }),
            ClientMessage::Remove { .. } if identity.role != Role::Clinician => {
                clinician_only("remove participants")
            }
            ClientMessage::Remove { participant } if participant == identity.participant => {
                Step::Reply(ServerMessage::error(
                    ErrorCode::Forbidden,
                    "use `leave` to leave; `remove` is for others",
                ))
            }
            ClientMessage::Remove { participant } => Step::Request(Request::Remove { participant }),
            ClientMessage::Mute { track, muted } => Step::Request(Request::Mute { track, muted }),
            ClientMessage::VideoSize { width, height, .. }
                if width > MAX_VIDEO_SIDE || height > MAX_VIDEO_SIDE =>
            {
                Step::Reply(ServerMessage::error(
                    ErrorCode::InvalidMessage,
                    format!("video_size: width and height must be at most {MAX_VIDEO_SIDE}"),
                ))
            }
            ClientMessage::VideoSize {
                track,
                width,
                height,
            } => Step::Request(Request::VideoSize {
                track,
                width,
                height,
            }),
            ClientMessage::Leave => Step::Request(Request::Leave),
            ClientMessage::EndVisit if identity.role != Role::Clinician => {
                clinician_only("end the visit")
            }
            ClientMessage::EndVisit => Step::Request(Request::EndVisit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_code(step: &Step) -> Option<ErrorCode> {
        match step {
            Step::Reply(ServerMessage::Error { code, .. })
            | Step::Close(Some(ServerMessage::Error { code, .. }), _) => Some(*code),
            _ => None,
        }
    }

    fn seated(role: Role) -> (Session, Instant) {
        let t0 = Instant::now();
        let mut session = Session::new(Limits::default(), t0);
        let step = session.on_text(t0, r#"{"type":"join","grant":"g"}"#);
        assert_eq!(
            step,
            Some(Step::Join {
                grant: "g".into(),
                offer: None
            })
        );
        session.seated(Identity {
            participant: "me".into(),
            role,
        });
        (session, t0)
    }

    #[test]
    fn video_size_is_passed_on_within_its_bounds_and_refused_beyond() {
        let (mut session, t0) = seated(Role::Patient);
        let step = session.on_text(
            t0,
            r#"{"type":"video_size","track":"p:1","width":640,"height":360}"#,
        );
        assert_eq!(
            step,
            Some(Step::Request(Request::VideoSize {
                track: "p:1".into(),
                width: 640,
                height: 360
            }))
        );
        for bad in [
            r#"{"type":"video_size","track":"p:1","width":8193,"height":360}"#,
            r#"{"type":"video_size","track":"p:1","width":640,"height":100000}"#,
        ] {
            let step = session.on_text(t0, bad).expect("a reply");
            assert_eq!(error_code(&step), Some(ErrorCode::InvalidMessage), "{bad}");
        }
        // Negative or fractional sizes are not a `video_size` at all.
        let step = session
            .on_text(
                t0,
                r#"{"type":"video_size","track":"p:1","width":-1,"height":2}"#,
            )
            .expect("a reply");
        assert_eq!(error_code(&step), Some(ErrorCode::InvalidMessage));
        assert!(!session.is_closed());
    }

    #[test]
    fn no_join_within_five_seconds_closes_with_4401() {
        let t0 = Instant::now();
        let mut session = Session::new(Limits::default(), t0);
        assert_eq!(session.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(session.on_timeout(t0 + Duration::from_secs(4)), None);
        assert_eq!(
            session.on_timeout(t0 + Duration::from_secs(5)),
            Some(Step::Close(None, CloseCode::Unauthorized))
        );
        assert!(session.is_closed());
        assert_eq!(session.deadline(), None);
    }

    #[test]
    fn anything_but_join_first_closes_with_4400() {
        for first in [
            r#"{"type":"offer","sdp":"v=0"}"#,
            "not json",
            r#"{"type":"join","grant":"g","protocol":2}"#,
        ] {
            let t0 = Instant::now();
            let mut session = Session::new(Limits::default(), t0);
            let step = session.on_text(t0, first).expect("a step");
            assert!(
                matches!(step, Step::Close(Some(_), CloseCode::Protocol)),
                "{first}: {step:?}"
            );
            assert!(session.is_closed());
            assert_eq!(
                session.on_text(t0, r#"{"type":"join","grant":"g"}"#),
                Some(Step::Close(None, CloseCode::Normal))
            );
        }
    }

    #[test]
    fn resume_is_a_valid_first_frame() {
        let t0 = Instant::now();
        let mut session = Session::new(Limits::default(), t0);
        assert_eq!(
            session.on_text(t0, r#"{"type":"resume","grant":"g","session":"s"}"#),
            Some(Step::Resume {
                grant: "g".into(),
                session: "s".into()
            })
        );
        assert_eq!(
            session.deadline(),
            None,
            "no deadline while the grant is checked"
        );
        let step = session.on_text(t0, r#"{"type":"ping"}"#).expect("step");
        assert_eq!(error_code(&step), Some(ErrorCode::InvalidMessage));
    }

    #[test]
    fn seated_frames_become_requests_and_errors_never_close() {
        let (mut session, t0) = seated(Role::Patient);
        assert_eq!(
            session.on_text(t0, r#"{"type":"ping","id":7}"#),
            Some(Step::Reply(ServerMessage::Pong { id: Some(7) }))
        );
        assert_eq!(
            session.on_text(t0, r#"{"type":"answer","sdp":"v=0"}"#),
            Some(Step::Request(Request::Answer { sdp: "v=0".into() }))
        );
        for garbage in ["{", "[]", r#"{"type":"nope"}"#, r#"{"type":"mute"}"#] {
            let step = session.on_text(t0, garbage).expect("step");
            assert_eq!(
                error_code(&step),
                Some(ErrorCode::InvalidMessage),
                "{garbage}"
            );
        }
        let step = session.on_binary(t0, 4).expect("step");
        assert_eq!(error_code(&step), Some(ErrorCode::InvalidMessage));
        let step = session
            .on_text(t0, r#"{"type":"join","grant":"g"}"#)
            .expect("step");
        assert_eq!(error_code(&step), Some(ErrorCode::AlreadyJoined));
        let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(70_000));
        let step = session.on_text(t0, &big).expect("step");
        assert_eq!(error_code(&step), Some(ErrorCode::FrameTooLarge));
        assert!(!session.is_closed());
        assert_eq!(
            session.on_text(t0, r#"{"type":"leave"}"#),
            Some(Step::Request(Request::Leave))
        );
    }

    #[test]
    fn only_the_clinician_admits_removes_and_ends() {
        let (mut patient, t0) = seated(Role::Patient);
        for text in [
            r#"{"type":"admit","participant":"x"}"#,
            r#"{"type":"remove","participant":"x"}"#,
            r#"{"type":"end_visit"}"#,
        ] {
            let step = patient.on_text(t0, text).expect("step");
            assert_eq!(error_code(&step), Some(ErrorCode::Forbidden));
        }
        let (mut clinician, t0) = seated(Role::Clinician);
        assert_eq!(
            clinician.on_text(t0, r#"{"type":"admit","participant":"x"}"#),
            Some(Step::Request(Request::Admit {
                participant: "x".into()
            }))
        );
        let step = clinician
            .on_text(t0, r#"{"type":"remove","participant":"me"}"#)
            .expect("step");
        assert_eq!(error_code(&step), Some(ErrorCode::Forbidden));
        assert_eq!(
            clinician.on_text(t0, r#"{"type":"end_visit"}"#),
            Some(Step::Request(Request::EndVisit))
        );
    }

    #[test]
    fn bursts_beyond_the_rate_are_dropped_then_refill() {
        let (mut session, t0) = seated(Role::Patient);
        let limits = Limits::default();
        // The join took one token of the burst.
        let mut limited = 0;
        for _ in 0..limits.burst + 10 {
            let step = session.on_text(t0, r#"{"type":"ping"}"#).expect("step");
            if error_code(&step) == Some(ErrorCode::RateLimited) {
                limited += 1;
            }
        }
        assert_eq!(limited, 11);
        let later = t0 + Duration::from_millis(100);
        assert_eq!(
            session.on_text(later, r#"{"type":"ping"}"#),
            Some(Step::Reply(ServerMessage::Pong { id: None })),
            "100 ms at 20/s buys two more"
        );
    }
}
