//! Bedside's visit domain and REST API (DESIGN.md §3–6).
//!
//! # Layout
//! - [`config`]: `bedside.toml` + `BEDSIDE_*` environment, validated; one file a section, each
//!   owning its defaults and checks.
//! - [`model`]: roles, statuses, the visit, request bodies and their rules.
//! - [`tokens`]: link codes, API keys, device secrets (hashed), ES256 session grants.
//! - [`crypto`]: PHI envelope encryption (per-tenant data keys under a key provider).
//! - [`audit`]: the append-only, hash-chained audit model.
//! - [`store`]: SQLite persistence (one writer, many readers).
//! - [`notify`]: PHI-free templates, transports (log, SMTP), the outbox and its breaker.
//! - [`media`]: media backends (SFU, Chime) behind one trait.
//! - [`aws`]: KMS, SES v2, SNS and Chime SDK Meetings adapters.
//! - [`http`]: routes, extractors, middleware, OpenAPI.
//! - [`app`]: the state that ties them together.

pub mod app;
pub mod audit;
pub mod aws;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod error;
pub mod http;
pub mod keyfile;
pub mod media;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod ratelimit;
pub mod store;
pub mod tokens;

pub use app::App;
