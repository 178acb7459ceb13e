#![no_std]
// This lib target exists so that `tracer` can name this crate as a build-dependency (cargo then
// rebuilds the embedded object when anything here changes); the programs are in the binary.
