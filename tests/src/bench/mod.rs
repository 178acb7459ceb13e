//! The pieces of `cargo xtask bench` (the `tt-bench` binary): load generation, observers
//! (none, tracer, the bpftrace peer, the floor and its empty cgroup_skb program), kernel program
//! statistics, the synthetic userspace pass, and the numbers' summaries.
pub mod floor_progs;
pub mod load;
pub mod observer;
pub mod programs;
pub mod spread;
pub mod synthetic;
