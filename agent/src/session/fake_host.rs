//! A host a test scripts: which processes are alive, where they are, what their sockets
//! hold, what each cgroup is; and what the run asked of it (stamps, lookups).

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{HostView, Stamped};
use crate::{
    host::{
        netns::NetnsLinks,
        procs::{OldSocket, ProcIdentity, TcpPairs},
        sockdiag::SocketCounts,
        workloads::{CgroupInfo, Lookup},
    },
    kernel::{Kernel, Knobs, Slot},
};

/// The host as a test scripts it.
#[derive(Default)]
pub(crate) struct FakeHost {
    pub(crate) dead: HashSet<u32>,
    pub(crate) gone_dirs: HashSet<PathBuf>,
    pub(crate) links: HashMap<u32, NetnsLinks>,
    pub(crate) cgroups: HashMap<u64, CgroupInfo>,
    pub(crate) gone_ids: HashSet<u64>,
    /// Ids the host has not indexed yet.
    pub(crate) pending: HashSet<u64>,
    /// Every lookup asked, in order.
    pub(crate) lookups: Vec<u64>,
    /// Network namespaces: (inode, PID).
    pub(crate) namespaces: Vec<(u64, u32)>,
    /// Each process's cgroup directory now.
    pub(crate) cgroup_of: HashMap<u32, PathBuf>,
    /// The processes of each cgroup subtree.
    pub(crate) procs_in: HashMap<PathBuf, Vec<u32>>,
    /// What stamping a process's existing sockets finds.
    pub(crate) sockets: HashMap<u32, Stamped>,
    /// Every stamp asked, in order: (pid, slot).
    pub(crate) stamped: RefCell<Vec<(u32, Slot)>>,
    /// TCP sockets (local, remote) of each process's namespace.
    pub(crate) tcp_pairs: HashMap<u32, TcpPairs>,
    /// A process in each cgroup id.
    pub(crate) cgroup_pids: HashMap<u64, u32>,
    /// Sockets per cgroup id, as the host lists them (`--all`'s connection counts).
    pub(crate) cgroup_sockets: HashMap<u64, SocketCounts>,
    /// How long a listing takes, and how many there were.
    pub(crate) list_takes: Duration,
    pub(crate) listings: usize,
}

/// Process `pid` as the fake host knows it: named `p<pid>`, started at tick 1.
pub(crate) fn ident(pid: u32) -> ProcIdentity {
    ProcIdentity {
        pid,
        comm: format!("p{pid}"),
        start_ticks: 1,
    }
}

impl HostView for FakeHost {
    fn identify(&self, pid: u32) -> Option<ProcIdentity> {
        (!self.dead.contains(&pid)).then(|| ident(pid))
    }
    fn cgroup_of(&self, pid: u32) -> Option<PathBuf> {
        self.cgroup_of.get(&pid).cloned()
    }
    fn procs_in(&self, dir: &Path) -> Vec<u32> {
        self.procs_in.get(dir).cloned().unwrap_or_default()
    }
    fn stamp_existing(
        &self,
        _kernel: &mut dyn Kernel,
        t: &ProcIdentity,
        slot: Slot,
        _knobs: Knobs,
    ) -> Stamped {
        self.stamped.borrow_mut().push((t.pid, slot));
        self.sockets.get(&t.pid).cloned().unwrap_or_default()
    }
    fn process_alive(&self, t: &ProcIdentity) -> bool {
        !self.dead.contains(&t.pid)
    }
    fn runtime(&self, _t: &ProcIdentity) -> Duration {
        Duration::from_secs(42)
    }
    fn cgroup_alive(&self, dir: &Path) -> bool {
        !self.gone_dirs.contains(dir)
    }
    fn links(&self, pid: u32) -> Option<NetnsLinks> {
        self.links.get(&pid).cloned()
    }
    fn namespaces(&self) -> Vec<(u64, u32)> {
        self.namespaces.clone()
    }
    fn cgroup_lookup(&mut self, id: u64, _first_seen: Instant) -> Lookup {
        self.lookups.push(id);
        if self.pending.contains(&id) {
            return Lookup::Pending;
        }
        match self.cgroups.get(&id) {
            Some(info) if !self.gone_ids.contains(&id) => Lookup::Found(Box::new(info.clone())),
            _ => Lookup::Gone,
        }
    }
    fn cgroup_id_alive(&self, id: u64) -> bool {
        self.cgroups.contains_key(&id) && !self.gone_ids.contains(&id)
    }
    fn tcp_info(&self, _s: &OldSocket) -> Option<(u32, u32, u8)> {
        Some((900, 3, 1))
    }
    fn tcp_pairs(&self, pid: u32) -> Option<TcpPairs> {
        (!self.dead.contains(&pid)).then(|| self.tcp_pairs.get(&pid).cloned().unwrap_or_default())
    }
    fn pid_in_cgroup(&mut self, id: u64) -> Option<u32> {
        self.cgroup_pids.get(&id).copied()
    }
    fn sockets_by_cgroup(&mut self) -> HashMap<u64, SocketCounts> {
        self.listings += 1;
        std::thread::sleep(self.list_takes);
        self.cgroup_sockets.clone()
    }
}

/// A [`FakeHost`] shared between a test and the loop that owns it as a `Box<dyn HostView>`:
/// the test keeps a clone and changes the host between steps.
#[derive(Default, Clone)]
pub(crate) struct SharedHost(pub(crate) std::rc::Rc<RefCell<FakeHost>>);

impl HostView for SharedHost {
    fn identify(&self, pid: u32) -> Option<ProcIdentity> {
        self.0.borrow().identify(pid)
    }
    fn cgroup_of(&self, pid: u32) -> Option<PathBuf> {
        self.0.borrow().cgroup_of(pid)
    }
    fn procs_in(&self, dir: &Path) -> Vec<u32> {
        self.0.borrow().procs_in(dir)
    }
    fn stamp_existing(
        &self,
        kernel: &mut dyn Kernel,
        t: &ProcIdentity,
        slot: Slot,
        knobs: Knobs,
    ) -> Stamped {
        self.0.borrow().stamp_existing(kernel, t, slot, knobs)
    }
    fn process_alive(&self, t: &ProcIdentity) -> bool {
        self.0.borrow().process_alive(t)
    }
    fn runtime(&self, t: &ProcIdentity) -> Duration {
        self.0.borrow().runtime(t)
    }
    fn cgroup_alive(&self, dir: &Path) -> bool {
        self.0.borrow().cgroup_alive(dir)
    }
    fn links(&self, pid: u32) -> Option<NetnsLinks> {
        self.0.borrow().links(pid)
    }
    fn namespaces(&self) -> Vec<(u64, u32)> {
        self.0.borrow().namespaces()
    }
    fn cgroup_lookup(&mut self, id: u64, first_seen: Instant) -> Lookup {
        self.0.borrow_mut().cgroup_lookup(id, first_seen)
    }
    fn cgroup_id_alive(&self, id: u64) -> bool {
        self.0.borrow().cgroup_id_alive(id)
    }
    fn tcp_info(&self, s: &OldSocket) -> Option<(u32, u32, u8)> {
        self.0.borrow().tcp_info(s)
    }
    fn tcp_pairs(&self, pid: u32) -> Option<TcpPairs> {
        self.0.borrow().tcp_pairs(pid)
    }
    fn pid_in_cgroup(&mut self, id: u64) -> Option<u32> {
        self.0.borrow_mut().pid_in_cgroup(id)
    }
    fn sockets_by_cgroup(&mut self) -> HashMap<u64, SocketCounts> {
        self.0.borrow_mut().sockets_by_cgroup()
    }
}
