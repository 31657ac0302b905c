//! A Kubernetes node, simulated: pod cgroups under the cgroup v2 root in the kubelet's own
//! shapes, and a "host root" where the host's /proc is bind-mounted beside the container
//! runtime's metadata (containerd OCI bundles with the pod, namespace and container names), for
//! `--host-proc`. The agent then names these cgroups' traffic exactly as on a real node.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Cgroup, cgroup2_root, sh, unique};

/// Cgroup directories made for a test, removed deepest first on drop; directories that
/// existed before (another test's `kubepods.slice`) are kept.
pub struct CgroupTree(pub Vec<PathBuf>);

impl CgroupTree {
    /// Makes `dir` and the parents it lacks.
    pub fn make(&mut self, dir: &Path) {
        let mut cur = PathBuf::new();
        for c in dir.components() {
            cur.push(c);
            if !cur.exists() {
                std::fs::create_dir(&cur)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", cur.display()));
                self.0.push(cur.clone());
            }
        }
    }
}

impl Drop for CgroupTree {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            for _ in 0..50 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A bind mount of /proc under a temporary "host root", unmounted and removed on drop.
pub struct HostRoot(pub PathBuf);

impl HostRoot {
    /// Makes the root and mounts /proc at `ROOT/proc`.
    pub fn new() -> Self {
        let root = std::env::temp_dir().join(unique("pnm-host-"));
        std::fs::create_dir_all(root.join("proc")).expect("mkdir");
        sh(
            "mount",
            &["--bind", "/proc", root.join("proc").to_str().expect("utf8")],
        );
        Self(root)
    }

    /// `ROOT/proc`, for `--host-proc`.
    pub fn proc(&self) -> String {
        self.0.join("proc").to_str().expect("utf8").to_owned()
    }
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HostRoot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.join("proc")).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// 64 hex digits derived from `seed` (container ids, pod UIDs).
pub fn hex64(seed: &str) -> String {
    let mut out = String::new();
    let mut x: u64 = seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    while out.len() < 64 {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        out.push_str(&format!("{x:016x}"));
    }
    out.truncate(64);
    out
}

/// A pod UID (8-4-4-4-12 hex) derived from `seed`.
pub fn pod_uid(seed: &str) -> String {
    let h = hex64(seed);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A simulated node: the host root and the pod cgroups made so far, all under a cgroup of its
/// own (`pnm-test-kube…/kubepods.slice/…`, as kind nests the kubelet's tree under its own
/// slice), so that tests running at the same time never share a directory one of them would
/// have to remove. Drop it after the containers' [`Cgroup`]s (declare it first).
pub struct KubeNode {
    host: HostRoot,
    tree: CgroupTree,
    root: PathBuf,
}

impl KubeNode {
    /// An empty node.
    pub fn new() -> Self {
        Self {
            host: HostRoot::new(),
            tree: CgroupTree(Vec::new()),
            root: cgroup2_root().join(unique("pnm-test-kube")),
        }
    }

    /// `--host-proc` for the agent.
    pub fn host_proc(&self) -> String {
        self.host.proc()
    }

    /// A containerd container of a burstable pod (systemd cgroup driver), with its bundle's
    /// annotations naming it `namespace/pod/container`: its cgroup, removed on drop (its
    /// processes killed first).
    pub fn container(&mut self, namespace: &str, pod: &str, container: &str) -> Cgroup {
        let seed = format!("{namespace}/{pod}/{container}/{}", unique(""));
        let (uid, id) = (pod_uid(&seed), hex64(&format!("c{seed}")));
        let rel = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
            uid.replace('-', "_")
        );
        let dir = self.root.join(rel);
        self.tree.make(&dir);
        let bundle = self.host.0.join(format!(
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}"
        ));
        std::fs::create_dir_all(&bundle).expect("bundle dir");
        std::fs::write(
            bundle.join("config.json"),
            serde_json::json!({"annotations": {
                "io.kubernetes.cri.sandbox-name": pod,
                "io.kubernetes.cri.sandbox-namespace": namespace,
                "io.kubernetes.cri.container-name": container,
                "io.kubernetes.cri.sandbox-uid": uid,
            }})
            .to_string(),
        )
        .expect("config.json");
        Cgroup { dir }
    }
}

impl Default for KubeNode {
    fn default() -> Self {
        Self::new()
    }
}
