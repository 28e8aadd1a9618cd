//! AWS adapters behind Bedside's own traits: KMS as grant [`Signer`](crate::tokens::Signer)
//! and PHI [`KeyProvider`](crate::crypto::KeyProvider), SES v2 and SNS as notification
//! [`Transport`](crate::notify::Transport)s, Chime SDK Meetings as a
//! [`MediaService`](crate::media::MediaService).
//!
//! Every client is built from one [`aws_config::SdkConfig`] made by [`sdk_config`], which
//! carries the timeouts and the retry policy, so no AWS call can hang a request: a call
//! that is still failing after `aws.max_attempts` attempts or `aws.operation_timeout_ms`
//! becomes an error the caller maps to 503 `unavailable` (or to an outbox retry).

pub mod chime;
pub mod kms;
pub mod ses;
pub mod sns;

use std::error::Error as _;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};

use crate::config::AwsConfig;

/// The shared SDK configuration: region and endpoint from `[aws]` (else the standard chain),
/// credentials from the standard chain, and Bedside's timeouts and retries.
pub async fn sdk_config(aws: &AwsConfig) -> SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(aws.connect_timeout_ms))
        .operation_attempt_timeout(Duration::from_millis(aws.attempt_timeout_ms))
        .operation_timeout(Duration::from_millis(aws.operation_timeout_ms))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        // Standard mode: exponential backoff with jitter, retrying throttling, 5xx and
        // transient network errors only.
        .retry_config(RetryConfig::standard().with_max_attempts(aws.max_attempts));
    if let Some(region) = &aws.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &aws.endpoint_url {
        loader = loader.endpoint_url(url.clone());
    }
    loader.load().await
}

/// A one-line description of a failed AWS call that is safe to store, log and audit: the
/// operation, and the service's error code or the kind of transport failure. Provider
/// messages are left out on purpose, since some echo the request (an SNS error can quote
/// the phone number it refused).
pub fn describe<E, R>(operation: &str, err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let what = match err {
        SdkError::ServiceError(service) => service
            .err()
            .code()
            .map_or_else(|| "service error".to_owned(), str::to_owned),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_timeout() => "timed out".to_owned(),
        SdkError::DispatchFailure(failure) if failure.is_io() => "connection failed".to_owned(),
        SdkError::ResponseError(_) => "unreadable response".to_owned(),
        SdkError::ConstructionFailure(_) | SdkError::DispatchFailure(_) => innermost(err),
        _ => "failed".to_owned(),
    };
    format!("{operation}: {what}")
}

/// A request that was not built or not sent fails mostly for missing credentials or region
/// or an unreachable endpoint; the innermost source says which (and holds no request data).
fn innermost<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let mut source = err.source();
    let mut last = String::from("not sent");
    while let Some(inner) = source {
        last = inner.to_string();
        source = inner.source();
    }
    last
}
