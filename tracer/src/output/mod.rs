//! Sinks for the records.
pub mod ndjson;
