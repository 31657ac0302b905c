//! The real [`HostView`]: `/proc` for processes, the cgroup tree for cgroups and `--all`
//! names, network namespaces for `-i`, pidfd copies for stamps and for TCP_INFO of old
//! connections.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::stamp;
use crate::{
    host::{
        cgroup::{self, Cgroup2Mount},
        netns::{self, NetnsLinks},
        procs::{self, OldSocket, ProcFs, ProcIdentity},
        sockdiag::{self, SocketCounts},
        workloads::{CgroupNames, Lookup},
    },
    kernel::{Kernel, Knobs, Slot},
    session::{HostView, Stamped},
};

/// The host as the run sees it once set up.
pub struct LiveHost {
    proc: ProcFs,
    mount: Cgroup2Mount,
    names: CgroupNames,
    /// Whether "no namespace's sockets could be listed" was said.
    unlisted_said: bool,
}

impl LiveHost {
    /// Reads processes from `proc` and their cgroups under `mount`; names cgroups with
    /// `names`.
    pub fn new(proc: ProcFs, mount: Cgroup2Mount, names: CgroupNames) -> Self {
        Self {
            proc,
            mount,
            names,
            unlisted_said: false,
        }
    }
}

impl HostView for LiveHost {
    fn identify(&self, pid: u32) -> Option<ProcIdentity> {
        self.proc.identify(pid).ok()
    }

    fn cgroup_of(&self, pid: u32) -> Option<PathBuf> {
        self.mount.dir_of_pid(&self.proc, pid).ok()
    }

    fn procs_in(&self, dir: &Path) -> Vec<u32> {
        cgroup::procs_in_subtree(dir)
    }

    fn stamp_existing(
        &self,
        kernel: &mut dyn Kernel,
        t: &ProcIdentity,
        slot: Slot,
        knobs: Knobs,
    ) -> Stamped {
        stamp::stamp_existing(kernel, &self.proc, t, slot, knobs)
    }

    fn process_alive(&self, t: &ProcIdentity) -> bool {
        self.proc.is_alive(t)
    }

    fn runtime(&self, t: &ProcIdentity) -> Duration {
        self.proc.runtime(t)
    }

    fn cgroup_alive(&self, dir: &Path) -> bool {
        dir.exists()
    }

    fn links(&self, pid: u32) -> Option<NetnsLinks> {
        netns::links_of(&self.proc, pid).ok()
    }

    fn namespaces(&self) -> Vec<(u64, u32)> {
        netns::namespaces(&self.proc)
    }

    fn cgroup_lookup(&mut self, id: u64, first_seen: Instant) -> Lookup {
        self.names.lookup(id, first_seen)
    }

    fn cgroup_id_alive(&self, id: u64) -> bool {
        self.names.alive(id)
    }

    fn tcp_info(&self, s: &OldSocket) -> Option<(u32, u32, u8)> {
        procs::tcp_info(s)
    }

    fn tcp_pairs(&self, pid: u32) -> Option<procs::TcpPairs> {
        self.proc.tcp_pairs(pid)
    }

    fn pid_in_cgroup(&mut self, id: u64) -> Option<u32> {
        let Lookup::Found(info) = self.names.lookup(id, Instant::now()) else {
            return None;
        };
        let dir = self.mount.dir_of(&info.path).ok()?;
        cgroup::procs_in_subtree(&dir).into_iter().next()
    }

    fn sockets_by_cgroup(&mut self) -> HashMap<u64, SocketCounts> {
        let spaces = netns::namespaces(&self.proc);
        let (counts, unlisted) = sockdiag::count_in(&self.proc, &spaces);
        // A namespace gone between the listing and the walk is normal churn (debug); none
        // listed at all means no CAP_SYS_ADMIN for setns: said once.
        if unlisted > 0 && unlisted == spaces.len() && !self.unlisted_said {
            log::warn!(
                "connection counts: no network namespace's sockets could be listed (setns needs CAP_SYS_ADMIN); workloads' tcp/udp connections read 0"
            );
            self.unlisted_said = true;
        } else if unlisted > 0 {
            log::debug!(
                "connection counts: {unlisted} of {} namespaces skipped",
                spaces.len()
            );
        }
        counts
    }
}
