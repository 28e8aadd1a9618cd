//! Every room rule, driven directly: no sockets, no tasks, no database, virtual time.

use super::*;
use crate::protocol::Quality;
use str0m::media::Mid;

const CLINICIAN: ParticipantId = ParticipantId(1);
const PATIENT: ParticipantId = ParticipantId(2);
const OTHER: ParticipantId = ParticipantId(3);

/// Everything a room asked for, sorted by kind (order within a kind kept).
#[derive(Debug, Default)]
struct Drained {
    sends: Vec<(ConnId, ServerMessage)>,
    closes: Vec<(ConnId, CloseCode)>,
    media: Vec<MediaCommand>,
    audits: Vec<Act>,
    in_progress: usize,
    first_media: Vec<Duration>,
}

impl Drained {
    /// The frames queued on `conn`, as their `type` tags.
    fn types_to(&self, conn: ConnId) -> Vec<String> {
        self.sends
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, m)| {
                serde_json::to_value(m).unwrap_or_default()["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    fn frames_to(&self, conn: ConnId) -> Vec<&ServerMessage> {
        self.sends
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, m)| m)
            .collect()
    }
}

fn drain(room: &mut Room) -> Drained {
    let mut drained = Drained::default();
    while let Some(output) = room.poll_output() {
        match output {
            Output::Send { conn, message } => drained.sends.push((conn, message)),
            Output::Close { conn, code } => drained.closes.push((conn, code)),
            Output::Media(command) => drained.media.push(command),
            Output::Audit(act) => drained.audits.push(act),
            Output::InProgress => drained.in_progress += 1,
            Output::FirstMedia { after } => drained.first_media.push(after),
        }
    }
    drained
}

fn joining(role: Role, conn: ConnId) -> Joining {
    Joining {
        role,
        name: format!("{role:?}"),
        conn,
        session: format!("token-{conn}"),
        offer: None,
        readmit: true,
        attendee: None,
    }
}

/// `participant` (the clinician, or else a patient) joins `room` at `now` on socket `conn`.
fn join(
    room: &mut Room,
    now: Instant,
    participant: ParticipantId,
    conn: ConnId,
) -> Result<bool, Refusal> {
    let role = if participant == CLINICIAN {
        Role::Clinician
    } else {
        Role::Patient
    };
    room.join(now, participant, joining(role, conn))
}

fn room(waiting_room: bool) -> Room {
    Room::new("t".into(), "v".into(), waiting_room, false, None)
}

/// A room with the clinician (socket 10) and the patient (socket 20) seated, in media and
/// connected; the patient admitted when the visit has a waiting room.
fn call(now: Instant, waiting_room: bool) -> Room {
    let mut room = room(waiting_room);
    for (participant, role, conn) in [
        (CLINICIAN, Role::Clinician, 10),
        (PATIENT, Role::Patient, 20),
    ] {
        let _ = room.join(now, participant, joining(role, conn));
        room.media_joined(participant);
        room.on_media(now, MediaEvent::Connected { participant });
    }
    if waiting_room {
        let _ = room.admit(CLINICIAN, PATIENT);
        room.on_media(
            now,
            MediaEvent::Admitted {
                participant: PATIENT,
                attendee: None,
            },
        );
    }
    drain(&mut room);
    room
}

fn left(participant: ParticipantId, reason: LeaveReason) -> MediaEvent {
    MediaEvent::Left {
        participant,
        reason,
    }
}

#[test]
fn without_a_waiting_room_everyone_is_in_at_once() {
    let now = Instant::now();
    let mut room = room(false);
    assert_eq!(join(&mut room, now, CLINICIAN, 10), Ok(false));
    assert_eq!(join(&mut room, now, PATIENT, 20), Ok(false));
    let out = drain(&mut room);
    assert_eq!(out.types_to(10), ["joined", "participant_joined"]);
    assert_eq!(out.types_to(20), ["joined"]);
    let ServerMessage::Joined { participants, .. } = out.frames_to(20)[0] else {
        panic!("joined first");
    };
    assert_eq!(
        participants.len(),
        1,
        "the patient's roster has the clinician"
    );
    assert!(matches!(
        out.media.as_slice(),
        [
            MediaCommand::Join {
                participant: CLINICIAN,
                waiting: false,
                ..
            },
            MediaCommand::Join {
                participant: PATIENT,
                waiting: false,
                ..
            },
        ]
    ));
    assert_eq!(
        out.audits,
        [
            Act::Joined {
                participant: CLINICIAN,
                role: Role::Clinician
            },
            Act::Joined {
                participant: PATIENT,
                role: Role::Patient
            },
        ]
    );
}

#[test]
fn a_patient_waits_and_the_clinician_learns_of_it_once() {
    let now = Instant::now();
    let mut room = room(true);
    assert_eq!(join(&mut room, now, PATIENT, 20), Ok(true));
    assert_eq!(join(&mut room, now, CLINICIAN, 10), Ok(false));
    let out = drain(&mut room);
    // From its roster (it joined after the patient), not from a notice as well.
    assert_eq!(out.types_to(10), ["joined"]);
    let ServerMessage::Joined {
        participants,
        waiting,
        ..
    } = out.frames_to(10)[0]
    else {
        panic!("joined");
    };
    assert!(!waiting);
    assert!(participants[0].waiting);
    assert_eq!(out.types_to(20), ["joined", "participant_joined"]);
    assert!(out.audits.contains(&Act::Waiting {
        participant: PATIENT,
        role: Role::Patient
    }));
}

#[test]
fn an_admission_waits_for_the_media_seat_and_is_audited_when_media_flows() {
    let now = Instant::now();
    let mut room = room(true);
    let _ = join(&mut room, now, CLINICIAN, 10);
    let _ = join(&mut room, now, PATIENT, 20);
    drain(&mut room);
    assert_eq!(room.admit(CLINICIAN, PATIENT), Ok(()));
    assert!(drain(&mut room).media.is_empty(), "not in media yet");
    // A second admit while the first is under way is refused.
    assert!(room.admit(CLINICIAN, PATIENT).is_err());
    room.media_joined(PATIENT);
    assert!(matches!(
        drain(&mut room).media.as_slice(),
        [MediaCommand::Admit {
            participant: PATIENT
        }]
    ));
    room.on_media(
        now,
        MediaEvent::Admitted {
            participant: PATIENT,
            attendee: Some(Box::new(serde_json::json!({"JoinToken": "t"}))),
        },
    );
    let out = drain(&mut room);
    assert_eq!(
        out.audits,
        [Act::Admitted {
            by: CLINICIAN,
            participant: PATIENT
        }]
    );
    // The attendee goes to the admitted participant only.
    let to_patient = out.frames_to(20);
    assert!(matches!(
        to_patient[0],
        ServerMessage::ParticipantAdmitted {
            attendee: Some(_),
            ..
        }
    ));
    assert!(matches!(
        out.frames_to(10)[0],
        ServerMessage::ParticipantAdmitted { attendee: None, .. }
    ));
    assert!(room.was_admitted(PATIENT));
    assert!(room.admit(CLINICIAN, PATIENT).is_err(), "no longer waiting");
}

#[test]
fn admitting_someone_absent_or_not_waiting_changes_nothing() {
    let now = Instant::now();
    let mut room = call(now, false);
    let not_waiting = room.admit(CLINICIAN, PATIENT);
    assert!(matches!(
        not_waiting,
        Err(ServerMessage::Error {
            code: ErrorCode::NotWaiting,
            ..
        })
    ));
    let absent = room.admit(CLINICIAN, OTHER);
    assert!(matches!(
        absent,
        Err(ServerMessage::Error {
            code: ErrorCode::UnknownParticipant,
            ..
        })
    ));
    let out = drain(&mut room);
    assert!(out.sends.is_empty() && out.media.is_empty() && out.audits.is_empty());
    assert!(!room.was_admitted(PATIENT));
}

#[test]
fn a_failed_admission_leaves_the_patient_waiting_and_admittable() {
    let now = Instant::now();
    let mut room = room(true);
    let _ = join(&mut room, now, PATIENT, 20);
    room.media_joined(PATIENT);
    drain(&mut room);
    assert_eq!(room.admit(CLINICIAN, PATIENT), Ok(()));
    room.admit_failed(PATIENT);
    assert!(!room.was_admitted(PATIENT));
    assert_eq!(room.admit(CLINICIAN, PATIENT), Ok(()));
}

#[test]
fn the_visit_is_in_progress_once_both_are_in_and_connected() {
    let now = Instant::now();
    let mut room = room(true);
    let _ = join(&mut room, now, CLINICIAN, 10);
    let _ = join(&mut room, now, PATIENT, 20);
    for participant in [CLINICIAN, PATIENT] {
        room.media_joined(participant);
        room.on_media(now, MediaEvent::Connected { participant });
    }
    assert_eq!(drain(&mut room).in_progress, 0, "the patient still waits");
    let _ = room.admit(CLINICIAN, PATIENT);
    room.on_media(
        now,
        MediaEvent::Admitted {
            participant: PATIENT,
            attendee: None,
        },
    );
    assert_eq!(drain(&mut room).in_progress, 1);
    room.on_media(
        now,
        MediaEvent::Disconnected {
            participant: PATIENT,
        },
    );
    room.on_media(
        now,
        MediaEvent::Connected {
            participant: PATIENT,
        },
    );
    assert_eq!(drain(&mut room).in_progress, 0, "only the first time");
}

#[test]
fn a_room_that_started_in_progress_never_marks_it_again() {
    let now = Instant::now();
    let mut room = Room::new("t".into(), "v".into(), false, true, None);
    for (participant, role) in [(CLINICIAN, Role::Clinician), (PATIENT, Role::Patient)] {
        let _ = room.join(now, participant, joining(role, participant.0 as u64));
        room.on_media(now, MediaEvent::Connected { participant });
    }
    assert_eq!(drain(&mut room).in_progress, 0);
}

#[test]
fn a_removed_patient_leaves_with_4403_and_cannot_come_back_while_the_room_lives() {
    let now = Instant::now();
    let mut room = call(now, false);
    assert_eq!(room.check_removable(PATIENT), Ok(()));
    assert_eq!(room.remove(CLINICIAN, PATIENT), Ok(()));
    assert!(matches!(
        drain(&mut room).media.as_slice(),
        [MediaCommand::Remove {
            participant: PATIENT,
            by: CLINICIAN
        }]
    ));
    room.on_media(now, left(PATIENT, LeaveReason::Removed));
    let out = drain(&mut room);
    assert_eq!(out.closes, [(20, CloseCode::Removed)]);
    assert!(matches!(
        out.frames_to(10)[0],
        ServerMessage::ParticipantLeft {
            reason: LeftReason::Removed,
            ..
        }
    ));
    assert!(
        out.audits.is_empty(),
        "the domain audited the removal when it stored it"
    );
    let again = join(&mut room, now, PATIENT, 21);
    assert_eq!(again.map_err(|r| r.close), Err(CloseCode::Removed));
    assert!(!room.was_admitted(PATIENT));
}

#[test]
fn removing_someone_not_seated_is_refused_before_anything_is_stored() {
    let now = Instant::now();
    let mut room = call(now, false);
    assert!(room.check_removable(OTHER).is_err());
    assert!(room.remove(CLINICIAN, OTHER).is_err());
    assert!(drain(&mut room).media.is_empty());
}

#[test]
fn a_second_socket_replaces_the_seat_and_the_old_session_is_ignored() {
    let now = Instant::now();
    let mut room = call(now, true);
    assert_eq!(
        join(&mut room, now, PATIENT, 21),
        Ok(false),
        "admitted before"
    );
    let out = drain(&mut room);
    assert_eq!(out.closes, [(20, CloseCode::Replaced)]);
    assert!(matches!(
        out.media.as_slice(),
        [
            MediaCommand::Replace {
                participant: PATIENT
            },
            MediaCommand::Join {
                participant: PATIENT,
                waiting: false,
                ..
            },
        ]
    ));
    assert!(out.audits.contains(&Act::Left {
        participant: PATIENT,
        reason: "replaced"
    }));
    // The old session's events, up to its Left, do not reach the new seat.
    room.on_media(
        now,
        MediaEvent::Offer {
            participant: PATIENT,
            sdp: "old".into(),
        },
    );
    room.on_media(now, left(PATIENT, LeaveReason::Left));
    let out = drain(&mut room);
    assert!(out.sends.is_empty() && out.closes.is_empty() && out.audits.is_empty());
    assert!(room.holds(PATIENT, 21));
    room.on_media(
        now,
        MediaEvent::Offer {
            participant: PATIENT,
            sdp: "new".into(),
        },
    );
    assert_eq!(drain(&mut room).types_to(21), ["offer"]);
}

#[test]
fn a_patient_admitted_before_waits_again_when_it_may_not_be_readmitted() {
    let now = Instant::now();
    let mut room = call(now, true);
    let rejoin = Joining {
        readmit: false,
        ..joining(Role::Patient, 21)
    };
    assert_eq!(room.join(now, PATIENT, rejoin), Ok(true));
}

#[test]
fn a_resume_with_the_token_reattaches_the_seat_and_resends_the_offer() {
    let now = Instant::now();
    let mut room = call(now, false);
    room.on_media(
        now,
        MediaEvent::Offer {
            participant: PATIENT,
            sdp: "o".into(),
        },
    );
    drain(&mut room);
    assert!(!room.resume(PATIENT, "wrong", 22));
    assert!(drain(&mut room).sends.is_empty());
    assert!(room.resume(PATIENT, "token-20", 22));
    let out = drain(&mut room);
    assert_eq!(out.closes, [(20, CloseCode::Replaced)]);
    assert_eq!(out.types_to(22), ["joined", "offer"]);
    assert_eq!(
        out.audits,
        [Act::Resumed {
            participant: PATIENT
        }]
    );
    // Once answered, nothing is resent.
    room.answered(PATIENT);
    assert!(room.resume(PATIENT, "token-20", 23));
    assert_eq!(drain(&mut room).types_to(23), ["joined"]);
}

#[test]
fn a_lost_socket_keeps_the_seat_until_its_window_ends() {
    let now = Instant::now();
    let mut room = call(now, false);
    assert_eq!(room.socket_lost(PATIENT, 99), None, "not its socket");
    let generation = room.socket_lost(PATIENT, 20).unwrap_or_default();
    assert!(room.resume(PATIENT, "token-20", 21));
    room.seat_expired(PATIENT, generation);
    assert!(drain(&mut room).media.is_empty(), "it resumed meanwhile");
    let generation = room.socket_lost(PATIENT, 21).unwrap_or_default();
    room.seat_expired(PATIENT, generation);
    assert!(matches!(
        drain(&mut room).media.as_slice(),
        [MediaCommand::Leave {
            participant: PATIENT,
            reason: LeftReason::Dropped,
            by: PATIENT
        }]
    ));
    room.on_media(now, left(PATIENT, LeaveReason::Left));
    let out = drain(&mut room);
    assert!(matches!(
        out.frames_to(10)[0],
        ServerMessage::ParticipantLeft {
            reason: LeftReason::Dropped,
            ..
        }
    ));
    assert_eq!(
        out.audits,
        [Act::Left {
            participant: PATIENT,
            reason: "dropped"
        }]
    );
    assert!(!room.is_seated(PATIENT));
}

#[test]
fn a_socket_detached_for_overflowing_still_gets_its_resume_window() {
    let now = Instant::now();
    let mut room = call(now, false);
    room.detach(20);
    assert!(!room.holds(PATIENT, 20));
    assert!(room.socket_lost(PATIENT, 20).is_some());
}

#[test]
fn leaving_ends_the_media_then_the_seat_with_1000() {
    let now = Instant::now();
    let mut room = call(now, false);
    room.leave(PATIENT);
    assert!(matches!(
        drain(&mut room).media.as_slice(),
        [MediaCommand::Leave {
            participant: PATIENT,
            reason: LeftReason::Left,
            ..
        }]
    ));
    room.on_media(now, left(PATIENT, LeaveReason::Left));
    let out = drain(&mut room);
    assert_eq!(out.closes, [(20, CloseCode::Normal)]);
    assert_eq!(
        out.audits,
        [Act::Left {
            participant: PATIENT,
            reason: "left"
        }]
    );
    room.leave(CLINICIAN);
    room.on_media(now, left(CLINICIAN, LeaveReason::Left));
    assert!(room.is_empty());
}

#[test]
fn the_end_of_the_visit_tells_everyone_and_only_the_close_follows() {
    let now = Instant::now();
    let mut room = call(now, false);
    let track = TrackId {
        participant: PATIENT,
        mid: Mid::from("0"),
    };
    room.on_media(
        now,
        MediaEvent::TrackPublished {
            track,
            kind: TrackKind::Audio,
        },
    );
    drain(&mut room);
    room.end();
    let out = drain(&mut room);
    assert_eq!(out.types_to(10), ["visit_ended"]);
    assert_eq!(out.types_to(20), ["visit_ended"]);
    assert_eq!(out.media.len(), 2);
    // Whatever the media does as everyone leaves, in whichever order, nobody hears of it.
    room.on_media(now, MediaEvent::TrackUnpublished { track });
    room.on_media(
        now,
        MediaEvent::Offer {
            participant: CLINICIAN,
            sdp: "o".into(),
        },
    );
    for participant in [PATIENT, CLINICIAN] {
        room.on_media(now, left(participant, LeaveReason::Left));
    }
    let out = drain(&mut room);
    assert!(out.sends.is_empty(), "{:?}", out.sends);
    assert_eq!(
        out.closes,
        [(20, CloseCode::VisitOver), (10, CloseCode::VisitOver)]
    );
    assert_eq!(
        out.audits,
        [
            Act::Left {
                participant: PATIENT,
                reason: "visit_ended"
            },
            Act::Left {
                participant: CLINICIAN,
                reason: "visit_ended"
            },
        ]
    );
    assert!(room.is_empty());
}

#[test]
fn a_shutdown_tells_closes_and_audits_every_seat_without_the_media() {
    let now = Instant::now();
    let mut room = call(now, true);
    let _ = room.socket_lost(PATIENT, 20);
    room.shutdown();
    let out = drain(&mut room);
    assert_eq!(out.types_to(10), ["server_shutdown"]);
    assert_eq!(out.closes, [(10, CloseCode::ShuttingDown)]);
    assert!(out.media.is_empty());
    let mut audited: Vec<ParticipantId> = out
        .audits
        .iter()
        .filter_map(|act| match act {
            Act::Left {
                participant,
                reason: "server_shutdown",
            } => Some(*participant),
            _ => None,
        })
        .collect();
    audited.sort_by_key(|p| p.0);
    assert_eq!(
        audited,
        [CLINICIAN, PATIENT],
        "a detached seat's departure too"
    );
    assert!(room.is_empty());
}

#[test]
fn a_seat_the_media_refused_goes_and_the_others_are_told() {
    let now = Instant::now();
    let mut room = call(now, false);
    let _ = join(&mut room, now, OTHER, 30);
    drain(&mut room);
    room.join_failed(OTHER);
    let out = drain(&mut room);
    assert!(matches!(
        out.frames_to(10)[0],
        ServerMessage::ParticipantLeft {
            reason: LeftReason::Failed,
            ..
        }
    ));
    assert!(!room.is_seated(OTHER));
}

#[test]
fn a_room_counting_its_own_seats_refuses_one_too_many() {
    let now = Instant::now();
    let mut room = Room::new("t".into(), "v".into(), false, false, Some(2));
    let _ = join(&mut room, now, CLINICIAN, 10);
    let _ = join(&mut room, now, PATIENT, 20);
    let full = join(&mut room, now, OTHER, 30);
    assert!(matches!(
        full,
        Err(Refusal {
            frame: ServerMessage::Error {
                code: ErrorCode::RoomFull,
                ..
            },
            close: CloseCode::Unavailable
        })
    ));
    // Rejoining one's own seat is not one too many.
    assert_eq!(join(&mut room, now, PATIENT, 21), Ok(false));
}

#[test]
fn tracks_reach_their_publisher_and_subscribers_by_wire_id() {
    let now = Instant::now();
    let mut room = call(now, false);
    let track = TrackId {
        participant: PATIENT,
        mid: Mid::from("0"),
    };
    room.on_media(
        now,
        MediaEvent::TrackPublished {
            track,
            kind: TrackKind::Audio,
        },
    );
    room.on_media(
        now,
        MediaEvent::TrackRouted {
            subscriber: CLINICIAN,
            track,
            mid: Mid::from("3"),
        },
    );
    room.on_media(now, MediaEvent::TrackMuted { track, muted: true });
    room.on_media(now, MediaEvent::TrackUnpublished { track });
    // Routed after its publisher left: unknown kind, nothing sent.
    room.on_media(
        now,
        MediaEvent::TrackRouted {
            subscriber: CLINICIAN,
            track,
            mid: Mid::from("4"),
        },
    );
    let out = drain(&mut room);
    assert_eq!(
        out.types_to(20),
        ["track_published", "track_muted", "track_unpublished"]
    );
    assert_eq!(
        out.types_to(10),
        ["track_published", "track_muted", "track_unpublished"]
    );
    let ServerMessage::TrackPublished { mid, track: id, .. } = out.frames_to(10)[0] else {
        panic!("track_published");
    };
    assert_eq!(
        (mid.as_str(), id.as_str()),
        ("3", wire_track(track).as_str())
    );
}

#[test]
fn first_media_is_measured_from_the_join() {
    let start = Instant::now();
    let mut room = call(start, false);
    room.on_media(
        start + Duration::from_millis(700),
        MediaEvent::FirstMedia {
            participant: PATIENT,
        },
    );
    assert_eq!(drain(&mut room).first_media, [Duration::from_millis(700)]);
}

#[test]
fn the_active_speaker_reaches_the_admitted_and_not_the_waiting_room() {
    let now = Instant::now();
    let mut room = room(true);
    let _ = join(&mut room, now, CLINICIAN, 10);
    let _ = join(&mut room, now, PATIENT, 20);
    drain(&mut room);
    room.on_media(
        now,
        MediaEvent::ActiveSpeaker {
            participant: Some(CLINICIAN),
        },
    );
    room.on_media(now, MediaEvent::ActiveSpeaker { participant: None });
    let out = drain(&mut room);
    assert_eq!(out.types_to(10), ["active_speaker", "active_speaker"]);
    assert_eq!(
        out.frames_to(10),
        [
            &ServerMessage::ActiveSpeaker {
                participant: Some(wire_id(CLINICIAN))
            },
            &ServerMessage::ActiveSpeaker { participant: None }
        ]
    );
    assert!(
        out.types_to(20).is_empty(),
        "the waiting patient is not told"
    );

    let mut room = call(now, true);
    room.on_media(
        now,
        MediaEvent::ActiveSpeaker {
            participant: Some(PATIENT),
        },
    );
    let out = drain(&mut room);
    assert_eq!(out.types_to(10), ["active_speaker"]);
    assert_eq!(out.types_to(20), ["active_speaker"], "once admitted it is");
}

#[test]
fn connection_quality_reaches_the_admitted_about_everyone_and_the_waiting_about_itself() {
    let now = Instant::now();
    let mut room = room(true);
    let _ = join(&mut room, now, CLINICIAN, 10);
    let _ = join(&mut room, now, PATIENT, 20);
    drain(&mut room);
    for participant in [PATIENT, CLINICIAN] {
        room.on_media(
            now,
            MediaEvent::ConnectionQuality {
                participant,
                quality: Quality::Poor,
            },
        );
    }
    let out = drain(&mut room);
    assert_eq!(
        out.types_to(10),
        ["connection_quality", "connection_quality"],
        "the clinician hears of the waiting patient and of itself"
    );
    assert_eq!(
        out.frames_to(20),
        [&ServerMessage::ConnectionQuality {
            participant: wire_id(PATIENT),
            quality: Quality::Poor
        }],
        "the waiting patient hears of itself only"
    );
}

#[test]
fn a_paused_track_is_told_to_its_subscriber_alone() {
    let now = Instant::now();
    let mut room = room(false);
    let _ = join(&mut room, now, CLINICIAN, 10);
    let _ = join(&mut room, now, PATIENT, 20);
    drain(&mut room);
    let track = sfu::core::TrackId {
        participant: CLINICIAN,
        mid: Mid::from("1"),
    };
    room.on_media(
        now,
        MediaEvent::TrackPaused {
            subscriber: PATIENT,
            track,
        },
    );
    room.on_media(
        now,
        MediaEvent::TrackResumed {
            subscriber: PATIENT,
            track,
        },
    );
    let out = drain(&mut room);
    assert!(out.types_to(10).is_empty(), "the publisher is not told");
    assert_eq!(
        out.frames_to(20),
        [
            &ServerMessage::TrackPaused {
                track: wire_track(track),
                reason: crate::protocol::PauseReason::Bandwidth,
            },
            &ServerMessage::TrackResumed {
                track: wire_track(track),
            }
        ]
    );
}
