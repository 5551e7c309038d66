//! Diagnosis: correlates the 5xx responses with the log events and the current state, and ranks
//! the causes from the catalog.
