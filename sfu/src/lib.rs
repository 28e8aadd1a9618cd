//! Bedside's selective forwarding unit (SFU).
//!
//! # Layout
//!
//! - [`core`]: the sans-IO router. It owns one [`str0m::Rtc`] per participant and the room
//!   graph, and it never reads a clock, blocks or touches a socket: every input carries the
//!   current time, every output is queued until the caller drains it. Tests drive whole rooms
//!   in virtual time with it. Within it, `core/forwarder.rs` holds the per-packet forwarding
//!   decision for one track to one subscriber (drop, or which payload type, sequence number,
//!   timestamp and marker to write) as a pure function of plain values, unit-tested on its
//!   own; `core/routing.rs` looks up the track and its legs and writes what it decides.
//! - [`driver`]: the tokio driver that feeds a core from a UDP socket, the ICE-TCP connections
//!   handed to it, a timer and a command channel; [`driver::Workers`], one driver per CPU core
//!   with rooms pinned to one; and [`driver::TcpFront`], the one ICE-TCP listener that hands
//!   each connection to the worker whose core expects it (`driver/tcp.rs`).
//!
//! # Run loop
//!
//! A driver owns one [`core::Core`] and repeats:
//!
//! 1. wait for the first of: datagrams on the socket, a frame from a TCP connection, the
//!    deadline last returned by [`core::Core::poll_timeout`], or a command from signaling;
//! 2. feed exactly that input: [`core::Core::handle_datagram`] for each datagram of one
//!    receive batch (or [`core::Core::handle_packet`] for a TCP frame),
//!    [`core::Core::handle_timeout`] or [`core::Core::handle_command`];
//! 3. drain: send every [`core::Core::poll_transmit`] (the UDP ones together, batched),
//!    dispatch every [`core::Core::poll_event`], then read [`core::Core::poll_timeout`] again.
//!
//! # The drain invariant
//!
//! str0m requires that every mutation of an `Rtc` is followed by draining its output until it
//! yields a timeout, before the next mutation. The core upholds this internally: each `handle_*`
//! call drains every `Rtc` it touched into its own queues before it returns. The caller's part
//! is simpler: drain the core's queues after each `handle_*` call, because the deadline from
//! `poll_timeout` is only valid once the core has been given a chance to re-arm it, and queued
//! datagrams age while they wait.

#![warn(missing_docs)]

pub mod core;
pub mod driver;
