//! Builds the eBPF object (`procnetmon2-ebpf`) with aya-build, into `OUT_DIR/procnetmon2`.
#![expect(
    unused_crate_dependencies,
    reason = "procnetmon2-ebpf is a build-dependency only so that cargo rebuilds on eBPF changes"
)]

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "procnetmon2-ebpf")
        .ok_or_else(|| anyhow!("procnetmon2-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("procnetmon2-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
