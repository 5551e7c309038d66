//! The daemon (`origin-agent run`): tails the logs, re-runs probes, opens and closes incidents,
//! notifies, and serves Prometheus metrics.

pub mod checkpoint;
pub mod incident;
pub mod metrics;
pub mod tail;
