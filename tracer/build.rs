//! Builds `tracer-ebpf` for the BPF target (nightly + bpf-linker, via aya-build) so that the
//! binary can embed the object with `include_bytes_aligned!`.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../tracer-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
