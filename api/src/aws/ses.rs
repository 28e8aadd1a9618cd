//! Amazon SES v2 SendEmail as the email [`Transport`].

use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message as SesMessage};
use futures::future::BoxFuture;

use super::describe;
use crate::notify::{Message, Transport, TransportError};

/// Sends plain-text emails through SES v2 from `notify.email_from`, optionally through a
/// configuration set (event publishing, dedicated IP pools).
#[derive(Debug, Clone)]
pub struct SesTransport {
    client: Client,
    from: String,
    configuration_set: Option<String>,
}

impl SesTransport {
    /// A transport sending as `from`.
    pub fn new(client: Client, from: impl Into<String>, configuration_set: Option<String>) -> Self {
        Self {
            client,
            from: from.into(),
            configuration_set,
        }
    }
}

fn content(text: &str) -> Result<Content, TransportError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|_| TransportError("ses: cannot build the message".into()))
}

impl Transport for SesTransport {
    fn name(&self) -> &'static str {
        "ses"
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let email = SesMessage::builder()
                .subject(content(&message.subject)?)
                .body(Body::builder().text(content(&message.body)?).build())
                .build();
            self.client
                .send_email()
                .from_email_address(&self.from)
                .destination(Destination::builder().to_addresses(&message.to).build())
                .content(EmailContent::builder().simple(email).build())
                .set_configuration_set_name(self.configuration_set.clone())
                .send()
                .await
                .map_err(|err| TransportError(describe("ses:SendEmail", &err)))?;
            Ok(())
        })
    }
}
