//! Rebuild the eBPF object when `bpf-linker` changes.
//!
//! Cargo does not track the linker binary, so upgrading `bpf-linker` (for example after a
//! nightly LLVM bump, see `scripts/setup`) would otherwise keep a stale object around.
fn main() {
    if let Ok(path) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
