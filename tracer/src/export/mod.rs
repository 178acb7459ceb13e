//! What leaves the tracer: output records and their names, hints, counters and loss,
//! Prometheus metrics and health, the record sinks and OTLP.
pub mod backoff;
pub mod counters;
pub mod health;
pub mod hints;
pub mod loss;
pub mod metrics;
pub mod names;
pub mod otlp;
pub mod output;
pub mod record;
