//! Email through an SMTP relay (lettre on rustls with aws-lc-rs: no OpenSSL).

use std::time::Duration;

use futures::future::BoxFuture;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use super::{Message, Transport, TransportError};
use crate::config::{SmtpConfig, SmtpTls};

/// Sends plain-text emails through `[smtp]`.
pub struct SmtpTransport {
    mailer: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for SmtpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpTransport").finish_non_exhaustive()
    }
}

impl SmtpTransport {
    /// A transport for the relay of `config`, sending as `from`.
    pub fn new(config: &SmtpConfig, from: &str) -> Result<Self, TransportError> {
        let host = config.host.as_str();
        let builder = match config.tls {
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
                host,
            )),
        }
        .map_err(|err| TransportError(format!("smtp: {}", describe(&err))))?;
        let mut builder = builder
            .port(config.port)
            .timeout(Some(Duration::from_millis(config.timeout_ms)));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let from = from
            .parse()
            .map_err(|_| TransportError("smtp: notify.email_from is not an address".into()))?;
        Ok(Self {
            mailer: builder.build(),
            from,
        })
    }
}

/// What went wrong, without the server's text: a rejection often quotes the recipient.
fn describe(err: &lettre::transport::smtp::Error) -> String {
    let code = err
        .status()
        .map(|code| format!(" {code}"))
        .unwrap_or_default();
    if err.is_permanent() {
        format!("rejected permanently{code}")
    } else if err.is_transient() {
        format!("rejected for now{code}")
    } else if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_tls() {
        "TLS failed".to_owned()
    } else {
        "connection failed".to_owned()
    }
}

impl Transport for SmtpTransport {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let to: Mailbox = message
                .to
                .parse()
                .map_err(|_| TransportError("smtp: recipient is not an address".into()))?;
            let email = lettre::Message::builder()
                .from(self.from.clone())
                .to(to)
                .subject(message.subject.clone())
                .header(ContentType::TEXT_PLAIN)
                .body(message.body.clone())
                .map_err(|_| TransportError("smtp: cannot build the message".into()))?;
            self.mailer
                .send(email)
                .await
                .map_err(|err| TransportError(format!("smtp: {}", describe(&err))))?;
            Ok(())
        })
    }
}
