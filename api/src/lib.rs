//! Bedside's visit domain and REST API (DESIGN.md §3–6).
//!
//! # Layout
//! - [`config`]: `bedside.toml` + `BEDSIDE_*` environment, validated; one file a section, each
//!   owning its defaults and checks.
//! - [`model`]: roles, statuses, the visit, request bodies and their rules.
//! - [`visit`]: the visit domain — every rule of a visit's life once (lifecycle, link rules,
//!   seating and removal, media placement), called by [`http`] and by signaling alike.
//! - [`events`]: the visit event bus (what signaling and other nodes react to).
//! - [`cluster`]: this node among the nodes sharing PostgreSQL: placement, heartbeats, and
//!   visit events relayed between nodes (it depends on [`events`], not on [`app`]).
//! - [`tokens`]: link codes, API keys, device secrets (hashed), ES256 session grants.
//! - [`crypto`]: PHI envelope encryption (per-tenant data keys under a key provider).
//! - [`audit`]: the append-only, hash-chained audit model.
//! - [`store`]: SQLite persistence (one writer, many readers).
//! - [`notify`]: PHI-free templates, transports (log, SMTP), the outbox and its breaker.
//! - [`media`]: media backends (SFU, Chime) behind one trait.
//! - [`aws`]: KMS, SES v2, SNS and Chime SDK Meetings adapters.
//! - [`http`]: routes, extractors, middleware, OpenAPI — thin: extract → domain → render;
//!   the domain's errors become problems there.
//! - [`app`]: the state that ties them together.

pub mod app;
pub mod audit;
pub mod aws;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod error;
pub mod events;
pub mod http;
pub mod keyfile;
pub mod media;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod ratelimit;
pub mod store;
pub mod tokens;
pub mod visit;

pub use app::App;
