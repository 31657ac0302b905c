//! Run-time skips. A test that cannot apply here (no root, a kernel without a feature, an
//! emulated CPU) says so on a line of its own and returns:
//!
//! ```text
//! pnm-skip: BINARY::TEST: REASON
//! ```
//!
//! The line goes straight to stdout, past the test harness's output capture, so it is seen
//! with or without `--nocapture`, in order with the harness's own lines. `scripts/test` and
//! the guests of `scripts/test-kernels` count a test that printed it and then passed as
//! *skipped*, never as passed (`scripts/results.py`); one that printed it and failed stays
//! failed. Rust's harness has no run-time "skipped" outcome: this line is it.

use std::io::Write as _;

use crate::{probe::so_netns_cookie, run_monitor};

/// Prints the skip line for the running test (see the module doc). The caller returns
/// afterwards: the test ends here, and is counted as skipped.
pub fn skip(reason: &str) {
    print_skip(&current_test(None), reason);
}

/// `BINARY::TEST` of the running test: the harness runs every test on a thread named after
/// it (with `--test-threads=1` too); `fallback` names it when called from another thread.
fn current_test(fallback: Option<&str>) -> String {
    let thread = std::thread::current();
    let test = match (thread.name(), fallback) {
        (Some(name), _) if name != "main" => name.to_owned(),
        (_, Some(name)) => name.to_owned(),
        (name, None) => name.unwrap_or("unknown").to_owned(),
    };
    format!("{}::{test}", binary_name())
}

/// The test binary's name without cargo's hash (`skb_counts-1a2b…` → `skb_counts`).
fn binary_name() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem,
    }
}

fn print_skip(test: &str, reason: &str) {
    // Straight to the process's stdout: the harness captures only the print macros.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "pnm-skip: {test}: {reason}");
    let _ = out.flush();
}

/// Skips (prints why, returns true) when not root: every test here loads programs into the
/// kernel and makes namespaces and cgroups.
pub fn skip_unless_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    skip("needs root (the tests load programs and make namespaces and cgroups)");
    true
}

/// Says that `test` cannot apply to this kernel (or machine), and why: the skip line of
/// [`skip`]. Kept for callers that name their test; the harness's name wins where known.
pub fn skip_for_kernel(test: &str, reason: &str) {
    print_skip(&current_test(Some(test)), reason);
}

/// The running kernel's (major, minor), from its release string. For messages only: whether
/// a kernel can do something is asked of the kernel (`probe.rs`).
pub fn kernel_version() -> (u32, u32) {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// `-i` needs `SO_NETNS_COOKIE` (Linux 5.14) to name each interface's namespace. Where it is
/// missing, procnetmon2 must refuse an `-i` run (`args`) with one line naming the kernel it
/// needs, exit 2: checked here, then the skip is printed and true returned (the rest of the
/// test cannot apply).
pub fn skip_iface_without_netns_cookie(test: &str, args: &[&str]) -> bool {
    if so_netns_cookie() {
        return false;
    }
    let (status, _, err) = run_monitor(args);
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains("needs Linux >= 5.14"), "{args:?}: {err}");
    skip_for_kernel(
        test,
        "-i needs SO_NETNS_COOKIE (Linux 5.14); its one-line refusal was checked",
    );
    true
}

/// `PNM_TIME_SCALE`: how many times slower than this host the tests run (1 here; set in the
/// emulated VMs of scripts/test-kernels). Deadlines and `-t` windows are multiplied by it.
pub fn time_scale() -> u64 {
    std::env::var("PNM_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 1)
        .unwrap_or(1)
}

/// A count from the environment (`PNM_CHURN_CGROUPS`, `PNM_SHORT_CONNECTIONS`, …: smaller in
/// the emulated VMs), or `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
