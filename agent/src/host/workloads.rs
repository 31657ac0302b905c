//! Names for cgroups: cgroup id → path, container identity and workload name, from an index
//! of the live tree refreshed by a rate-limited walk when an unknown id shows up. Used to group node-wide (`--all`)
//! counters by workload and to label whole-cgroup targets.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
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

/// After a walk of the cgroup tree, the tree is left alone for this many times as long as the
/// walk took, so walking costs at most ~1% of a core however large the tree: a large tree is
/// walked every second or so. Ids not yet indexed wait for the next walk instead of each
/// forcing one (with pod churn, walking per unknown id per tick pinned a core).
pub const WALK_BACKOFF: u32 = 100;

/// A walk faster than this is never held back: a small tree is walked as soon as an unknown
/// id shows up (one walk per tick at most, since it names every id of that tick), so a
/// cgroup's bytes are not left out of a final report that follows a tick closely.
pub const CHEAP_WALK: Duration = Duration::from_millis(1);

/// What the index says about a cgroup id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// It exists (or did at the last walk): its names.
    Found(CgroupInfo),
    /// Not indexed yet and the tree was walked too recently: ask again next tick.
    Pending,
    /// A walk that started after `first_seen` did not find it: it is gone, never to be named.
    Gone,
}

/// An inode index of the cgroup tree: cgroup id → [`CgroupInfo`] for the live cgroups.
/// Refreshed by a rate-limited walk ([`WALK_BACKOFF`]) when an unknown id shows up; each
/// walk describes only new directories and drops the ids that are gone, so the index is as
/// large as the live tree, never larger.
pub struct CgroupNames {
    mount: Cgroup2Mount,
    roots: MetadataRoots,
    known: HashMap<u64, CgroupInfo>,
    /// When the last walk started.
    last_walk: Option<Instant>,
    /// How long until the next walk may start, counted from `last_walk`.
    backoff: Duration,
}

impl CgroupNames {
    /// An empty index of the hierarchy at `mount`.
    pub fn new(mount: Cgroup2Mount, roots: MetadataRoots) -> Self {
        Self {
            mount,
            roots,
            known: HashMap::new(),
            last_walk: None,
            backoff: Duration::ZERO,
        }
    }

    /// What cgroup `id` is. `first_seen`: when the caller first met the id (its first
    /// traffic); a walk after that which misses it means the cgroup is gone.
    pub fn lookup(&mut self, id: u64, first_seen: Instant) -> Lookup {
        if let Some(info) = self.known.get(&id) {
            return Lookup::Found(info.clone());
        }
        if self.last_walk.is_some_and(|w| w > first_seen) {
            return Lookup::Gone;
        }
        if self.last_walk.is_some_and(|w| w.elapsed() < self.backoff) {
            return Lookup::Pending;
        }
        self.refresh();
        self.known
            .get(&id)
            .map_or(Lookup::Gone, |info| Lookup::Found(info.clone()))
    }

    /// Walks the tree once: new directories are described, ids that are gone dropped.
    fn refresh(&mut self) {
        let started = Instant::now();
        let mut next = HashMap::with_capacity(self.known.len());
        for (cid, dir) in cgroup::walk(&self.mount.mount_point) {
            let info = self
                .known
                .remove(&cid)
                .unwrap_or_else(|| describe(&self.mount, &dir, &self.roots));
            next.insert(cid, info);
        }
        self.known = next;
        self.last_walk = Some(started);
        let took = started.elapsed();
        self.backoff = if took < CHEAP_WALK {
            Duration::ZERO
        } else {
            took * WALK_BACKOFF
        };
    }

    /// True while cgroup `id`'s directory exists (same path and the same inode: a cgroup
    /// recreated under the old name is another cgroup).
    pub fn alive(&self, id: u64) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        self.known
            .get(&id)
            .is_some_and(|i| std::fs::metadata(self.dir_of(i)).is_ok_and(|md| md.ino() == id))
    }

    fn dir_of(&self, info: &CgroupInfo) -> PathBuf {
        self.mount.dir_of(&info.path).unwrap_or_default()
    }
}
