//! Failure scenarios on the real-stack lab (see `lab.rs`): each function causes one failure for
//! real and returns what the agent must later explain.
