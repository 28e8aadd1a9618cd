//! Bad input on every route gets its documented status and problem `code`, and changes
//! nothing: malformed JSON, unknown fields, wrong types, bad times, durations and phones,
//! oversized bodies, unknown and other-tenant ids, a clinician probing another clinician's
//! visit, revoked API keys and forged grants.

mod support;

use api::audit::Actor;
use api::model::StaffRole;
use api::tokens::{GRANT_AUDIENCE, Grants, LocalSigner};
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::{Cast, Req, TestApp, minutes_from_now, start_req, visit_body};

/// A visit scheduled now with links issued, and everything needed to call every route.
struct Scene {
    t: TestApp,
    cast: Cast,
    visit_id: String,
    patient_code: String,
}

async fn scene() -> Scene {
    let t = TestApp::new().await;
    let cast = t.cast().await;
    let (visit_id, links) = t.visit_with_links(&cast, minutes_from_now(0)).await;
    Scene {
        t,
        cast,
        visit_id,
        patient_code: links.patient,
    }
}

/// Every route that reads a JSON body: (name, request without body, a valid body).
fn json_routes(s: &Scene) -> Vec<(&'static str, Req, Value)> {
    let v = &s.visit_id;
    let sched = &s.cast.scheduler.key;
    vec![
        (
            "staff",
            Req::post("/api/staff").key(&s.t.admin_key),
            json!({"role": "scheduler", "display_name": "Pat"}),
        ),
        (
            "visit create",
            Req::post("/api/visits").key(sched),
            visit_body(&s.cast.clinician.id, minutes_from_now(60)),
        ),
        (
            "visit patch",
            Req::patch(&format!("/api/visits/{v}")).key(sched),
            json!({"duration_minutes": 20}),
        ),
        (
            "notify",
            Req::post(&format!("/api/visits/{v}/notify")).key(sched),
            json!({"channels": ["sms"]}),
        ),
        (
            "resend-link",
            Req::post(&format!("/api/visits/{v}/resend-link")).key(sched),
            json!({"channels": ["email"]}),
        ),
        (
            "redeem",
            Req::post("/api/token/redeem"),
            json!({"code": s.patient_code}),
        ),
        (
            "start",
            Req::post(&format!("/api/visits/{v}/start")),
            json!({"code": s.patient_code}),
        ),
        (
            "start-authenticated",
            Req::post(&format!("/api/visits/{v}/start-authenticated")).key(&s.cast.clinician.key),
            json!({"display_name": "Dr Grey"}),
        ),
        (
            "grant refresh",
            Req::post("/api/grants/refresh"),
            json!({"grant": "x.y.z"}),
        ),
    ]
}

/// Rebuilds the route list (requests are consumed by sending).
fn route(s: &Scene, name: &str) -> (Req, Value) {
    json_routes(s)
        .into_iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, req, body)| (req, body))
        .expect("route")
}

const ROUTES: [&str; 9] = [
    "staff",
    "visit create",
    "visit patch",
    "notify",
    "resend-link",
    "redeem",
    "start",
    "start-authenticated",
    "grant refresh",
];

/// A field of each route's body and a value of the wrong JSON type for it.
fn wrong_type(name: &str) -> (&'static str, Value) {
    match name {
        "staff" => ("role", json!(5)),
        "visit create" => ("duration_minutes", json!("30")),
        "visit patch" => ("waiting_room", json!("yes")),
        "notify" | "resend-link" => ("channels", json!("sms")),
        "redeem" | "start" => ("code", json!(12345)),
        "start-authenticated" => ("display_name", json!(["a"])),
        "grant refresh" => ("grant", json!({"jwt": true})),
        other => panic!("no wrong type for {other}"),
    }
}

/// Sends `body` bytes to route `name`.
async fn send_raw(s: &Scene, name: &str, content_type: &str, body: Vec<u8>) -> support::Resp {
    let (req, _) = route(s, name);
    s.t.send(req.raw(content_type, body)).await
}

#[tokio::test]
async fn malformed_unknown_wrong_typed_and_oversized_bodies_change_nothing() {
    let s = scene().await;
    let before = s.t.snapshot().await;
    for name in ROUTES {
        let (_, valid) = route(&s, name);

        // Malformed JSON, trailing data, and not JSON at all.
        for bad in [
            &br#"{"code": "#[..],
            br#"{"a": 1,}"#,
            br#"{} {}"#,
            b"\xff\xfe",
        ] {
            let resp = send_raw(&s, name, "application/json", bad.to_vec()).await;
            resp.problem(StatusCode::BAD_REQUEST, "invalid_request");
        }
        // start-authenticated documents its body as optional; every other body is required
        // and must be declared JSON.
        if name != "start-authenticated" {
            let resp = send_raw(&s, name, "application/json", Vec::new()).await;
            resp.problem(StatusCode::BAD_REQUEST, "invalid_request");
            let resp = send_raw(&s, name, "text/plain", valid.to_string().into_bytes()).await;
            resp.problem(StatusCode::BAD_REQUEST, "invalid_request");
        }

        // Unknown field at the top.
        let mut unknown = valid.clone();
        unknown["bogus_field"] = json!(1);
        let resp = send_raw(
            &s,
            name,
            "application/json",
            unknown.to_string().into_bytes(),
        )
        .await;
        let problem = resp.problem(StatusCode::BAD_REQUEST, "invalid_request");
        assert!(
            problem.to_string().contains("bogus_field"),
            "{name}: the problem names the unknown field: {problem}"
        );

        // Wrong type of a known field, named by the problem.
        let (field, value) = wrong_type(name);
        let mut typed = valid.clone();
        typed[field] = value;
        let resp = send_raw(&s, name, "application/json", typed.to_string().into_bytes()).await;
        resp.invalid(field);

        // Over the 64 KiB limit: valid JSON, padded.
        let mut big = valid.clone();
        big["padding"] = json!("x".repeat(70 * 1024));
        let resp = send_raw(&s, name, "application/json", big.to_string().into_bytes()).await;
        resp.problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    }

    // An unknown field nested in the patient is refused too.
    let mut nested = visit_body(&s.cast.clinician.id, minutes_from_now(60));
    nested["patient"]["ssn"] = json!("123-45-6789");
    let resp =
        s.t.send(
            Req::post("/api/visits")
                .key(&s.cast.scheduler.key)
                .json(nested),
        )
        .await;
    resp.problem(StatusCode::BAD_REQUEST, "invalid_request");

    assert_eq!(
        s.t.snapshot().await,
        before,
        "refused bodies changed nothing"
    );

    // The link is untouched: it still redeems and starts.
    s.t.redeem(&s.patient_code).await.expect(StatusCode::OK);
    s.t.start(&s.visit_id, &s.patient_code)
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_body_just_under_the_limit_is_read() {
    // Guards the other side of the limit: 60 KiB of valid JSON is parsed (and refused for
    // its content, not its size).
    let s = scene().await;
    let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
    body["notes"] = json!("n".repeat(60 * 1024));
    let resp =
        s.t.send(
            Req::post("/api/visits")
                .key(&s.cast.scheduler.key)
                .json(body),
        )
        .await;
    resp.invalid("notes");
}

#[tokio::test]
async fn times_must_be_rfc3339() {
    let s = scene().await;
    let before = s.t.snapshot().await;
    let sched = s.cast.scheduler.key.clone();
    for bad in [
        json!("2030-03-01T10:00:00"),
        json!("2030-03-01"),
        json!("01/03/2030 10:00"),
        json!("next tuesday"),
        json!(""),
        json!(1_900_000_000),
    ] {
        let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
        body["scheduled_at"] = bad.clone();
        let resp =
            s.t.send(Req::post("/api/visits").key(&sched).json(body))
                .await;
        resp.invalid("scheduled_at");

        let resp =
            s.t.send(
                Req::patch(&format!("/api/visits/{}", s.visit_id))
                    .key(&sched)
                    .json(json!({"scheduled_at": bad})),
            )
            .await;
        resp.invalid("scheduled_at");
    }
    for query in [
        "/api/visits?from=yesterday",
        "/api/visits?to=2030-03-01",
        "/api/audit?from=2030-03-01T10:00:00",
    ] {
        let resp = s.t.send(Req::get(query).key(&s.t.admin_key)).await;
        resp.invalid("query");
    }
    assert_eq!(s.t.snapshot().await, before);

    // An offset other than Z is RFC 3339 and accepted.
    let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
    body["scheduled_at"] = json!("2030-03-01T10:00:00+02:00");
    let visit = s.t.create_visit(&sched, body).await;
    assert_eq!(visit["scheduled_at"], "2030-03-01T08:00:00Z");
}

#[tokio::test]
async fn duration_must_be_5_to_240_minutes() {
    let s = scene().await;
    let sched = s.cast.scheduler.key.clone();
    let before = s.t.snapshot().await;
    for minutes in [0, 4, 241, 10_000] {
        let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
        body["duration_minutes"] = json!(minutes);
        let resp =
            s.t.send(Req::post("/api/visits").key(&sched).json(body))
                .await;
        resp.invalid("duration_minutes");
        let resp =
            s.t.send(
                Req::patch(&format!("/api/visits/{}", s.visit_id))
                    .key(&sched)
                    .json(json!({"duration_minutes": minutes})),
            )
            .await;
        resp.invalid("duration_minutes");
    }
    let mut negative = visit_body(&s.cast.clinician.id, minutes_from_now(60));
    negative["duration_minutes"] = json!(-30);
    let resp =
        s.t.send(Req::post("/api/visits").key(&sched).json(negative))
            .await;
    resp.invalid("duration_minutes");
    assert_eq!(s.t.snapshot().await, before);

    // Both bounds are inside the range.
    for minutes in [5, 240] {
        let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
        body["duration_minutes"] = json!(minutes);
        let visit = s.t.create_visit(&sched, body).await;
        assert_eq!(visit["duration_minutes"], minutes);
    }
}

#[tokio::test]
async fn phone_must_be_e164_and_email_plausible() {
    let s = scene().await;
    let sched = s.cast.scheduler.key.clone();
    let before = s.t.snapshot().await;
    for phone in [
        "5557654321",
        "+1 555 765 4321",
        "+1-555-765-4321",
        "+0155576543",
        "+1555765432101234",
        "+1",
        "tel:+15557654321",
    ] {
        let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
        body["patient"]["phone"] = json!(phone);
        let resp =
            s.t.send(Req::post("/api/visits").key(&sched).json(body))
                .await;
        let problem = resp.invalid("patient.phone");
        assert!(
            phone.len() < 5 || !problem.to_string().contains(phone),
            "the problem does not echo the phone number"
        );
        let resp =
            s.t.send(
                Req::patch(&format!("/api/visits/{}", s.visit_id))
                    .key(&sched)
                    .json(json!({"patient": {"name": "A B", "phone": phone}})),
            )
            .await;
        resp.invalid("patient.phone");
    }
    let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
    body["patient"]["email"] = json!("not-an-email");
    let resp =
        s.t.send(Req::post("/api/visits").key(&sched).json(body))
            .await;
    resp.invalid("patient.email");
    // Several errors at once are all reported.
    let mut body = visit_body(&s.cast.clinician.id, minutes_from_now(60));
    body["patient"]["phone"] = json!("555");
    body["duration_minutes"] = json!(1);
    body["patient"]["name"] = json!("  ");
    let problem =
        s.t.send(Req::post("/api/visits").key(&sched).json(body))
            .await
            .invalid("patient.phone");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"duration_minutes") && fields.contains(&"patient.name"));
    assert_eq!(s.t.snapshot().await, before);
}

/// Every route that takes a visit id, for `key`: they must all say 404 `not_found`.
async fn assert_all_not_found(t: &TestApp, key: &str, visit_id: &str) {
    let v = visit_id;
    let cases = [
        Req::get(&format!("/api/visits/{v}")),
        Req::patch(&format!("/api/visits/{v}")).json(json!({"duration_minutes": 20})),
        Req::post(&format!("/api/visits/{v}/cancel")),
        Req::post(&format!("/api/visits/{v}/end")),
        Req::post(&format!("/api/visits/{v}/links")),
        Req::post(&format!("/api/visits/{v}/notify")).json(json!({"channels": ["sms"]})),
        Req::post(&format!("/api/visits/{v}/resend-link")).json(json!({"channels": ["sms"]})),
        Req::get(&format!("/api/notifications?visit_id={v}")),
    ];
    for req in cases {
        let resp = t.send(req.key(key)).await;
        resp.problem(StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn unknown_and_other_tenant_ids_are_404_never_403() {
    let s = scene().await;
    let (_, other_admin) = s.t.new_tenant("elsewhere").await;
    let other_clinician =
        s.t.staff_with(&other_admin, "clinician", "Cristina Yang")
            .await;
    let before = s.t.snapshot().await;

    // An id that exists nowhere, asked by this tenant's admin.
    let unknown = "01900000-0000-7000-8000-000000000000";
    assert_all_not_found(&s.t, &s.t.admin_key, unknown).await;
    // This tenant's visit, asked by the other tenant's admin: the same answers.
    assert_all_not_found(&s.t, &other_admin, &s.visit_id).await;
    for (key, id) in [
        (&other_clinician.key, &s.visit_id),
        (&s.cast.clinician.key, &unknown.to_owned()),
    ] {
        let resp =
            s.t.send(Req::post(&format!("/api/visits/{id}/start-authenticated")).key(key))
                .await;
        resp.problem(StatusCode::NOT_FOUND, "not_found");
    }
    // Unknown routes are problems too.
    s.t.send(Req::get("/api/nothing-here").key(&s.t.admin_key))
        .await
        .problem(StatusCode::NOT_FOUND, "not_found");

    // Listing and auditing in the other tenant reveal nothing of this one.
    let page =
        s.t.send(Req::get("/api/visits").key(&other_admin))
            .await
            .expect(StatusCode::OK);
    assert_eq!(page["items"], json!([]));
    let audit =
        s.t.send(Req::get(&format!("/api/audit?visit_id={}", s.visit_id)).key(&other_admin))
            .await
            .expect(StatusCode::OK);
    assert_eq!(audit["items"], json!([]));

    // A clinician of another tenant cannot be booked: the same answer as an unknown id.
    let mut foreign = visit_body(&other_clinician.id, minutes_from_now(60));
    let resp_foreign =
        s.t.send(
            Req::post("/api/visits")
                .key(&s.cast.scheduler.key)
                .json(foreign.clone()),
        )
        .await;
    foreign["clinician_id"] = json!(unknown);
    let resp_unknown =
        s.t.send(
            Req::post("/api/visits")
                .key(&s.cast.scheduler.key)
                .json(foreign),
        )
        .await;
    assert_eq!(
        resp_foreign.invalid("clinician_id"),
        resp_unknown.invalid("clinician_id")
    );

    // A valid code presented for another visit id.
    s.t.send(start_req(unknown, &s.patient_code))
        .await
        .problem(StatusCode::NOT_FOUND, "link_invalid");

    assert_eq!(s.t.snapshot().await, before, "404s changed nothing");
    // And this tenant still sees its visit.
    s.t.send(Req::get(&format!("/api/visits/{}", s.visit_id)).key(&s.t.admin_key))
        .await
        .expect(StatusCode::OK);
}

#[tokio::test]
async fn a_clinician_cannot_see_or_touch_another_clinicians_visit() {
    let s = scene().await;
    let other = s.cast.other_clinician.key.clone();
    let before = s.t.snapshot().await;
    let v = &s.visit_id;
    for req in [
        Req::get(&format!("/api/visits/{v}")),
        Req::post(&format!("/api/visits/{v}/cancel")),
        Req::post(&format!("/api/visits/{v}/end")),
        Req::post(&format!("/api/visits/{v}/start-authenticated")),
    ] {
        s.t.send(req.key(&other))
            .await
            .problem(StatusCode::NOT_FOUND, "not_found");
    }
    // Their list does not include it, even when asking for the other clinician by id.
    for query in [
        "/api/visits".to_owned(),
        format!("/api/visits?clinician_id={}", s.cast.clinician.id),
    ] {
        let page =
            s.t.send(Req::get(&query).key(&other))
                .await
                .expect(StatusCode::OK);
        assert_eq!(page["items"], json!([]), "{query}");
    }
    // Admin-only and scheduler routes are refused by role (no id is looked up).
    s.t.send(
        Req::patch(&format!("/api/visits/{v}"))
            .key(&other)
            .json(json!({"duration_minutes": 20})),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "forbidden");
    s.t.send(Req::get(&format!("/api/audit?visit_id={v}")).key(&other))
        .await
        .problem(StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(s.t.snapshot().await, before);

    // Its own clinician sees it, with PHI, and their list has it.
    let visit =
        s.t.send(Req::get(&format!("/api/visits/{v}")).key(&s.cast.clinician.key))
            .await
            .expect(StatusCode::OK);
    assert_eq!(visit["patient"]["name"], support::phi::NAME);
    let page =
        s.t.send(Req::get("/api/visits").key(&s.cast.clinician.key))
            .await
            .expect(StatusCode::OK);
    assert_eq!(page["items"][0]["id"], json!(v));
}

#[tokio::test]
async fn revoked_unknown_and_missing_keys_are_401() {
    let s = scene().await;
    let (key_id, key) =
        s.t.app
            .create_api_key(
                &s.t.tenant_id,
                StaffRole::Scheduler,
                None,
                &Actor::local("test"),
            )
            .await
            .expect("key");
    let key = key.expose().to_owned();
    // The key works…
    s.t.create_visit(&key, visit_body(&s.cast.clinician.id, minutes_from_now(30)))
        .await;
    s.t.app
        .revoke_api_key(&key_id, &Actor::local("test"))
        .await
        .expect("revoked");
    let before = s.t.snapshot().await;

    // …until it is revoked.
    let v = &s.visit_id;
    for req in [
        Req::get("/api/visits"),
        Req::get(&format!("/api/visits/{v}")),
        Req::post("/api/visits").json(visit_body(&s.cast.clinician.id, minutes_from_now(30))),
        Req::post(&format!("/api/visits/{v}/cancel")),
        Req::post(&format!("/api/visits/{v}/links")),
    ] {
        s.t.send(req.key(&key))
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    let after = s.t.snapshot().await;
    assert_eq!(after.state, before.state, "a revoked key changes nothing");
    let refusals = s.t.audit_events("auth.failed").await;
    assert_eq!(refusals.len(), 5, "each revoked-key use is audited");
    assert!(
        refusals
            .iter()
            .all(|r| r.outcome == "refused" && r.reason.as_deref() == Some("revoked key"))
    );
    assert!(refusals[0].details.contains(&key_id));
    assert!(
        !refusals[0].details.contains(&key),
        "the secret is not audited"
    );

    // Missing, malformed and unknown keys.
    let unknown = format!("bsk_{}", "A".repeat(40));
    let before = s.t.snapshot().await;
    for req in [
        Req::get("/api/visits"),
        Req::get("/api/visits").header(axum::http::header::AUTHORIZATION, "Basic Zm9vOmJhcg=="),
        Req::get("/api/visits").key("not-a-bedside-key"),
        Req::get("/api/visits").key(&unknown),
        Req::post("/api/staff")
            .key(&unknown)
            .json(json!({"role": "admin", "display_name": "Mallory"})),
    ] {
        s.t.send(req)
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    assert_eq!(s.t.snapshot().await, before);
}

/// A grant's three parts.
fn parts(grant: &str) -> (String, String, String) {
    let mut it = grant.split('.').map(str::to_owned);
    (
        it.next().expect("header"),
        it.next().expect("payload"),
        it.next().expect("signature"),
    )
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

fn unb64(part: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

#[tokio::test]
async fn expired_tampered_unsigned_and_foreign_grants_are_401() {
    let s = scene().await;
    let started =
        s.t.start(&s.visit_id, &s.patient_code)
            .await
            .expect(StatusCode::OK);
    let grant = started["grant"].as_str().expect("grant").to_owned();
    let claims = s.t.app.grants.verify(&grant).expect("a valid grant");
    let refresh = |g: &str| Req::post("/api/grants/refresh").json(json!({"grant": g}));
    // The genuine grant refreshes (so the refusals below are about the forgeries).
    s.t.send(refresh(&grant)).await.expect(StatusCode::OK);
    let before = s.t.snapshot().await;

    let now = u64::try_from(chrono::Utc::now().timestamp()).expect("after 1970");
    let mut expired = claims.clone();
    expired.iat = now - 7200;
    expired.nbf = now - 7200;
    expired.exp = now - 3600;
    let expired = s.t.app.grants.issue(&expired).await.expect("signed");

    let (header, payload, signature) = parts(&grant);
    let mut forged_claims = unb64(&payload);
    forged_claims["role"] = json!("clinician");
    let tampered = format!("{header}.{}.{signature}", b64(&forged_claims));
    let mut sig = URL_SAFE_NO_PAD.decode(&signature).expect("sig");
    sig[10] ^= 1;
    let bad_signature = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(sig));

    let mut none_header = unb64(&header);
    none_header["alg"] = json!("none");
    let alg_none = format!("{}.{}.", b64(&none_header), b64(&forged_claims));
    let alg_none_signed = format!("{}.{payload}.{signature}", b64(&none_header));
    let mut hs_header = unb64(&header);
    hs_header["alg"] = json!("HS256");
    let alg_hs256 = format!("{}.{payload}.{signature}", b64(&hs_header));

    let other_dir = tempfile::tempdir().expect("dir");
    let other_signer =
        LocalSigner::load_or_create(&other_dir.path().join("other.p8")).expect("key");
    let foreign = Grants::new(std::sync::Arc::new(other_signer), "bedside")
        .expect("grants")
        .issue(&claims)
        .await
        .expect("signed");
    let mut unknown_kid_header = unb64(&header);
    unknown_kid_header["kid"] = json!("0000000000000000");
    let unknown_kid = format!("{}.{payload}.{signature}", b64(&unknown_kid_header));

    let mut wrong_aud = claims.clone();
    wrong_aud.aud = format!("{GRANT_AUDIENCE}-not");
    let wrong_aud = s.t.app.grants.issue(&wrong_aud).await.expect("signed");
    let mut stranger = claims.clone();
    stranger.sub = "01900000-0000-7000-8000-00000000beef".to_owned();
    let stranger = s.t.app.grants.issue(&stranger).await.expect("signed");

    for (what, forged) in [
        ("expired", expired.as_str()),
        ("tampered payload", &tampered),
        ("bad signature", &bad_signature),
        ("alg none, unsigned", &alg_none),
        ("alg none, signature kept", &alg_none_signed),
        ("alg HS256", &alg_hs256),
        ("signed by an unknown key", &foreign),
        ("unknown kid", &unknown_kid),
        ("wrong audience", &wrong_aud),
        ("participant not in the visit", &stranger),
        ("garbage", "not-a-jwt"),
        ("empty", ""),
    ] {
        let resp = s.t.send(refresh(forged)).await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            resp.text()
        );
        resp.problem(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    assert_eq!(
        s.t.snapshot().await,
        before,
        "forged grants changed nothing"
    );
    s.t.send(refresh(&grant)).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn query_strings_are_strict() {
    let s = scene().await;
    let admin = s.t.admin_key.clone();
    for query in [
        "/api/visits?bogus=1",
        "/api/visits?limit=lots",
        "/api/visits?status=pending",
        "/api/audit?limit=-1",
        "/api/notifications",
    ] {
        s.t.send(Req::get(query).key(&admin)).await.invalid("query");
    }
    for (query, field) in [
        ("/api/visits?limit=0", "limit"),
        ("/api/visits?limit=101", "limit"),
        ("/api/visits?cursor=not-a-cursor", "cursor"),
        ("/api/audit?limit=1001", "limit"),
        ("/api/audit?cursor=abc", "cursor"),
        ("/api/audit/export?limit=1001", "limit"),
        ("/api/audit/export?limit=0", "limit"),
    ] {
        s.t.send(Req::get(query).key(&admin)).await.invalid(field);
    }
}

/// The OpenAPI document states the bounds the routes enforce, so a client (or a schema-based
/// fuzzer) built from it sends nothing the server refuses as out of range.
#[tokio::test]
async fn the_openapi_document_states_the_page_size_bounds() {
    let t = TestApp::new().await;
    let document = t
        .send(Req::get("/api/openapi.json"))
        .await
        .expect(StatusCode::OK);
    for (path, maximum) in [
        ("/api/visits", 100),
        ("/api/audit", 1000),
        ("/api/audit/export", 1000),
    ] {
        let parameters = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        let limit = parameters
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap_or_else(|| panic!("{path} has limit"));
        assert_eq!(limit["schema"]["minimum"], json!(1), "{path}: {limit}");
        assert_eq!(
            limit["schema"]["maximum"],
            json!(maximum),
            "{path}: {limit}"
        );
    }
}

/// The list routes' parameters are documented where they are read — the query string — not as
/// path parameters their paths do not have, which a client built from the document (or a
/// schema-based fuzzer) could never send.
#[tokio::test]
async fn the_openapi_document_puts_query_parameters_in_the_query() {
    let t = TestApp::new().await;
    let document = t
        .send(Req::get("/api/openapi.json"))
        .await
        .expect(StatusCode::OK);
    for path in [
        "/api/visits",
        "/api/audit",
        "/api/audit/export",
        "/api/notifications",
    ] {
        let parameters = document["paths"][path]["get"]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{path} has parameters"));
        for parameter in parameters {
            assert_eq!(parameter["in"], json!("query"), "{path}: {parameter}");
        }
    }
}

/// A request announcing a body over the limit is refused from its header, at once, over a
/// real socket: the body is never sent, and the server does not wait for it.
#[tokio::test]
async fn an_oversized_content_length_gets_413_without_the_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let t = TestApp::new().await;
    let server = support::Server::start(&t.app).await;
    let address = server.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/visits HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
        t.admin_key
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let started = std::time::Instant::now();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(2), socket.read(&mut answer))
        .await
        .expect("answered within 2 s, not after the request timeout")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    assert_eq!(t.visit_count().await, 0);
}

/// Every error response is documented as it is served — `application/problem+json` — and
/// every operation has a `default` problem for the statuses it does not list.
#[tokio::test]
async fn the_openapi_document_says_problems_are_problem_json() {
    let t = TestApp::new().await;
    let document = t
        .send(Req::get("/api/openapi.json"))
        .await
        .expect(StatusCode::OK);
    let responses = &document["paths"]["/api/visits/{id}"]["get"]["responses"];
    assert!(
        responses["404"]["content"]["application/problem+json"].is_object(),
        "{responses}"
    );
    assert!(
        responses["404"]["content"]["application/json"].is_null(),
        "{responses}"
    );
    assert!(
        responses["200"]["content"]["application/json"].is_object(),
        "{responses}"
    );
    let paths = document["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            let default = &operation["responses"]["default"]["content"]["application/problem+json"];
            assert!(
                default.is_object(),
                "{method} {path} has no default problem"
            );
        }
    }
    // What a problem looks like on the wire.
    let resp = t.send(Req::get("/api/visits/nope").key(&t.admin_key)).await;
    assert_eq!(
        resp.header("content-type"),
        Some("application/problem+json")
    );
}
