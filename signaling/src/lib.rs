//! WebSocket signaling between browsers and Bedside's SFU (DESIGN.md §8; the protocol is
//! specified for integrators in docs/signaling.md).
//!
//! # Layout
//!
//! - [`protocol`]: the wire messages, versioned serde enums, plus error and close codes.
//! - [`session`]: the per-connection state machine, pure — join deadline, frame size, message
//!   rate, message order and role checks, unit-tested without sockets.
//! - [`room`]: one visit's room as a pure state machine — seats, waiting room, admit, remove,
//!   leave, replaced and resumed sockets, expired seats, the end of the visit and shutdown —
//!   with a unit test for every rule. Inputs in, outputs (frames, media commands, audit acts)
//!   out.
//! - [`backend`]: the media backends behind one interface: this node's SFU workers
//!   ([`backend::sfu`]) or Amazon Chime ([`backend::chime`]).
//! - [`hub`]: the rooms of this node, driven: sockets' queues, the rooms' outputs carried out,
//!   the SFU's events pumped in, visit events watched, and the drain on shutdown.
//! - [`wire`]: how ids look on the wire (UUID strings, `participant:mid` tracks).
//! - [`ws`]: the axum handler at `/ws` that connects a socket to a session and the hub.
//! - [`metrics`]: Prometheus metrics of signaling and the SFU.
//!
//! Signaling uses the api's visit domain (`api::visit`), tokens, audit model and events —
//! never its store or HTTP layer. The node that wires it to the api and the SFU workers is
//! the `bedside` package's `node`.

#![warn(missing_docs)]

pub mod backend;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod room;
pub mod session;
pub mod wire;
pub mod ws;

pub use hub::Hub;
pub use session::Limits;
pub use ws::router;
