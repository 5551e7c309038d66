//! Log evidence for origin-agent: bytes of server logs in, typed events and 5xx responses out.
//!
//! # Layout
//!
//! - [`cause`]: the cause catalog (stable ids).
//! - [`event`]: events, responses, evidence, log sources; [`fields`]: an event's named fields.
//! - [`check`]: the checks that probes and audits report.
//! - [`rules`]: the YAML rule packs (log line → event → cause), compiled and tested by example.
//! - [`logs`]: the log formats and the bounded, parallel reading pipeline.
//! - [`escape`]: control bytes made visible, for any text bound for a terminal.
//!
//! It reads files only through the host seam ([`origin_host::Host`]) and depends on nothing of
//! the agent's: discovery, probes, diagnosis and reports build on it, never the other way.

#![warn(missing_docs)]

pub mod cause;
pub mod check;
pub mod escape;
pub mod event;
pub mod fields;
pub mod hash;
pub mod logs;
pub mod rules;
