//! The version text of `--version`, the man page, the image labels and the package: the
//! crate version, the git commit it was built from, and the oldest kernel it supports.
//! `build.rs` compiles this file too (to stamp the man page), so it uses only `std`.

use std::sync::LazyLock;

/// Oldest kernel procnetmon2 runs on. The one place that says so: the version text, the man
/// page, the image label and the load error all read it. 5.10: no BPF atomic beyond plain
/// add is used (see docs/kernels.md; `scripts/test-kernels` boots Debian's 5.10 to check).
pub const MIN_KERNEL: &str = "5.10";

/// The commit `build.rs` found (`git rev-parse`, or `PROCNETMON2_GIT_COMMIT` for builds
/// outside a git checkout); "unknown" when neither was available.
pub const COMMIT: &str = match option_env!("PROCNETMON2_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// `0.1.0 (commit 9a177e6abcde, Linux >= 5.10)`, for a given commit.
pub fn text_for(commit: &str) -> String {
    format!(
        "{} (commit {commit}, Linux >= {MIN_KERNEL})",
        env!("CARGO_PKG_VERSION")
    )
}

/// The version text of this build.
pub fn text() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| text_for(COMMIT));
    TEXT.as_str()
}
