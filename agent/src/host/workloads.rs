//! Names for cgroups: cgroup id → path, container identity and workload name, refreshed by
//! walking the cgroup tree only when an unknown id shows up. Used to group node-wide (`--all`)
//! counters by workload and to label whole-cgroup targets.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::host::{
    cgroup::{self, Cgroup2Mount},
    identity::{self, ContainerIdentity, MetadataRoots},
};

/// What is known about one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupInfo {
    /// Path relative to the hierarchy (`/kubepods.slice/…`).
    pub path: String,
    /// Container / pod identity, names filled from runtime metadata when readable.
    pub container: Option<ContainerIdentity>,
    /// `namespace/pod/container`, else systemd unit, else the path.
    pub workload: String,
}

/// Describes the cgroup at `dir`.
pub fn describe(mount: &Cgroup2Mount, dir: &Path, roots: &MetadataRoots) -> CgroupInfo {
    let path = mount.rel_path(dir);
    let container = identity::parse_cgroup_path(&path).map(|mut c| {
        identity::enrich(&mut c, roots);
        c
    });
    let workload = container.as_ref().map_or_else(
        || identity::workload_name(&path),
        ContainerIdentity::workload,
    );
    CgroupInfo {
        path,
        container,
        workload,
    }
}

/// cgroup id → [`CgroupInfo`] for the whole tree.
pub struct CgroupNames {
    mount: Cgroup2Mount,
    roots: MetadataRoots,
    known: HashMap<u64, CgroupInfo>,
}

impl CgroupNames {
    /// An empty cache for the hierarchy at `mount`.
    pub fn new(mount: Cgroup2Mount, roots: MetadataRoots) -> Self {
        Self {
            mount,
            roots,
            known: HashMap::new(),
        }
    }

    /// The info of cgroup `id`, walking the tree once if it is not known yet; None if the
    /// cgroup is gone.
    pub fn get(&mut self, id: u64) -> Option<&CgroupInfo> {
        if !self.known.contains_key(&id) {
            for (cid, dir) in cgroup::walk(&self.mount.mount_point) {
                if !self.known.contains_key(&cid) {
                    let info = describe(&self.mount, &dir, &self.roots);
                    self.known.insert(cid, info);
                }
            }
        }
        self.known.get(&id)
    }

    /// True while cgroup `id`'s directory still exists.
    pub fn alive(&self, id: u64) -> bool {
        self.known.get(&id).is_some_and(|i| self.dir_of(i).exists())
    }

    fn dir_of(&self, info: &CgroupInfo) -> PathBuf {
        self.mount.dir_of(&info.path).unwrap_or_default()
    }
}
