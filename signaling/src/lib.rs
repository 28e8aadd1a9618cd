//! WebSocket signaling between browsers and Bedside's SFU (DESIGN.md §8; the protocol is
//! specified for integrators in docs/signaling.md).
//!
//! # Layout
//!
//! - [`protocol`]: the wire messages, versioned serde enums, plus error and close codes.
//! - [`session`]: the per-connection state machine, pure — join deadline, frame size, message
//!   rate, message order and role checks, unit-tested without sockets.
//! - [`hub`]: the rooms of this node: seats, waiting room, resume, audit, visit status, and the
//!   bridge to the SFU workers (commands in, events out).
//! - [`ws`]: the axum handler at `/ws` that connects a socket to a session and the hub.
//! - [`metrics`]: Prometheus metrics of signaling and the SFU.
//! - [`node`]: starts the SFU workers and the hub from the api's configuration and builds the
//!   router that serves the api and `/ws` together; `bedside serve` and the tests use it.

#![warn(missing_docs)]

pub mod hub;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod session;
pub mod ws;

pub use hub::Hub;
pub use session::Limits;
pub use ws::router;
