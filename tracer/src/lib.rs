//! tracer: an eBPF TCP connection tracer that says why connections fail. See ARCHITECTURE.md.
pub mod aggregate;
pub mod check;
pub mod classify;
pub mod cli;
pub mod clock;
pub mod counters;
pub mod decode;
pub mod dns;
pub mod filter;
pub mod health;
pub mod hints;
pub mod kernel_btf;
pub mod listeners;
pub mod loader;
pub mod logging;
pub mod loss;
pub mod memory;
pub mod metrics;
pub mod offsets;
pub mod otlp;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod prog_stats;
pub mod record;
pub mod run;
pub mod session;
pub mod source;
pub mod top;
pub mod tracefs;
pub mod workload;

/// The JSON Schema of the output records (`tracer schema`).
pub const SCHEMA: &str = include_str!("../schema/records.v1.json");
