//! The real [`HostView`]: `/proc` for processes, the cgroup tree for cgroups and `--all`
//! names, network namespaces for `-i`, pidfd copies for TCP_INFO of old connections.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use super::HostView;
use crate::{
    host::{
        netns::{self, NetnsLinks},
        procs::{ProcFs, ProcIdentity},
        workloads::{CgroupNames, Lookup},
    },
    setup::stamp::{self, OldSocket},
};

/// The host as the session sees it during the run.
pub struct LiveHost {
    proc: ProcFs,
    names: CgroupNames,
}

impl LiveHost {
    /// Reads processes from `proc`; names cgroups with `names`.
    pub fn new(proc: ProcFs, names: CgroupNames) -> Self {
        Self { proc, names }
    }
}

impl HostView for LiveHost {
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
        stamp::tcp_info(s)
    }
}
