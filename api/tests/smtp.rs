//! Email through a real SMTP server (the aiosmtpd sink scripts/test starts): the outbox
//! delivers to the patient's address from `notify.email_from`, the message holds the link
//! and the clinician's first name and no PHI, and the notification reads `sent` by `smtp`.

mod support;

use api::config::{EmailTransport, SmtpTls};
use axum::http::StatusCode;
use support::aws;
use support::{Req, TestApp, phi};

#[tokio::test]
async fn smtp_delivers_a_phi_free_invitation() {
    let Some(emu) = aws::emulators() else { return };
    let (host, port) = emu.smtp.rsplit_once(':').expect("host:port");
    let t = TestApp::with_config(|c| {
        c.notify.email = EmailTransport::Smtp;
        c.notify.email_from = "visits@clinic.example".to_owned();
        c.smtp.host = host.to_owned();
        c.smtp.port = port.parse().expect("port");
        // The sink speaks plain SMTP on loopback only.
        c.smtp.tls = SmtpTls::None;
    })
    .await;
    let cast = t.cast().await;
    let visit = t.notified_visit(&cast, &["email"]).await;
    assert_eq!(
        api::notify::deliver_due(&t.app).await.expect("delivered"),
        1
    );

    // Other test runs may share the sink: find this run's message by its link.
    let listed = t
        .send(Req::get(&format!("/api/notifications?visit_id={visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    let item = &listed["items"][0];
    assert_eq!(
        (item["transport"].as_str(), item["status"].as_str()),
        (Some("smtp"), Some("sent"))
    );
    let body = item["body"].as_str().expect("body");
    let url = body
        .split_whitespace()
        .find(|w| w.contains("/j/"))
        .expect("a link in the body");
    let mails = aws::mails(&emu.maildir);
    let mail = mails
        .iter()
        .find(|m| m.raw.contains(url))
        .unwrap_or_else(|| panic!("no mail with {url} among {}", mails.len()));
    assert_eq!(mail.rcpt_to, phi::EMAIL);
    assert_eq!(mail.mail_from, "visits@clinic.example");
    assert!(
        mail.raw.contains("Subject: Your video visit"),
        "{}",
        mail.raw
    );
    assert!(mail.raw.contains("Meredith"), "{}", mail.raw);
    let without_envelope: String = mail
        .raw
        .lines()
        .filter(|l| !l.starts_with("X-RcptTo:") && !l.starts_with("To:"))
        .collect::<Vec<_>>()
        .join("\n");
    for secret in phi::ALL {
        assert!(
            !without_envelope.contains(secret),
            "PHI {secret:?} in {}",
            mail.raw
        );
    }
}

#[tokio::test]
async fn smtp_refusal_is_a_retry_not_a_crash() {
    let Some(_emu) = aws::emulators() else { return };
    // A port nobody listens on: connection refused, the notification stays queued.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let t = TestApp::with_config(|c| {
        c.notify.email = EmailTransport::Smtp;
        c.smtp.host = "127.0.0.1".to_owned();
        c.smtp.port = port;
        c.smtp.tls = SmtpTls::None;
        c.smtp.timeout_ms = 2_000;
    })
    .await;
    let cast = t.cast().await;
    let visit = t.notified_visit(&cast, &["email"]).await;
    api::notify::deliver_due(&t.app).await.expect("pass");
    let listed = t
        .send(Req::get(&format!("/api/notifications?visit_id={visit}")).key(&t.admin_key))
        .await
        .expect(StatusCode::OK);
    let item = &listed["items"][0];
    assert_eq!(item["status"], "queued");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["last_error"], "smtp: connection failed");
}
