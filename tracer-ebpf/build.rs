use which::which;

/// Rebuild when bpf-linker changes (it is the linker of every program here).
fn main() {
    let bpf_linker = which("bpf-linker")
        .expect("bpf-linker not found on PATH: run `cargo xtask setup` to install it");
    println!("cargo:rerun-if-changed={}", bpf_linker.display());
}
