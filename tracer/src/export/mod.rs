//! What leaves the tracer: output records and their names, hints, counters and loss,
//! Prometheus metrics and health and their bounded HTTP server, the record sinks and OTLP.
pub mod backoff;
pub mod counters;
pub mod health;
pub mod hints;
pub mod http_server;
pub mod loss;
pub mod metrics;
pub mod names;
pub mod otlp;
pub mod output;
pub mod record;
