//! The `bedside` package: the one composition root of a node and the browser pages. The
//! binary (`src/main.rs`) and the integration tests (`tests/`) both start nodes through
//! [`node::Node`], so what the tests run is what `bedside serve` runs.
//!
//! # Layout
//! - [`node`]: wiring — the app (`api`), cluster membership, the outbox worker, the SFU
//!   workers and the signaling hub; the router that serves the API, `/ws` and the pages; the
//!   HTTP(S) server; and the one shutdown that drains them.
//! - [`http`]: serving the router over HTTP(S) under limits — header-read timeout, caps on
//!   open connections (in all, per address), the descriptor limit raised and the cap fitted.
//! - [`web`]: the browser pages embedded from `web/`.

#![warn(missing_docs)]

pub mod http;
pub mod node;
pub mod web;
