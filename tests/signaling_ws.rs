//! `/ws` over real sockets, without media peers: the join deadline and grant check, garbage
//! and out-of-order frames, resume after a dropped socket, the clinician's `remove`, and the
//! end of the visit.
//! Clients here join without an offer, so the SFU seats them and sends its own offer, which is
//! all these rules need.

mod common;

use std::time::{Duration, Instant};

use common::{Server, TestResult, text};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single expected frame may take.
const FRAME_WAIT: Duration = Duration::from_secs(5);

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the next frame was.
#[derive(Debug)]
enum Frame {
    Json(Value),
    Closed(u16),
}

impl Client {
    async fn connect(server: &Server) -> TestResult<Client> {
        let (ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await?;
        Ok(Client { ws })
    }

    /// A new socket that has sent `join` with `grant`.
    async fn join(server: &Server, grant: &Value) -> TestResult<Client> {
        let mut client = Self::connect(server).await?;
        client.send(json!({"type": "join", "grant": grant})).await?;
        Ok(client)
    }

    async fn send(&mut self, value: Value) -> TestResult {
        self.send_raw(Message::Text(value.to_string().into())).await
    }

    async fn send_raw(&mut self, message: Message) -> TestResult {
        self.ws.send(message).await?;
        Ok(())
    }

    async fn next(&mut self) -> TestResult<Frame> {
        loop {
            let frame = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await?
                .ok_or("socket ended without a close frame")?;
            match frame? {
                Message::Text(text) => return Ok(Frame::Json(serde_json::from_str(&text)?)),
                Message::Close(close) => {
                    return Ok(Frame::Closed(close.map_or(1005, |c| u16::from(c.code))));
                }
                _ => {}
            }
        }
    }

    /// The next frame of type `kind`, skipping events of other types.
    async fn expect(&mut self, kind: &str) -> TestResult<Value> {
        loop {
            match self.next().await? {
                Frame::Json(value) if value["type"] == kind => return Ok(value),
                Frame::Json(_) => {}
                Frame::Closed(code) => return Err(format!("closed {code} before {kind}").into()),
            }
        }
    }

    /// The close code, skipping any frames before it.
    async fn closed(&mut self) -> TestResult<u16> {
        loop {
            if let Frame::Closed(code) = self.next().await? {
                return Ok(code);
            }
        }
    }

    /// Sends `value` and returns the code of the `error` it must provoke.
    async fn error_for(&mut self, value: Message) -> TestResult<String> {
        self.send_raw(value).await?;
        let error = self.expect("error").await?;
        text(&error["code"])
    }
}

fn quick_limits() -> signaling::Limits {
    signaling::Limits {
        join_timeout: Duration::from_millis(300),
        resume_window: Duration::from_secs(2),
        ..signaling::Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_forged_grants_and_non_join_first_frames_close_the_socket() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let mut silent = Client::connect(&server).await?;
    assert_eq!(silent.closed().await?, 4401, "no join within the deadline");

    let mut forged = Client::join(&server, &json!("eyJhbGciOiJub25lIn0.e30.")).await?;
    assert_eq!(forged.expect("error").await?["code"], "unauthorized");
    assert_eq!(forged.closed().await?, 4401);

    let mut rude = Client::connect(&server).await?;
    rude.send(json!({"type": "offer", "sdp": "v=0"})).await?;
    assert_eq!(rude.expect("error").await?["code"], "invalid_message");
    assert_eq!(rude.closed().await?, 4400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_error_frames_and_the_seat_survives() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    let mut patient = Client::join(&server, &visit.patient["grant"]).await?;
    let joined = patient.expect("joined").await?;
    assert_eq!(joined["waiting"], json!(true));
    assert_eq!(joined["role"], "patient");
    patient.expect("offer").await?;

    let oversized = json!({"type": "offer", "sdp": "a".repeat(100_000)}).to_string();
    let cases = [
        (Message::Text("{not json".into()), "invalid_message"),
        (
            Message::Text(r#"{"type":"teleport"}"#.into()),
            "invalid_message",
        ),
        (Message::Binary(vec![0x80, 1, 2].into()), "invalid_message"),
        (Message::Text(oversized.into()), "frame_too_large"),
        (
            Message::Text(json!({"type": "join", "grant": "x"}).to_string().into()),
            "already_joined",
        ),
        (
            Message::Text(
                json!({"type": "admit", "participant": "x"})
                    .to_string()
                    .into(),
            ),
            "forbidden",
        ),
        (
            Message::Text(
                json!({"type": "offer", "sdp": "not sdp"})
                    .to_string()
                    .into(),
            ),
            "invalid_sdp",
        ),
        (
            Message::Text(
                json!({"type": "mute", "track": "someone-else:0", "muted": true})
                    .to_string()
                    .into(),
            ),
            "unknown_track",
        ),
    ];
    for (frame, code) in cases {
        assert_eq!(patient.error_for(frame).await?, code);
    }
    patient.send(json!({"type": "ping", "id": 42})).await?;
    assert_eq!(patient.expect("pong").await?["id"], 42);

    // A flood is refused frame by frame, and the socket stays usable afterwards.
    for _ in 0..60 {
        patient.send(json!({"type": "ping"})).await?;
    }
    let mut limited = 0;
    for _ in 0..60 {
        if let Frame::Json(value) = patient.next().await?
            && value["code"] == "rate_limited"
        {
            limited += 1;
        }
    }
    assert!(limited > 0, "a burst of 60 frames must hit the rate limit");
    tokio::time::sleep(Duration::from_millis(500)).await;
    patient.send(json!({"type": "ping", "id": 7})).await?;
    assert_eq!(patient.expect("pong").await?["id"], 7);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_resumes_its_seat_with_its_token() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    let grant = visit.patient["grant"].clone();
    let mut first = Client::join(&server, &grant).await?;
    let joined = first.expect("joined").await?;
    let token = text(&joined["session"])?;
    let offer = first.expect("offer").await?;
    drop(first);

    let mut wrong = Client::connect(&server).await?;
    wrong
        .send(json!({"type": "resume", "grant": grant, "session": "guess"}))
        .await?;
    assert_eq!(wrong.expect("error").await?["code"], "unauthorized");
    assert_eq!(wrong.closed().await?, 4401);

    let mut second = Client::connect(&server).await?;
    second
        .send(json!({"type": "resume", "grant": grant, "session": token}))
        .await?;
    let resumed = second.expect("joined").await?;
    assert_eq!(resumed["resumed"], json!(true));
    assert_eq!(resumed["session"], json!(token));
    assert_eq!(
        second.expect("offer").await?["sdp"],
        offer["sdp"],
        "the unanswered offer is sent again"
    );

    // Dropped again and not resumed within the window: the seat is gone for good.
    drop(second);
    tokio::time::sleep(quick_limits().resume_window + Duration::from_millis(700)).await;
    let mut late = Client::connect(&server).await?;
    late.send(json!({"type": "resume", "grant": grant, "session": token}))
        .await?;
    assert_eq!(late.expect("error").await?["code"], "unauthorized");
    let events = server
        .audit_events_with(&visit.id, &["participant.resumed", "participant.left"])
        .await?;
    assert!(
        events.iter().any(|e| e == "participant.resumed"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "participant.left"), "{events:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clinician_removes_the_patient_for_good() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    assert_eq!(clinician.expect("joined").await?["waiting"], json!(false));
    let mut patient = Client::join(&server, &visit.patient["grant"]).await?;
    let me = text(&patient.expect("joined").await?["participant"])?;
    let waiting = clinician.expect("participant_waiting").await?;
    assert_eq!(waiting["participant"], json!(me));

    clinician
        .send(json!({"type": "admit", "participant": me}))
        .await?;
    assert_eq!(
        patient.expect("participant_admitted").await?["participant"],
        json!(me)
    );
    clinician
        .send(json!({"type": "remove", "participant": me}))
        .await?;
    let left = clinician.expect("participant_left").await?;
    assert_eq!(left["reason"], "removed");
    assert_eq!(patient.closed().await?, 4403);

    removed_for_good_then_ended(&server, &visit, &mut clinician).await?;
    let wanted_all = [
        "participant.admitted",
        "participant.removed",
        "participant.left",
    ];
    audited(&server, &visit.id, &wanted_all).await?;
    Ok(())
}

/// The clinician admits and removes the patient of a visit on `server`; the patient's socket
/// closes with 4403. Answers the patient's participant id and the clinician's socket.
async fn admit_then_remove(server: &Server, visit: &common::Visit) -> TestResult<(String, Client)> {
    let mut clinician = Client::join(server, &visit.clinician["grant"]).await?;
    clinician.expect("joined").await?;
    let mut patient = Client::join(server, &visit.patient["grant"]).await?;
    let joined = patient.expect("joined").await?;
    let me = text(&joined["participant"])?;
    if joined["waiting"] == json!(true) {
        clinician.expect("participant_waiting").await?;
        clinician
            .send(json!({"type": "admit", "participant": me}))
            .await?;
        patient.expect("participant_admitted").await?;
    }
    clinician
        .send(json!({"type": "remove", "participant": me}))
        .await?;
    assert_eq!(
        clinician.expect("participant_left").await?["reason"],
        "removed"
    );
    assert_eq!(patient.closed().await?, 4403);
    Ok((me, clinician))
}

/// The removed patient gets no seat, no fresh grant and no rejoin through its link.
async fn stays_out(server: &Server, visit: &common::Visit) -> TestResult {
    let mut again = Client::join(server, &visit.patient["grant"]).await?;
    assert_eq!(again.expect("error").await?["code"], "forbidden");
    assert_eq!(again.closed().await?, 4403);
    let (status, problem) = server
        .post_any(
            None,
            "/api/grants/refresh",
            json!({"grant": visit.patient["grant"]}),
        )
        .await?;
    assert_eq!((status, &problem["code"]), (403, &json!("forbidden")));
    // The same device (cookie, UA, address) that redeemed the link.
    let (status, problem) = server
        .post_any(
            None,
            &format!("/api/visits/{}/start", visit.id),
            json!({"code": visit.patient_code}),
        )
        .await?;
    assert_eq!((status, &problem["code"]), (403, &json!("forbidden")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_holds_after_the_room_empties() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    // Without a waiting room a returning patient would go straight into the call.
    let visit = server.visit_with(json!({"waiting_room": false})).await?;
    let (_, mut clinician) = admit_then_remove(&server, &visit).await?;
    clinician.send(json!({"type": "leave"})).await?;
    assert_eq!(clinician.closed().await?, 1000);
    stays_out(&server, &visit).await?;
    // The clinician is not affected.
    let mut back = Client::join(&server, &visit.clinician["grant"]).await?;
    back.expect("joined").await?;
    let events = server
        .audit_events_with(&visit.id, &["participant.removed", "link.refused"])
        .await?;
    assert_eq!(
        events
            .iter()
            .filter(|e| *e == "participant.removed")
            .count(),
        1,
        "{events:?}"
    );
    for refused in ["grant.refresh_refused", "link.refused"] {
        assert!(
            events.iter().any(|e| e == refused),
            "no {refused} in {events:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_holds_across_a_restart() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    admit_then_remove(&server, &visit).await?;
    let server = server.restart(quick_limits()).await?;
    stays_out(&server, &visit).await?;
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    assert_eq!(clinician.expect("joined").await?["waiting"], json!(false));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_tells_its_clients_and_refuses_new_joins() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    clinician.expect("joined").await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let drained = server.hub().shutdown(deadline).await;
    assert_eq!((drained.seats, drained.complete), (1, true));
    let told = clinician.expect("server_shutdown").await?;
    assert!(told["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0));
    assert_eq!(clinician.closed().await?, 4503);
    let mut late = Client::join(&server, &visit.patient["grant"]).await?;
    assert_eq!(late.expect("error").await?["code"], "media_unavailable");
    assert_eq!(late.closed().await?, 4503);
    audited(
        &server,
        &visit.id,
        &["participant.joined", "participant.left"],
    )
    .await
}

/// The sum of the samples of gauge `name` (over its workers) in `/metrics`.
async fn gauge(server: &Server, name: &str) -> TestResult<f64> {
    let metrics = server.get_text("/metrics").await?;
    Ok(common::metric_sum(&metrics, &format!("{name}{{"), ""))
}

/// Waits up to `within` until every gauge of `wanted` reads its value; what they read last.
async fn gauges_become(
    server: &Server,
    wanted: &[(&str, f64)],
    within: Duration,
) -> TestResult<Vec<f64>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut read = Vec::new();
        for (name, _) in wanted {
            read.push(gauge(server, name).await?);
        }
        let done = read.iter().zip(wanted).all(|(got, (_, want))| got == want);
        if done || tokio::time::Instant::now() >= deadline {
            return Ok(read);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sfu_gauges_are_right_within_a_second_of_the_last_departure() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    clinician.expect("joined").await?;
    let seated = [
        ("bedside_sfu_participants", 1.0),
        ("bedside_sfu_rooms", 1.0),
    ];
    assert_eq!(
        gauges_become(&server, &seated, Duration::from_secs(3)).await?,
        [1.0, 1.0]
    );
    clinician.send(json!({"type": "leave"})).await?;
    assert_eq!(clinician.closed().await?, 1000);
    let left = Instant::now();
    let empty = [
        ("bedside_sfu_participants", 0.0),
        ("bedside_sfu_rooms", 0.0),
        ("bedside_sfu_tracks", 0.0),
    ];
    let read = gauges_become(&server, &empty, Duration::from_secs(1)).await?;
    assert_eq!(read, [0.0, 0.0, 0.0], "after {:?}", left.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clinician_ends_the_visit_over_signaling() -> TestResult {
    let server = Server::start(quick_limits()).await?;
    let visit = server.visit().await?;
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    clinician.expect("joined").await?;
    let mut patient = Client::join(&server, &visit.patient["grant"]).await?;
    patient.expect("joined").await?;

    assert_eq!(
        patient
            .error_for(Message::Text(
                json!({"type": "end_visit"}).to_string().into()
            ))
            .await?,
        "forbidden"
    );
    clinician.send(json!({"type": "end_visit"})).await?;
    for socket in [&mut patient, &mut clinician] {
        socket.expect("visit_ended").await?;
        // Nothing but the close follows: no participant_left, track or SDP frames.
        match socket.next().await? {
            Frame::Closed(code) => assert_eq!(code, 4410),
            Frame::Json(frame) => panic!("after visit_ended: {frame}"),
        }
    }
    let ended = server
        .get(&server.admin_key, &format!("/api/visits/{}", visit.id))
        .await?;
    assert_eq!(ended["status"], "ended");
    let events = server
        .audit_events_with(&visit.id, &["visit.ended"])
        .await?;
    assert!(
        events.iter().any(|e| e == "visit.ended"),
        "no visit.ended in {events:?}"
    );
    Ok(())
}

/// The patient, removed for good, cannot rejoin with its grant (`forbidden`, 4403); then the
/// visit ends over REST and the clinician is told and disconnected (4410).
async fn removed_for_good_then_ended(
    server: &Server,
    visit: &common::Visit,
    clinician: &mut Client,
) -> TestResult {
    let mut again = Client::join(server, &visit.patient["grant"]).await?;
    assert_eq!(again.expect("error").await?["code"], "forbidden");
    assert_eq!(again.closed().await?, 4403);
    server.end_visit(&visit.clinician_key, &visit.id).await?;
    clinician.expect("visit_ended").await?;
    assert_eq!(clinician.closed().await?, 4410);
    Ok(())
}

/// Every one of `wanted` is among the visit's audit events (signaling audits off the
/// socket's path, so this waits for them a little).
async fn audited(server: &Server, visit_id: &str, wanted: &[&str]) -> TestResult {
    let events = server.audit_events_with(visit_id, wanted).await?;
    for wanted in wanted {
        assert!(
            events.iter().any(|e| e == wanted),
            "no {wanted} in {events:?}"
        );
    }
    Ok(())
}

/// A node wired to a fresh Chime fake and a Chime visit on it; None without the dummy AWS
/// credentials the SDK needs (the test command sets them).
async fn chime_scene() -> TestResult<Option<(common::chime::ChimeFake, Server, common::Visit)>> {
    if !common::chime::credentials() {
        return Ok(None);
    }
    let chime = common::chime::ChimeFake::start().await?;
    let server = Server::start_with(quick_limits(), |c| chime.configure(c)).await?;
    let visit = server.visit_with(json!({"media_backend": "chime"})).await?;
    Ok(Some((chime, server, visit)))
}

/// The visit's status once it is `wanted`, or what it was after 3 s.
async fn status_becomes(server: &Server, visit: &str, wanted: &str) -> TestResult<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let read = server
            .get(&server.admin_key, &format!("/api/visits/{visit}"))
            .await?;
        let status = text(&read["status"])?;
        if status == wanted || tokio::time::Instant::now() >= deadline {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next frame is the `pong` to a ping sent now: nothing (no SDP) was queued before it.
async fn nothing_pending(client: &mut Client) -> TestResult {
    client.send(json!({"type": "ping", "id": 99})).await?;
    match client.next().await? {
        Frame::Json(value) if value["type"] == "pong" => Ok(()),
        other => Err(format!("expected only a pong, got {other:?}").into()),
    }
}

/// The attendees the Chime fake has deleted, once there are at least `count` (signaling
/// deletes them off the socket's path), or what there were after 3 s.
async fn deleted_attendees(chime: &common::chime::ChimeFake, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let deleted = chime.deleted_attendees();
        if deleted.len() >= count || tokio::time::Instant::now() >= deadline {
            return deleted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chime_visit_has_the_waiting_room_status_and_audit_without_sdp() -> TestResult {
    let Some((chime, server, visit)) = chime_scene().await? else {
        return Ok(());
    };
    assert_eq!(visit.patient["media"]["backend"], "chime");
    assert_eq!(
        visit.patient["media"]["signaling_url"],
        json!(server.ws_url())
    );
    // The patient will wait: its attendee comes without a JoinToken, so it cannot join the
    // meeting before it is admitted. The clinician never waits and gets the whole attendee.
    let patient_attendee = &visit.patient["media"]["attendee"];
    assert_eq!(
        patient_attendee["ExternalUserId"],
        visit.patient["participant_id"]
    );
    assert!(patient_attendee["AttendeeId"].is_string());
    assert!(
        patient_attendee.get("JoinToken").is_none(),
        "{patient_attendee}"
    );
    assert!(visit.clinician["media"]["attendee"]["JoinToken"].is_string());

    // SDP has no place in a Chime visit: a join with an offer is refused outright.
    let mut offering = Client::connect(&server).await?;
    offering
        .send(json!({"type": "join", "grant": visit.patient["grant"], "offer": "v=0"}))
        .await?;
    assert_eq!(offering.expect("error").await?["code"], "invalid_message");
    assert_eq!(offering.closed().await?, 4400);

    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    assert_eq!(clinician.expect("joined").await?["waiting"], json!(false));
    nothing_pending(&mut clinician).await?;

    let mut patient = Client::join(&server, &visit.patient["grant"]).await?;
    let joined = patient.expect("joined").await?;
    assert_eq!(joined["waiting"], json!(true));
    assert_eq!(joined["participants"][0]["role"], "clinician");
    let me = text(&joined["participant"])?;
    nothing_pending(&mut patient).await?;
    let waiting = clinician.expect("participant_waiting").await?;
    assert_eq!(waiting["participant"], json!(me));
    assert_eq!(
        status_becomes(&server, &visit.id, "in_progress").await?,
        "waiting",
        "nobody is in the call while the patient waits"
    );
    // A grant refresh while waiting does not hand the token out either.
    let refreshed = server
        .post(
            None,
            "/api/grants/refresh",
            json!({"grant": visit.patient["grant"]}),
        )
        .await?;
    assert_eq!(
        refreshed["media"]["attendee"]["AttendeeId"],
        patient_attendee["AttendeeId"]
    );
    assert!(refreshed["media"]["attendee"].get("JoinToken").is_none());
    assert!(joined.get("attendee").is_none(), "no token while waiting");
    for refused in [
        json!({"type": "offer", "sdp": "v=0"}),
        json!({"type": "answer", "sdp": "v=0"}),
        json!({"type": "mute", "track": format!("{me}:0"), "muted": true}),
    ] {
        let frame = Message::Text(refused.to_string().into());
        assert_eq!(patient.error_for(frame).await?, "invalid_message");
    }

    clinician
        .send(json!({"type": "admit", "participant": me}))
        .await?;
    // The admission hands the patient, and only the patient, its whole attendee: the one its
    // start created (CreateAttendee again with the same ExternalUserId), now with JoinToken.
    let admitted = patient.expect("participant_admitted").await?;
    assert_eq!(admitted["participant"], json!(me));
    let attendee = &admitted["attendee"];
    assert_eq!(attendee["AttendeeId"], patient_attendee["AttendeeId"]);
    assert_eq!(attendee["ExternalUserId"], json!(me));
    let join_token = text(&attendee["JoinToken"])?;
    let seen = clinician.expect("participant_admitted").await?;
    assert!(
        seen.get("attendee").is_none(),
        "the token is the patient's alone: {seen}"
    );
    let twice = Message::Text(
        json!({"type": "admit", "participant": me})
            .to_string()
            .into(),
    );
    assert_eq!(clinician.error_for(twice).await?, "not_waiting");
    assert_eq!(
        status_becomes(&server, &visit.id, "in_progress").await?,
        "in_progress"
    );

    // A reload of the admitted patient: in at once, and its `joined` carries the attendee
    // that its start (or rejoin) answer left without a token.
    let mut reloaded = Client::join(&server, &visit.patient["grant"]).await?;
    let rejoined = reloaded.expect("joined").await?;
    assert_eq!(rejoined["waiting"], json!(false));
    assert_eq!(rejoined["attendee"]["JoinToken"], json!(join_token));
    assert_eq!(patient.closed().await?, 4409);
    let mut patient = reloaded;

    patient.send(json!({"type": "leave"})).await?;
    assert_eq!(patient.closed().await?, 1000);
    let left = clinician.expect("participant_left").await?;
    assert_eq!(
        (&left["participant"], &left["reason"]),
        (&json!(me), &json!("left"))
    );
    // Leaving for good deletes the attendee: its JoinToken no longer opens the meeting.
    let deleted = deleted_attendees(&chime, 1).await;
    assert_eq!(
        deleted.first().map(|a| &a["AttendeeId"]),
        Some(&patient_attendee["AttendeeId"])
    );

    clinician.send(json!({"type": "end_visit"})).await?;
    clinician.expect("visit_ended").await?;
    assert_eq!(clinician.closed().await?, 4410);
    assert_eq!(status_becomes(&server, &visit.id, "ended").await?, "ended");
    let wanted_all = [
        "participant.joined",
        "participant.waiting",
        "participant.admitted",
        "visit.in_progress",
        "participant.left",
        "visit.ended",
        "media.closed",
        "media.attendee_removed",
    ];
    audited(&server, &visit.id, &wanted_all).await?;
    assert_eq!(
        chime.calls_of("DeleteMeeting"),
        chime.calls_of("CreateMeeting")[..1],
        "ending over signaling deletes the visit's meeting"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chime_visit_resumes_removes_for_good_and_ends_over_rest() -> TestResult {
    let Some((chime, server, visit)) = chime_scene().await? else {
        return Ok(());
    };
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    let token = text(&clinician.expect("joined").await?["session"])?;
    let mut patient = Client::join(&server, &visit.patient["grant"]).await?;
    let me = text(&patient.expect("joined").await?["participant"])?;
    clinician.expect("participant_waiting").await?;

    // The clinician's socket drops and resumes its seat; the patient still waits for it.
    drop(clinician);
    let mut clinician = Client::connect(&server).await?;
    clinician
        .send(json!({"type": "resume", "grant": visit.clinician["grant"], "session": token}))
        .await?;
    let resumed = clinician.expect("joined").await?;
    assert_eq!(resumed["resumed"], json!(true));
    assert_eq!(resumed["participants"][0]["waiting"], json!(true));

    clinician
        .send(json!({"type": "remove", "participant": me}))
        .await?;
    let left = clinician.expect("participant_left").await?;
    assert_eq!(left["reason"], "removed");
    assert_eq!(patient.closed().await?, 4403);
    // Removal deletes the Chime attendee (DeleteAttendee with its AttendeeId), audited.
    let deleted = deleted_attendees(&chime, 1).await;
    assert_eq!(
        deleted
            .first()
            .map(|a| (&a["ExternalUserId"], &a["AttendeeId"])),
        Some((
            &json!(me),
            &visit.patient["media"]["attendee"]["AttendeeId"]
        ))
    );
    assert_eq!(chime.calls_of("DeleteAttendee").len(), 1);
    removed_for_good_then_ended(&server, &visit, &mut clinician).await?;
    let wanted_all = [
        "participant.resumed",
        "participant.removed",
        "media.attendee_removed",
        "visit.ended",
    ];
    audited(&server, &visit.id, &wanted_all).await?;
    assert_eq!(chime.calls_of("DeleteMeeting").len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chime_admission_waits_for_the_attendee_and_an_expired_seat_loses_it() -> TestResult {
    let Some((chime, server, visit)) = chime_scene().await? else {
        return Ok(());
    };
    let mut clinician = Client::join(&server, &visit.clinician["grant"]).await?;
    clinician.expect("joined").await?;
    let mut patient = Client::join(&server, &visit.patient["grant"]).await?;
    let me = text(&patient.expect("joined").await?["participant"])?;
    clinician.expect("participant_waiting").await?;

    // Chime is down when the clinician admits: no JoinToken to hand over, so the patient is
    // not let in; it still waits and a later admit works.
    chime.set_failing(true);
    let admit = Message::Text(
        json!({"type": "admit", "participant": me})
            .to_string()
            .into(),
    );
    assert_eq!(
        clinician.error_for(admit.clone()).await?,
        "media_unavailable"
    );
    nothing_pending(&mut patient).await?;
    chime.set_failing(false);
    clinician.send_raw(admit).await?;
    let admitted = patient.expect("participant_admitted").await?;
    assert!(admitted["attendee"]["JoinToken"].is_string());

    // The patient's socket drops and its seat is not resumed within the window: the seat is
    // freed and the attendee deleted, audited with the reason.
    drop(patient);
    let left = clinician.expect("participant_left").await?;
    assert_eq!(
        (&left["participant"], &left["reason"]),
        (&json!(me), &json!("dropped"))
    );
    let deleted = deleted_attendees(&chime, 1).await;
    assert_eq!(
        deleted.first().map(|a| &a["JoinToken"]),
        Some(&admitted["attendee"]["JoinToken"])
    );
    let events = server
        .audit_events_with(&visit.id, &["media.attendee_removed"])
        .await?;
    assert!(
        events.iter().any(|e| e == "media.attendee_removed"),
        "{events:?}"
    );
    Ok(())
}
