//! Builds the eBPF object (`procnetmon2-ebpf`) with aya-build, into `OUT_DIR/procnetmon2`;
//! stamps the git commit into the version text (`PROCNETMON2_GIT_COMMIT`); and writes the man
//! page and shell completions, generated from the clap definition, into `OUT_DIR/dist/`
//! (`scripts/package` ships them).
#![expect(
    unused_crate_dependencies,
    reason = "procnetmon2-ebpf is a build-dependency only so that cargo rebuilds on eBPF changes"
)]

// The CLI definition and its generators, compiled into this build script as well; the
// binary's `completions` entry point needs none of the rest here.
#[allow(dead_code, reason = "build.rs uses only the command definition")]
#[path = "src/cli.rs"]
mod cli;
#[allow(dead_code, reason = "build.rs uses only the generators")]
#[path = "src/dist.rs"]
mod dist;
#[allow(dead_code, reason = "build.rs uses only text_for")]
#[path = "src/version.rs"]
mod version;

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let commit = git_commit();
    println!("cargo:rustc-env=PROCNETMON2_GIT_COMMIT={commit}");
    for src in ["src/cli.rs", "src/dist.rs", "src/version.rs", "build.rs"] {
        println!("cargo:rerun-if-changed={src}");
    }
    write_dist(&commit)?;

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

/// The commit being built: `PROCNETMON2_GIT_COMMIT` when set (builds from a tarball), else
/// `git rev-parse` (12 hex digits; uncommitted changes are not noted), else
/// "unknown". Reruns when HEAD or the branch it names moves.
fn git_commit() -> String {
    println!("cargo:rerun-if-env-changed=PROCNETMON2_GIT_COMMIT");
    if let Ok(c) = std::env::var("PROCNETMON2_GIT_COMMIT")
        && !c.is_empty()
    {
        return c;
    }
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    // HEAD of this worktree, the branch file it points to, and packed refs (a fetch or gc
    // may move the branch there).
    for path in ["HEAD", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", path]) {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &branch])
    {
        println!("cargo:rerun-if-changed={p}");
    }
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => c,
        _ => "unknown".to_string(),
    }
}

/// Writes `procnetmon2.1` and one completion script per packaged shell into `OUT_DIR/dist/`.
fn write_dist(commit: &str) -> anyhow::Result<()> {
    let out = Path::new(&std::env::var("OUT_DIR").context("OUT_DIR")?).join("dist");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    // clap keeps the version as a &'static str; a build script runs once.
    let version: &'static str = Box::leak(version::text_for(commit).into_boxed_str());
    let page = out.join(format!("{}.1", dist::BIN));
    std::fs::write(&page, dist::man_page(version))
        .with_context(|| format!("write {}", page.display()))?;
    for shell in dist::PACKAGED_SHELLS {
        let file = out.join(dist::completion_file_name(shell));
        std::fs::write(&file, dist::completions(shell))
            .with_context(|| format!("write {}", file.display()))?;
    }
    Ok(())
}
