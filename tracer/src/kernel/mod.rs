//! The kernel side as userspace sees it: offsets from tracefs and BTF, loading and attaching the
//! programs, the ring buffer and the kernel's counters, and decoding what it hands over.
pub mod attach;
pub mod btf;
pub mod decode;
pub mod loader;
pub mod offsets;
pub mod privileges;
pub mod prog_stats;
pub mod ringbuf;
pub mod tracefs;
