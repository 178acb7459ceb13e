//! The two globals the loader writes before the programs load, and the only way to read them:
//! field by field, volatile (`offset!`, `config!`).
use tracer_common::{Config, KernelOffsets};

/// Resolved by the loader; see `tracer_common::offsets`. Read only through `offset!`,
/// field by field (see there why).
#[unsafe(no_mangle)]
pub(crate) static OFFSETS: KernelOffsets = KernelOffsets::MISSING;

/// Run-time settings; see `tracer_common::Config`. Read only through `config!` and
/// `filter::config_at!`, field by field.
#[unsafe(no_mangle)]
pub(crate) static CONFIG: Config = Config::ALL;

/// Reads one `OFFSETS` value without letting the compiler fold the loader's value away.
///
/// `OFFSETS` and `CONFIG` are read one field at a time, never copied whole as a
/// `Global::load()`-style read would: that copy of `KernelOffsets` or `Config` (hundreds of
/// bytes each) would go onto the 512-byte BPF stack, which the programs' own locals need.
macro_rules! offset {
    ($($path:ident).+) => {
        // SAFETY: OFFSETS is a plain static of integers; a volatile read keeps the value the
        // loader wrote into the object instead of the compile-time default.
        unsafe { core::ptr::read_volatile(&raw const crate::globals::OFFSETS.$($path).+) }
    };
}
pub(crate) use offset;

/// Reads one `CONFIG` value likewise (field by field, as above).
macro_rules! config {
    ($field:ident) => {
        // SAFETY: as for `offset!`.
        unsafe { core::ptr::read_volatile(&raw const crate::globals::CONFIG.$field) }
    };
}
pub(crate) use config;
