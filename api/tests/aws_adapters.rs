//! The AWS adapters against moto (started by scripts/test): KMS grant signing and PHI data
//! keys, SES v2 email and SNS SMS read back from moto, the outbox circuit breaker on real
//! provider refusals, a KMS outage during `start`, and the same visit flow under both
//! signers and both media backends (Chime through the fake of its REST API).

mod support;

use std::sync::Arc;
use std::time::Duration;

use api::config::{Config, EmailTransport, KeyProviderKind, SignerKind, SmsTransport};
use api::crypto::{CryptoError, Keyring};
use api::tokens::{GRANT_AUDIENCE, GrantClaims, Grants, TokenError};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::aws::{self, ChimeFake, Proxy};
use support::{Req, TestApp, minutes_from_now, phi, start_req, visit_body};

fn claims() -> GrantClaims {
    let now = chrono::Utc::now().timestamp().unsigned_abs();
    GrantClaims {
        iss: "bedside".into(),
        aud: GRANT_AUDIENCE.into(),
        sub: "participant-1".into(),
        visit: "visit-1".into(),
        room: "visit-1".into(),
        tenant: "tenant-1".into(),
        role: api::model::ParticipantRole::Patient,
        name: "Patient".into(),
        jti: "jti-1".into(),
        iat: now,
        nbf: now,
        exp: now + 300,
    }
}

fn header_kid(token: &str) -> String {
    let header = token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64")).expect("JSON");
    header["kid"].as_str().expect("kid").to_owned()
}

/// KMS Sign (RAW, ECDSA_SHA_256) → DER → r‖s gives grants that verify with the public key
/// from GetPublicKey; the kid is the KMS key; a second key is trusted for rotation.
#[tokio::test]
async fn kms_signer_round_trip_and_rotation() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    let sdk = aws::sdk(&emu.moto).await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let key = aws::signing_key(&emu.moto).await;
    let signer = api::aws::kms::KmsSigner::connect(kms.clone(), &key)
        .await
        .expect("GetPublicKey");
    let grants = Grants::new(Arc::new(signer), "bedside").expect("grants");
    // One set of claims: two calls to `claims()` may straddle a second.
    let issued = claims();
    let token = grants.issue(&issued).await.expect("KMS signs");
    assert!(header_kid(&token).contains(&key), "kid names the KMS key");
    assert_eq!(grants.verify(&token).expect("verifies"), issued);
    // Every signature verifies (ECDSA is randomised: r and s vary in length and high bit).
    for _ in 0..10 {
        let token = grants.issue(&claims()).await.expect("KMS signs");
        grants.verify(&token).expect("verifies");
    }
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut forged = claims();
    forged.role = api::model::ParticipantRole::Clinician;
    parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).expect("JSON"));
    assert!(
        grants.verify(&parts.join(".")).is_err(),
        "tampered claims refused"
    );

    // Rotation: grants of a new key verify where it is trusted; the old key's still do.
    let next = aws::signing_key(&emu.moto).await;
    let next_signer = api::aws::kms::KmsSigner::connect(kms.clone(), &next)
        .await
        .expect("GetPublicKey");
    let next_grants = Grants::new(Arc::new(next_signer), "bedside").expect("grants");
    let new_token = next_grants.issue(&claims()).await.expect("signs");
    assert!(matches!(
        grants.verify(&new_token),
        Err(TokenError::Invalid("unknown key id"))
    ));
    let (kid, point) = api::aws::kms::public_key(&kms, &next).await.expect("key");
    grants.trust_key(&kid, &point).expect("trusted");
    grants.verify(&new_token).expect("rotated key verifies");
    grants.verify(&token).expect("old key still verifies");

    // A symmetric key is not a signing key.
    let symmetric = aws::symmetric_key(&emu.moto).await;
    assert!(
        api::aws::kms::KmsSigner::connect(kms, &symmetric)
            .await
            .is_err()
    );
}

/// GenerateDataKey/Decrypt: a tenant key made through KMS decrypts in a fresh keyring
/// (Decrypt), and is bound to its tenant by encryption context.
#[tokio::test]
async fn kms_data_keys_round_trip_bound_to_tenant() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    let kms = aws_sdk_kms::Client::new(&aws::sdk(&emu.moto).await);
    let key = aws::symmetric_key(&emu.moto).await;
    let provider = Arc::new(api::aws::kms::KmsKeyProvider::new(kms, key));
    let ring = Keyring::new(provider.clone(), Duration::from_secs(60));
    assert_eq!(ring.provider_name(), "kms");
    let wrapped = ring.create("tenant-a").await.expect("GenerateDataKey");
    assert!(wrapped.len() > 32, "KMS ciphertext blob, not the key");
    let sealed = ring
        .key("tenant-a", &wrapped)
        .await
        .expect("cached")
        .encrypt("v1", "patient_name", phi::NAME)
        .expect("encrypts");
    let fresh = Keyring::new(provider, Duration::from_secs(60));
    let key = fresh.key("tenant-a", &wrapped).await.expect("Decrypt");
    assert_eq!(
        key.decrypt("v1", "patient_name", &sealed).expect("opens"),
        phi::NAME
    );
    assert!(
        matches!(
            fresh.key("tenant-b", &wrapped).await,
            Err(CryptoError::Corrupt)
        ),
        "another tenant's encryption context does not decrypt"
    );
}

/// SES v2 and SNS deliver through the outbox: moto saw one email to the patient's address
/// from `notify.email_from` and one SMS to their phone, each with the link and the
/// clinician's first name and no PHI; the API shows both `sent` by `ses` / `sns`.
#[tokio::test]
async fn ses_email_and_sns_sms_carry_no_phi() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    aws::ses_identity(&emu.moto, "visits@clinic.example").await;
    let t = TestApp::with_config(|c| {
        aws::use_endpoint(c, &emu.moto);
        c.notify.email = EmailTransport::Ses;
        c.notify.sms = SmsTransport::Sns;
        c.notify.email_from = "visits@clinic.example".to_owned();
    })
    .await;
    let cast = t.cast().await;
    let visit = t.notified_visit(&cast, &["sms", "email"]).await;
    assert_eq!(
        api::notify::deliver_due(&t.app).await.expect("delivered"),
        2
    );

    let data = aws::moto_data(&emu.moto).await;
    let emails = data["ses"]["Message"].as_array().expect("ses messages");
    assert_eq!(emails.len(), 1, "{emails:?}");
    let email = &emails[0];
    assert_eq!(email["destinations"]["ToAddresses"], json!([phi::EMAIL]));
    assert_eq!(email["source"], "visits@clinic.example");
    let sms = data["sns"]["SMS"].as_array().expect("sns messages");
    assert_eq!(sms.len(), 1, "{sms:?}");
    assert_eq!(sms[0]["phone_number"], phi::PHONE);
    for text in [
        email["subject"].as_str().expect("subject"),
        email["body"].as_str().expect("body"),
        sms[0]["message"].as_str().expect("message"),
    ] {
        for secret in phi::ALL {
            assert!(!text.contains(secret), "PHI {secret:?} in {text:?}");
        }
    }
    for body in [&email["body"], &sms[0]["message"]] {
        let body = body.as_str().expect("text");
        assert!(body.contains("Meredith") && body.contains("/j/"), "{body}");
    }

    let listed = t
        .send(Req::get(&format!("/api/notifications?visit_id={visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    let items = listed["items"].as_array().expect("items");
    let mut transports: Vec<(&str, &str)> = items
        .iter()
        .map(|n| {
            (
                n["transport"].as_str().unwrap_or(""),
                n["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    transports.sort_unstable();
    assert_eq!(transports, [("ses", "sent"), ("sns", "sent")]);
    assert_eq!(t.audit_events("notification.sent").await.len(), 2);
}

/// Real provider refusals (SES refuses an unverified sender) are audited per attempt; after
/// `notify.breaker_threshold` consecutive failures the breaker opens, is audited, and holds
/// the next notification back without spending its attempts; each status says why.
#[tokio::test]
async fn repeated_provider_failures_open_the_breaker() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    let t = TestApp::with_config(|c| {
        aws::use_endpoint(c, &emu.moto);
        c.notify.email = EmailTransport::Ses;
        c.notify.email_from = "unverified@clinic.example".to_owned();
        c.notify.breaker_threshold = 2;
        c.notify.max_attempts = 3;
    })
    .await;
    let cast = t.cast().await;
    let mut visits = Vec::new();
    for _ in 0..3 {
        let visit = t.notified_visit(&cast, &["email"]).await;
        visits.push(visit);
    }
    assert_eq!(api::notify::deliver_due(&t.app).await.expect("pass"), 3);
    assert!(
        t.app
            .outlet(api::model::Channel::Email)
            .is_open(api::store::ms(chrono::Utc::now()))
    );

    let mut seen = Vec::new();
    for visit in &visits {
        let listed = t
            .send(Req::get(&format!("/api/notifications?visit_id={visit}")).key(&t.admin_key))
            .await
            .expect(StatusCode::OK);
        let n = listed["items"][0].clone();
        assert_eq!(n["status"], "queued", "{n}");
        seen.push((
            n["attempts"].as_i64().expect("attempts"),
            n["last_error"].as_str().unwrap_or("").to_owned(),
        ));
    }
    seen.sort();
    assert_eq!(
        seen[0].0, 0,
        "the third was held back, not attempted: {seen:?}"
    );
    assert!(seen[0].1.starts_with("circuit open: ses"), "{seen:?}");
    for (attempts, error) in &seen[1..] {
        assert_eq!(*attempts, 1);
        assert_eq!(error, "ses:SendEmail: MessageRejected");
    }
    let failed = t.audit_events("notification.attempt_failed").await;
    assert_eq!(failed.len(), 2);
    let opened = t.audit_events("notification.breaker_opened").await;
    assert_eq!(opened.len(), 1);
    for entry in failed.iter().chain(&opened) {
        assert_eq!(entry.outcome, "failure");
        let row = format!("{entry:?}");
        for secret in phi::ALL {
            assert!(!row.contains(secret), "PHI in audit: {row}");
        }
    }
    assert!(
        aws::moto_data(&emu.moto).await["ses"]["Message"]
            .as_array()
            .is_none_or(Vec::is_empty)
    );
}

/// The last attempt of a notification that keeps failing ends `failed`, audited.
#[tokio::test]
async fn exhausted_attempts_end_failed() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    let t = TestApp::with_config(|c| {
        aws::use_endpoint(c, &emu.moto);
        c.notify.email = EmailTransport::Ses;
        c.notify.email_from = "unverified@clinic.example".to_owned();
        c.notify.max_attempts = 1;
    })
    .await;
    let cast = t.cast().await;
    let visit = t.notified_visit(&cast, &["email"]).await;
    api::notify::deliver_due(&t.app).await.expect("pass");
    let listed = t
        .send(Req::get(&format!("/api/notifications?visit_id={visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(listed["items"][0]["status"], "failed");
    let failed = t.audit_events("notification.failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].reason.as_deref(),
        Some("ses:SendEmail: MessageRejected")
    );
}

/// KMS unreachable after start-up: `start` answers 503 `unavailable`, nothing is written
/// (the link stays unconsumed), and the same code works once KMS is back.
#[tokio::test]
async fn kms_outage_during_start_consumes_nothing() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    let key = aws::signing_key(&emu.moto).await;
    let proxy = Proxy::start(&emu.moto).await;
    let t = TestApp::with_config(|c| {
        aws::use_endpoint(c, &proxy.url);
        c.tokens.signer = SignerKind::Kms;
        c.tokens.kms_key_id = Some(key.clone());
    })
    .await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    proxy.set_down(true);
    start_unavailable_changes_nothing(&t, &visit, &links.patient).await;
    proxy.set_down(false);
    let started = t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    let grant = started["grant"].as_str().expect("grant");
    assert_eq!(t.app.grants.verify(grant).expect("verifies").visit, visit);
}

/// One visit, start to end: patient and clinician start with their links, the patient
/// refreshes, the clinician ends it. Checks the grants and the media answer of `backend`,
/// and returns the visit's audit events (without `media.*`) for comparison across setups.
/// `start` with `code` while a dependency is down: 503 `unavailable`, nothing consumed and
/// nothing audited.
async fn start_unavailable_changes_nothing(t: &TestApp, visit: &str, code: &str) {
    let before = t.snapshot().await;
    t.start(visit, code)
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(
        t.snapshot().await,
        before,
        "nothing consumed, nothing audited"
    );
}

async fn visit_flow(t: &TestApp, chime: Option<&ChimeFake>) -> Vec<String> {
    let cast = t.cast().await;
    let visit = t
        .create_visit(
            &cast.scheduler.key,
            visit_body(&cast.clinician.id, minutes_from_now(5)),
        )
        .await;
    let expected_backend = if chime.is_some() { "chime" } else { "sfu" };
    assert_eq!(visit["media_backend"], expected_backend);
    let visit = visit["id"].as_str().expect("id").to_owned();
    let links = t.links(&cast.scheduler.key, &visit).await;
    let patient = t.send(start_req(&visit, &links.patient)).await;
    let cookie = patient.device_cookie().expect("device cookie");
    let patient = patient.expect(StatusCode::OK);
    // The same device again (a reload): a rejoin, with the same participant.
    let rejoined = t
        .send(start_req(&visit, &links.patient).header(
            axum::http::header::COOKIE,
            &format!("bedside_device={cookie}"),
        ))
        .await
        .expect(StatusCode::OK);
    assert_eq!(rejoined["participant_id"], patient["participant_id"]);
    let clinician = t
        .start(&visit, &links.clinician)
        .await
        .expect(StatusCode::OK);
    for (answer, role) in [(&patient, "patient"), (&clinician, "clinician")] {
        let claims = t
            .app
            .grants
            .verify(answer["grant"].as_str().expect("grant"))
            .expect("grant verifies");
        assert_eq!(
            (claims.visit.as_str(), claims.role.as_str()),
            (visit.as_str(), role)
        );
        assert_eq!(answer["media"]["backend"], expected_backend);
    }
    let refreshed = t
        .send(Req::post("/api/grants/refresh").json(json!({"grant": patient["grant"]})))
        .await
        .expect(StatusCode::OK);
    match chime {
        None => {
            for answer in [&patient, &clinician, &refreshed] {
                assert!(
                    answer["media"]["signaling_url"]
                        .as_str()
                        .expect("url")
                        .ends_with("/ws")
                );
                assert!(answer["media"].get("meeting").is_none());
            }
        }
        Some(fake) => {
            let meeting = &patient["media"]["meeting"];
            let meeting_id = meeting["MeetingId"].as_str().expect("MeetingId");
            assert_eq!(meeting["ExternalMeetingId"], visit.as_str());
            assert_eq!(meeting["MediaRegion"], "eu-central-1");
            assert!(meeting["MediaPlacement"]["SignalingUrl"].as_str().is_some());
            assert_eq!(
                clinician["media"]["meeting"]["MeetingId"], meeting_id,
                "one meeting"
            );
            assert_eq!(refreshed["media"]["meeting"]["MeetingId"], meeting_id);
            assert_eq!(
                patient["media"]["attendee"]["ExternalUserId"],
                patient["participant_id"]
            );
            assert_eq!(
                clinician["media"]["attendee"]["ExternalUserId"],
                clinician["participant_id"]
            );
            assert_ne!(
                patient["media"]["attendee"]["AttendeeId"],
                clinician["media"]["attendee"]["AttendeeId"]
            );
            for again in [&refreshed, &rejoined] {
                assert_eq!(
                    again["media"]["attendee"]["AttendeeId"],
                    patient["media"]["attendee"]["AttendeeId"],
                    "refresh and rejoin keep the attendee"
                );
            }
            // The patient waits to be admitted (a waiting room is the default): its start,
            // rejoin and refresh answers leave the JoinToken out; signaling hands it over on
            // admission. The clinician never waits.
            for answer in [&patient, &rejoined, &refreshed] {
                let attendee = answer["media"]["attendee"].as_object().expect("attendee");
                assert_eq!(
                    attendee.keys().map(String::as_str).collect::<Vec<_>>(),
                    ["AttendeeId", "ExternalUserId"],
                    "no JoinToken for a waiting patient"
                );
            }
            assert!(
                clinician["media"]["attendee"]["JoinToken"]
                    .as_str()
                    .is_some()
            );
            let creates = fake.calls_of("CreateMeeting");
            assert!(
                creates
                    .iter()
                    .all(|c| c.body["ClientRequestToken"] == visit.as_str()
                        && c.body["ExternalMeetingId"] == visit.as_str()
                        && c.body["MediaRegion"] == "eu-central-1")
            );
            assert!(
                fake.calls()
                    .iter()
                    .all(|c| c.authorization.starts_with("AWS4-HMAC-SHA256")
                        && c.authorization.contains("/chime/aws4_request")),
                "SigV4-signed for the chime service"
            );
            assert_eq!(fake.live_meetings(), [meeting_id.to_owned()]);
        }
    }
    let ended = t
        .send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ended["status"], "ended");
    if let Some(fake) = chime {
        let meeting_id = patient["media"]["meeting"]["MeetingId"].clone();
        assert_eq!(
            fake.deleted(),
            [meeting_id.as_str().expect("id").to_owned()]
        );
        assert!(fake.live_meetings().is_empty());
        let deletes = fake.calls_of("DeleteMeeting");
        assert_eq!(deletes.len(), 1);
        assert_eq!(deletes[0].meeting_id.as_deref(), meeting_id.as_str());
        assert_eq!(t.audit_events("media.closed").await.len(), 1);
    }
    t.audit_of(&t.tenant_id)
        .await
        .into_iter()
        .filter(|e| e.visit_id.as_deref() == Some(visit.as_str()) && !e.event.starts_with("media."))
        .map(|e| e.event)
        .collect()
}

/// The same visit flow under the local signer and key and under KMS (signer and data keys),
/// each with the SFU and with Chime: the same grants, statuses and audit trail.
#[tokio::test]
async fn same_visit_flow_under_both_signers_and_both_backends() {
    let Some(emu) = aws::emulators() else { return };
    let _moto = aws::moto_lock(&emu.moto).await;
    let signing = aws::signing_key(&emu.moto).await;
    let wrapping = aws::symmetric_key(&emu.moto).await;
    let mut trails = Vec::new();
    for kms in [false, true] {
        for chime in [false, true] {
            let fake = ChimeFake::start().await;
            let t = TestApp::with_config(|c: &mut Config| {
                if kms {
                    aws::use_endpoint(c, &emu.moto);
                    c.tokens.signer = SignerKind::Kms;
                    c.tokens.kms_key_id = Some(signing.clone());
                    c.crypto.key_provider = KeyProviderKind::Kms;
                    c.crypto.kms_key_id = Some(wrapping.clone());
                }
                if chime {
                    aws::use_chime(c, &fake);
                }
            })
            .await;
            let trail = visit_flow(&t, chime.then_some(&fake)).await;
            trails.push(((kms, chime), trail));
        }
    }
    let (_, first) = &trails[0];
    assert!(
        first.contains(&"link.redeemed".to_owned()) && first.contains(&"visit.ended".to_owned())
    );
    for (setup, trail) in &trails[1..] {
        assert_eq!(trail, first, "audit trail of (kms, chime) = {setup:?}");
    }
}

/// `start` on a Chime visit while Chime answers 503: 503 `unavailable`, link unconsumed,
/// the call retried per `aws.max_attempts`; works once Chime recovers.
#[tokio::test]
async fn chime_outage_during_start_consumes_nothing() {
    let Some(_emu) = aws::emulators() else { return };
    let fake = ChimeFake::start().await;
    let t = TestApp::with_config(|c| aws::use_chime(c, &fake)).await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    fake.set_failing(true);
    start_unavailable_changes_nothing(&t, &visit, &links.patient).await;
    assert_eq!(
        fake.calls_of("CreateMeeting").len(),
        2,
        "retried once (aws.max_attempts = 2)"
    );
    t.send(start_req(&visit, &links.clinician))
        .await
        .problem(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    fake.set_failing(false);
    let started = t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    assert_eq!(started["media"]["backend"], "chime");
    assert_eq!(fake.live_meetings().len(), 1);
}

/// A patient of a Chime visit without a waiting room never waits: its start answer carries
/// the whole attendee, JoinToken included.
#[tokio::test]
async fn chime_without_waiting_room_hands_the_patient_its_join_token() {
    let Some(_emu) = aws::emulators() else { return };
    let fake = ChimeFake::start().await;
    let t = TestApp::with_config(|c| aws::use_chime(c, &fake)).await;
    let cast = t.cast().await;
    let mut body = visit_body(&cast.clinician.id, minutes_from_now(5));
    body["waiting_room"] = json!(false);
    let visit = t.create_visit(&cast.scheduler.key, body).await;
    let visit = visit["id"].as_str().expect("id").to_owned();
    let links = t.links(&cast.scheduler.key, &visit).await;
    let started = t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    assert!(started["media"]["attendee"]["JoinToken"].as_str().is_some());
}

/// `MediaService::remove` on Chime: the participant's attendee (found by its ExternalUserId,
/// CreateAttendee's idempotency token) is deleted with DeleteAttendee; removing it again, or
/// from a meeting already gone, is fine; an outage is an error after the retries.
#[tokio::test]
async fn chime_remove_deletes_the_participants_attendee() {
    let Some(_emu) = aws::emulators() else { return };
    let fake = ChimeFake::start().await;
    let t = TestApp::with_config(|c| aws::use_chime(c, &fake)).await;
    let chime = t
        .app
        .media(api::config::MediaBackend::Chime)
        .expect("chime backend");
    let joined = chime
        .join("visit-remove", "participant-1")
        .await
        .expect("joined");
    let meeting = joined.session_id.expect("MeetingId");
    let api::media::Media::Chime { attendee, .. } = joined.media else {
        panic!("a Chime answer");
    };
    chime
        .remove(&meeting, "participant-1")
        .await
        .expect("removed");
    let deletes = fake.calls_of("DeleteAttendee");
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].meeting_id.as_deref(), Some(meeting.as_str()));
    assert_eq!(
        deletes[0].attendee_id.as_deref(),
        attendee["AttendeeId"].as_str()
    );
    let deleted = fake.deleted_attendees();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["JoinToken"], attendee["JoinToken"]);
    assert!(
        deletes[0].authorization.contains("/chime/aws4_request"),
        "SigV4-signed"
    );

    // Joining again makes a new attendee: the deleted one's token stays dead.
    let again = chime
        .join("visit-remove", "participant-1")
        .await
        .expect("joined");
    let api::media::Media::Chime {
        attendee: second, ..
    } = again.media
    else {
        panic!("a Chime answer");
    };
    assert_ne!(second["AttendeeId"], attendee["AttendeeId"]);
    assert_ne!(second["JoinToken"], attendee["JoinToken"]);

    fake.set_failing(true);
    let err = chime
        .remove(&meeting, "participant-1")
        .await
        .expect_err("Chime is down");
    assert_eq!(
        err.to_string(),
        "media backend unavailable: chime:CreateAttendee: ServiceUnavailableException"
    );
    fake.set_failing(false);
    chime.close(&meeting).await.expect("meeting deleted");
    chime
        .remove(&meeting, "participant-1")
        .await
        .expect("a meeting already gone took its attendees with it");
}

/// A Chime failure when the visit ends does not keep the visit open: it ends, and the
/// failed DeleteMeeting is audited.
#[tokio::test]
async fn chime_delete_failure_is_audited_and_the_visit_still_ends() {
    let Some(_emu) = aws::emulators() else { return };
    let fake = ChimeFake::start().await;
    let t = TestApp::with_config(|c| aws::use_chime(c, &fake)).await;
    let cast = t.cast().await;
    let (visit, links) = t.visit_with_links(&cast, minutes_from_now(5)).await;
    t.start(&visit, &links.patient).await.expect(StatusCode::OK);
    fake.set_failing(true);
    let ended = t
        .send(Req::post(&format!("/api/visits/{visit}/end")).key(&cast.clinician.key))
        .await
        .expect(StatusCode::OK);
    assert_eq!(ended["status"], "ended");
    let closed = t.audit_events("media.closed").await;
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].outcome, "failure");
    assert_eq!(
        closed[0].reason.as_deref(),
        Some("media backend unavailable: chime:DeleteMeeting: ServiceUnavailableException")
    );
}

/// Chime stays off unless configured: a visit may not ask for it on a default node, and a
/// node with `chime.enabled` lets visits choose it while defaulting to the SFU.
#[tokio::test]
async fn chime_per_visit_override() {
    let Some(_emu) = aws::emulators() else { return };
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let mut body = visit_body(&cast.clinician.id, minutes_from_now(5));
    body["media_backend"] = json!("chime");
    t.send(
        Req::post("/api/visits")
            .key(&cast.scheduler.key)
            .json(body.clone()),
    )
    .await
    .invalid("media_backend");

    let fake = ChimeFake::start().await;
    let t = TestApp::with_config(|c| {
        aws::use_chime(c, &fake);
        c.media.backend = api::config::MediaBackend::Sfu;
        c.chime.enabled = true;
    })
    .await;
    let cast = t.cast().await;
    body["clinician_id"] = json!(cast.clinician.id);
    let chime_visit = t.create_visit(&cast.scheduler.key, body).await;
    assert_eq!(chime_visit["media_backend"], "chime");
    let sfu_visit = t
        .create_visit(
            &cast.scheduler.key,
            visit_body(&cast.clinician.id, minutes_from_now(5)),
        )
        .await;
    assert_eq!(sfu_visit["media_backend"], "sfu");
    let id = chime_visit["id"].as_str().expect("id");
    let links = t.links(&cast.scheduler.key, id).await;
    let started = t.start(id, &links.patient).await.expect(StatusCode::OK);
    assert_eq!(started["media"]["backend"], "chime");
    assert_eq!(started["media"]["meeting"]["ExternalMeetingId"], id);
}
