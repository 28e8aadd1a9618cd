//! Amazon SNS Publish to a phone number as the SMS [`Transport`].

use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use futures::future::BoxFuture;

use super::describe;
use crate::notify::{Message, Transport, TransportError};

/// Sends SMS with SNS Publish (`PhoneNumber`), marked transactional so carriers deliver
/// join links with priority rather than as marketing.
#[derive(Debug, Clone)]
pub struct SnsTransport {
    client: Client,
}

impl SnsTransport {
    /// A transport over `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

impl Transport for SnsTransport {
    fn name(&self) -> &'static str {
        "sns"
    }

    fn send<'a>(&'a self, message: &'a Message) -> BoxFuture<'a, Result<(), TransportError>> {
        Box::pin(async move {
            let transactional = MessageAttributeValue::builder()
                .data_type("String")
                .string_value("Transactional")
                .build()
                .map_err(|_| TransportError("sns: cannot build the message".into()))?;
            self.client
                .publish()
                .phone_number(&message.to)
                .message(&message.body)
                .message_attributes("AWS.SNS.SMS.SMSType", transactional)
                .send()
                .await
                .map_err(|err| TransportError(describe("sns:Publish", &err)))?;
            Ok(())
        })
    }
}
