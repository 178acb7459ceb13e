//! The commands (`run`, `top`, `check`) and what they share: the session, how a command ends
//! and its runtime, the beats, logging, memory.
pub mod beats;
pub mod check;
pub mod exit;
pub mod logging;
pub mod memory;
pub mod run;
pub mod session;
pub mod top;
