//! Arbitrary ring-buffer bytes through the decoder: it must return an error, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = tracer::decode::decode(data);
});
