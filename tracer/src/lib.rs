//! tracer: an eBPF TCP connection tracer that says why connections fail. See ARCHITECTURE.md.
//!
//! The modules follow the data flow, and each layer uses only the ones before it:
//! `kernel` (the programs and what they hand over) < `analysis` (pure: outcomes from facts) <
//! `enrich` (what is joined from outside a kernel record) < `export` (records, metrics, sinks) <
//! the spine (`cli`, `filter`, `pipeline`) < `cmd` (the commands).
pub mod analysis;
pub mod cli;
pub mod cmd;
pub mod enrich;
pub mod export;
pub mod filter;
pub mod kernel;
pub mod pipeline;

/// The JSON Schema of the output records (`tracer schema`).
pub const SCHEMA: &str = include_str!("../schema/records.v1.json");

#[cfg(test)]
mod tests;
