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
//!
//! Signaling uses the api's visit domain (`api::visit`), tokens, audit model and events —
//! never its store or HTTP layer. The node that wires it to the api and the SFU workers is
//! the `bedside` package's `node`.

#![warn(missing_docs)]

pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod ws;

pub use hub::Hub;
pub use session::Limits;
pub use ws::router;
