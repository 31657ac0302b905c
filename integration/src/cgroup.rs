//! Cgroup v2 directories a test makes (removed on drop with whatever still runs in them), and
//! what the kernel says about cgroups: a process's cgroup, programs attached, leftovers.

use std::{
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use crate::process::{sh, unique};

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in text.lines() {
        if let Some((pre, post)) = line.split_once(" - ")
            && post.split_whitespace().next() == Some("cgroup2")
        {
            return PathBuf::from(pre.split(' ').nth(4).expect("mount point"));
        }
    }
    panic!("no cgroup2 mount");
}

/// A cgroup v2 directory, removed on drop (after ending what still runs in it).
pub struct Cgroup {
    /// Its directory.
    pub dir: PathBuf,
}

impl Cgroup {
    /// Creates `<cgroup2 root>/pnm-test-…`.
    pub fn new() -> Self {
        Self::make(cgroup2_root().join(unique("pnm-test-")))
    }

    /// Creates the child cgroup `name` of this one.
    pub fn child(&self, name: &str) -> Self {
        Self::make(self.dir.join(name))
    }

    /// Creates the cgroup directory `dir` (its parent must exist), e.g. a pod's in a
    /// kubelet layout.
    pub fn make(dir: PathBuf) -> Self {
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir }
    }

    /// Its path as `--cgroup` takes it (`/pnm-test-…`, relative to the cgroup2 root).
    pub fn rel(&self) -> String {
        let root = cgroup2_root();
        format!(
            "/{}",
            self.dir
                .strip_prefix(&root)
                .expect("under the cgroup2 root")
                .display()
        )
    }

    /// Its own name (the last component: what the metrics' `cgroup` label ends with).
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .expect("a cgroup has a name")
            .to_string_lossy()
            .into_owned()
    }

    /// PIDs in the cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Everything left in a test's cgroup is the test's (a shell's children may outlive
        // it): end it all, then remove the cgroup once the processes are reaped.
        if !self.procs().is_empty() {
            let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        }
        for _ in 0..250 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// The cgroup v2 path of `pid` (the `0::` line of /proc/PID/cgroup).
pub fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("read /proc/PID/cgroup")
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .expect("cgroup v2 line")
}

/// `bpftool cgroup tree` output (programs attached to cgroups), for before/after checks.
/// Machine-wide: it also shows other runs' programs (other tests on a shared machine); a test
/// checks its own cgroups with [`bpftool_cgroup_tree_under`].
pub fn bpftool_cgroup_tree() -> String {
    sh("bpftool", &["cgroup", "tree"])
}

/// Programs attached to `dir` and the cgroups below it (`bpftool cgroup tree DIR`).
pub fn bpftool_cgroup_tree_under(dir: &Path) -> String {
    sh(
        "bpftool",
        &["cgroup", "tree", dir.to_str().expect("utf-8 path")],
    )
}

/// Loaded programs named `pnm_*` (procnetmon2's): id -> the cgroups each is attached to.
pub fn pnm_programs() -> std::collections::BTreeMap<u64, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    let progs: serde_json::Value =
        serde_json::from_str(&sh("bpftool", &["prog", "list", "-j"])).expect("bpftool json");
    for p in progs.as_array().into_iter().flatten() {
        if p["name"].as_str().is_some_and(|n| n.starts_with("pnm_")) {
            out.insert(p["id"].as_u64().expect("prog id"), Vec::new());
        }
    }
    let tree: serde_json::Value =
        serde_json::from_str(&sh("bpftool", &["cgroup", "tree", "-j"])).expect("bpftool json");
    for cg in tree.as_array().into_iter().flatten() {
        for p in cg["programs"].as_array().into_iter().flatten() {
            if let Some(at) = p["id"].as_u64().and_then(|id| out.get_mut(&id)) {
                at.push(cg["cgroup"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    out
}

/// Directories named `procnetmon2-*` anywhere under `dir`.
pub fn leftover_cgroups(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().starts_with("procnetmon2-") {
                    out.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    out
}
