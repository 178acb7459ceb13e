//! Pure analysis: what the kernel's facts mean. No aya, no tokio, no I/O.
pub mod aggregate;
pub mod classify;
pub mod clock;
pub mod escape;
pub mod outcome;
