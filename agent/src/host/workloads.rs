//! Names for cgroups: cgroup id → path, container identity and workload name. An unknown id
//! is opened by its file handle (no walk), or where that is not allowed, found by a
//! rate-limited walk of the tree; the index holds live cgroups only. Used to group node-wide (`--all`)
//! counters by workload and to label whole-cgroup targets.

use std::{
    collections::HashMap,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
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
    Found(Box<CgroupInfo>),
    /// Not indexed yet and the tree was walked too recently: ask again next tick.
    Pending,
    /// A walk that started after `first_seen` did not find it: it is gone, never to be named.
    Gone,
}

/// An index of the cgroup tree: cgroup id → [`CgroupInfo`] for the live cgroups.
///
/// An unknown id is opened by its file handle (a cgroup id is its kernfs node id, which
/// `open_by_handle_at` takes on the cgroup2 mount): one open and one readlink per id, whatever
/// the size of the tree. Without `CAP_DAC_READ_SEARCH` (or where the kernel refuses kernfs
/// handles) the index is refreshed by a rate-limited walk ([`WALK_BACKOFF`]) instead, which
/// describes only new directories and drops ids that are gone. Entries of removed cgroups are
/// swept whenever the index doubles, so it stays about as large as the live tree.
pub struct CgroupNames {
    mount: Cgroup2Mount,
    roots: MetadataRoots,
    known: HashMap<u64, CgroupInfo>,
    /// The mount's directory, for `open_by_handle_at`; None once handles proved unusable.
    mount_fd: Option<OwnedFd>,
    /// Sweep the index when it reaches this many entries.
    sweep_at: usize,
    /// When the last walk started.
    last_walk: Option<Instant>,
    /// How long until the next walk may start, counted from `last_walk`.
    backoff: Duration,
}

impl CgroupNames {
    /// An empty index of the hierarchy at `mount`.
    pub fn new(mount: Cgroup2Mount, roots: MetadataRoots) -> Self {
        let mount_fd = std::fs::File::open(&mount.mount_point)
            .map(OwnedFd::from)
            .ok();
        Self {
            mount,
            roots,
            known: HashMap::new(),
            mount_fd,
            sweep_at: SWEEP_MIN,
            last_walk: None,
            backoff: Duration::ZERO,
        }
    }

    /// What cgroup `id` is. `first_seen`: when the caller first met the id (its first
    /// traffic); a walk after that which misses it means the cgroup is gone.
    pub fn lookup(&mut self, id: u64, first_seen: Instant) -> Lookup {
        if let Some(info) = self.known.get(&id) {
            return Lookup::Found(Box::new(info.clone()));
        }
        if let Some(found) = self.open_by_id(id) {
            return found;
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
            .map_or(Lookup::Gone, |info| Lookup::Found(Box::new(info.clone())))
    }

    /// Names `id` through its file handle; None when handles cannot be used here (then the
    /// caller walks, and so does every later lookup).
    fn open_by_id(&mut self, id: u64) -> Option<Lookup> {
        let fd = self.mount_fd.as_ref()?;
        match dir_by_id(fd, id) {
            Ok(dir) if dir.starts_with(&self.mount.mount_point) => {
                let info = describe(&self.mount, &dir, &self.roots);
                if self.known.len() >= self.sweep_at {
                    self.sweep();
                }
                self.known.insert(id, info.clone());
                Some(Lookup::Found(Box::new(info)))
            }
            // Removed meanwhile (`… (deleted)`), or outside this mount.
            Ok(_) => Some(Lookup::Gone),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ESTALE | libc::ENOENT)) => {
                Some(Lookup::Gone)
            }
            Err(e) => {
                log::info!(
                    "cannot open cgroups by id ({e}; needs CAP_DAC_READ_SEARCH): naming cgroups by walking the tree"
                );
                self.mount_fd = None;
                None
            }
        }
    }

    /// Drops the entries of removed cgroups.
    fn sweep(&mut self) {
        let mount = &self.mount;
        self.known.retain(|id, info| {
            mount
                .dir_of(&info.path)
                .is_ok_and(|dir| is_cgroup(&dir, *id))
        });
        self.sweep_at = (2 * self.known.len()).max(SWEEP_MIN);
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
        log::debug!(
            "cgroup index: {} cgroups walked in {took:?}",
            self.known.len()
        );
        self.backoff = if took < CHEAP_WALK {
            Duration::ZERO
        } else {
            took * WALK_BACKOFF
        };
    }

    /// True while cgroup `id`'s directory exists (same path and the same inode: a cgroup
    /// recreated under the old name is another cgroup).
    pub fn alive(&self, id: u64) -> bool {
        self.known.get(&id).is_some_and(|i| {
            self.mount
                .dir_of(&i.path)
                .is_ok_and(|dir| is_cgroup(&dir, id))
        })
    }
}

/// Smallest index size at which removed cgroups are swept out.
const SWEEP_MIN: usize = 1024;

/// True while `dir` is cgroup `id` (a cgroup recreated under the old name is another one).
fn is_cgroup(dir: &Path, id: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).is_ok_and(|md| md.ino() == id)
}

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs handle is the node's 64-bit id.
const FILEID_KERNFS: i32 = 0xfe;

/// `struct file_handle` with the 8 bytes of a kernfs handle.
#[repr(C)]
struct KernfsHandle {
    handle_bytes: u32,
    handle_type: i32,
    id: u64,
}

/// The directory of cgroup `id`, opened by its handle on the cgroup2 mount `mount_fd`.
/// Neither nix nor rustix wraps `open_by_handle_at`.
fn dir_by_id(mount_fd: &OwnedFd, id: u64) -> std::io::Result<PathBuf> {
    let mut fh = KernfsHandle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: `fh` is a `struct file_handle` header followed by its `handle_bytes` bytes, as
    // the kernel reads it; the returned descriptor is owned below.
    let fd = unsafe {
        libc::open_by_handle_at(
            mount_fd.as_raw_fd(),
            (&raw mut fh).cast(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Directories are always connected, so this is the full path (`… (deleted)` once removed).
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
