//! An in-memory [`Kernel`] for tests: the maps as plain collections that a test fills in to
//! play the kernel's part (traffic arriving, connections opening and closing), and reads
//! back to check what the agent wrote.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::{AsRawFd as _, OwnedFd},
};

use super::{
    CgroupCount, ClassCount, Connection, DestCount, DestOther, DnsDrops, DnsEvent, Health,
    IfaceKey, Kernel, MAX_TARGETS, Moved, NodeDestCount, NodeDestKey, PendingHandshake, Slot,
    SocketStamp, Untracked,
};
use crate::model::Traffic;

/// The kernel's maps, as a test sees them.
#[derive(Debug, Default, Clone)]
pub struct FakeKernel {
    /// Target PIDs → slot.
    pub target_pids: HashMap<u32, Slot>,
    /// Target cgroup ids → slot.
    pub cgroup_targets: HashMap<u64, Slot>,
    /// Interfaces counted with `-i`.
    pub ifaces: HashSet<IfaceKey>,
    /// `--all -i`: interfaces known and not counted.
    pub skipped: HashSet<IfaceKey>,
    /// `--all -i`: interfaces traffic passed before they were resolved (a test plays the
    /// kernel by filling it).
    pub new_ifaces: Vec<IfaceKey>,
    /// Namespace stamps of sockets that are no target's, by descriptor number.
    pub netns_stamps: Vec<(i32, u64)>,
    /// Stamps written for sockets that predate the run, by descriptor number.
    pub stamps: Vec<(i32, SocketStamp)>,
    /// Cumulative traffic per slot.
    pub totals: HashMap<Slot, Traffic>,
    /// Connection gauges per slot (tcp, udp).
    pub gauges: HashMap<Slot, (i64, i64)>,
    /// Unattributed counts.
    pub untracked: Untracked,
    /// `--details` records by cookie.
    pub conns: BTreeMap<u64, Connection>,
    /// `--all` counters.
    pub cgroup_totals: Vec<CgroupCount>,
    /// Class prefixes put in.
    pub class_cidrs: Vec<(ipnet::IpNet, u8)>,
    /// Per-remote-host totals.
    pub destinations: Vec<DestCount>,
    /// `other` buckets per slot.
    pub dest_other: HashMap<Slot, DestOther>,
    /// Per-class totals.
    pub class_totals: Vec<ClassCount>,
    /// DNS queries and answers waiting to be read.
    pub dns: Vec<DnsEvent>,
    /// What the kernel did not hand up, per slot.
    pub dns_drops: HashMap<Slot, DnsDrops>,
    /// Moves waiting to be read.
    pub moves: Vec<Moved>,
    /// Moves the kernel had no room for.
    pub moves_lost: u64,
    /// `--all --destinations` counters.
    pub node_destinations: Vec<NodeDestCount>,
    /// `--all --destinations` `other` per cgroup.
    pub node_dest_other: BTreeMap<u64, DestOther>,
    /// `--all --destinations` traffic without an `other` entry.
    pub node_dest_lost: crate::model::Counters,
    /// Every attachment, in order: ("sock" or "skb" for the socket path, "whole" for the
    /// cgroup path, "node-hooks" then "node" for `--all`; cgroup directory).
    pub attached: Vec<(&'static str, std::path::PathBuf)>,
    /// Whole-cgroup targets on the cgroup path: slot → (cgroup directory, still scanning).
    pub whole: BTreeMap<Slot, (std::path::PathBuf, bool)>,
    /// Cgroups where attaching fails (a test plays a kernel that refuses).
    pub refuse_attach: HashSet<std::path::PathBuf>,
    /// Whether the counters can ask a packet's namespace (`Programs::netns_helper`).
    pub netns_helper: bool,
    /// TCP health per slot.
    pub health: HashMap<Slot, Health>,
    /// `--all` TCP health per cgroup.
    pub node_health: BTreeMap<u64, Health>,
    /// The RTT epoch last set.
    pub rtt_epoch: u32,
    /// Incoming handshakes recorded in flight.
    pub handshakes: Vec<PendingHandshake>,
    /// Health events not charged.
    pub health_lost: u64,
}

impl FakeKernel {
    /// Plays the kernel taking an RTT sample of `us` µs for `slot`.
    pub fn rtt_sample(&mut self, slot: Slot, us: u32) {
        let h = self.health.entry(slot).or_default();
        h.rtt.buckets[procnetmon2_common::health::rtt_bucket(us)] += 1;
        h.rtt.sum_us += u64::from(us);
    }
}

impl super::Programs for FakeKernel {
    fn attach_sock_hooks(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        anyhow::ensure!(!self.refuse_attach.contains(dir), "attach refused");
        self.attached.push(("sock", dir.to_path_buf()));
        Ok(())
    }

    fn attach_counters(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        anyhow::ensure!(!self.refuse_attach.contains(dir), "attach refused");
        self.attached.push(("skb", dir.to_path_buf()));
        Ok(())
    }

    fn attach_whole(
        &mut self,
        dir: &std::path::Path,
        slot: Slot,
        scanning: bool,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(!self.refuse_attach.contains(dir), "attach refused");
        self.attached.push(("whole", dir.to_path_buf()));
        self.whole.insert(slot, (dir.to_path_buf(), scanning));
        Ok(())
    }

    fn attach_node(&mut self, root: &std::path::Path) -> anyhow::Result<()> {
        self.attached.push(("node", root.to_path_buf()));
        Ok(())
    }

    fn attach_node_hooks(&mut self, root: &std::path::Path) -> anyhow::Result<()> {
        self.attached.push(("node-hooks", root.to_path_buf()));
        Ok(())
    }

    fn netns_helper(&self) -> bool {
        self.netns_helper
    }

    fn moves_fd(&self) -> Option<OwnedFd> {
        None
    }
}

impl Kernel for FakeKernel {
    fn add_target_pid(&mut self, tgid: u32, slot: Slot) -> anyhow::Result<()> {
        anyhow::ensure!(slot.0 < MAX_TARGETS, "at most {MAX_TARGETS} targets");
        self.target_pids.insert(tgid, slot);
        Ok(())
    }

    fn add_cgroup_target(&mut self, cgroup_id: u64, slot: Slot) -> anyhow::Result<()> {
        self.cgroup_targets.insert(cgroup_id, slot);
        Ok(())
    }

    fn allow_iface(&mut self, key: IfaceKey) -> anyhow::Result<()> {
        self.ifaces.insert(key);
        Ok(())
    }

    fn deny_iface(&mut self, key: IfaceKey) {
        self.ifaces.remove(&key);
        self.skipped.remove(&key);
    }

    fn skip_iface(&mut self, key: IfaceKey) -> anyhow::Result<()> {
        self.ifaces.remove(&key);
        self.skipped.insert(key);
        Ok(())
    }

    fn new_ifaces(&mut self) -> Vec<IfaceKey> {
        std::mem::take(&mut self.new_ifaces)
    }

    fn stamp_netns(&mut self, sock: &OwnedFd, netns_cookie: u64) -> anyhow::Result<()> {
        self.netns_stamps.push((sock.as_raw_fd(), netns_cookie));
        Ok(())
    }

    fn stamp_socket(&mut self, sock: &OwnedFd, stamp: SocketStamp) -> anyhow::Result<bool> {
        self.stamps.push((sock.as_raw_fd(), stamp));
        Ok(true)
    }

    fn end_scan(&mut self, slot: Slot) {
        if let Some((_, scanning)) = self.whole.get_mut(&slot) {
            *scanning = false;
        }
    }

    fn put_connection(&mut self, cookie: u64, conn: Connection) -> anyhow::Result<()> {
        self.conns.entry(cookie).or_insert(conn);
        Ok(())
    }

    fn refresh_connection(&mut self, cookie: u64, srtt_us: u32, retrans: u32, state: u8) {
        if let Some(c) = self.conns.get_mut(&cookie) {
            c.srtt_us = srtt_us;
            c.retrans = retrans;
            if c.close_ns == 0 {
                c.state = state;
            }
        }
    }

    fn forget_connection(&mut self, cookie: u64) {
        self.conns.remove(&cookie);
    }

    fn totals(&self, slot: Slot) -> anyhow::Result<Traffic> {
        Ok(self.totals.get(&slot).copied().unwrap_or_default())
    }

    fn gauges(&self, slot: Slot) -> anyhow::Result<(i64, i64)> {
        Ok(self.gauges.get(&slot).copied().unwrap_or_default())
    }

    fn untracked(&self) -> anyhow::Result<Untracked> {
        Ok(self.untracked)
    }

    fn connections(&self) -> Vec<(u64, Connection)> {
        self.conns.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn cgroup_totals(&self) -> Vec<CgroupCount> {
        self.cgroup_totals.clone()
    }

    fn remove_cgroup_counts(&mut self, keys: &[super::CgroupCountKey]) {
        self.cgroup_totals
            .retain(|c| !keys.contains(&(c.cgroup_id, c.proto, c.class)));
    }

    fn target_pid_count(&self) -> u32 {
        self.target_pids.len() as u32
    }

    fn set_class_cidrs(&mut self, cidrs: &[(ipnet::IpNet, u8)]) -> anyhow::Result<()> {
        self.class_cidrs.extend_from_slice(cidrs);
        Ok(())
    }

    fn destinations(&self) -> Vec<DestCount> {
        self.destinations.clone()
    }

    fn dest_other(&self, slot: Slot) -> anyhow::Result<DestOther> {
        Ok(self.dest_other.get(&slot).copied().unwrap_or_default())
    }

    fn class_totals(&self) -> Vec<ClassCount> {
        self.class_totals.clone()
    }

    fn dns_events(&mut self) -> Vec<DnsEvent> {
        std::mem::take(&mut self.dns)
    }

    fn dns_drops(&self, slot: Slot) -> DnsDrops {
        self.dns_drops.get(&slot).copied().unwrap_or_default()
    }

    fn moves(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moves)
    }

    fn moves_lost(&self) -> u64 {
        self.moves_lost
    }

    fn node_destinations(&self) -> Vec<NodeDestCount> {
        self.node_destinations.clone()
    }

    fn node_dest_other(&self) -> Vec<(u64, DestOther)> {
        self.node_dest_other.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn node_dest_lost(&self) -> crate::model::Counters {
        self.node_dest_lost
    }

    fn remove_node_dests(&mut self, keys: &[NodeDestKey], cgroups: &[u64]) {
        self.node_destinations.retain(|d| !keys.contains(&d.key()));
        self.node_dest_other.retain(|id, _| !cgroups.contains(id));
    }

    fn health(&self, slot: Slot) -> anyhow::Result<Health> {
        Ok(self.health.get(&slot).copied().unwrap_or_default())
    }

    fn node_health(&self) -> Vec<(u64, Health)> {
        self.node_health.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn remove_node_health(&mut self, cgroups: &[u64]) {
        self.node_health.retain(|id, _| !cgroups.contains(id));
    }

    fn set_rtt_epoch(&mut self, epoch: u32) {
        self.rtt_epoch = epoch;
    }

    fn handshakes(&self) -> Vec<PendingHandshake> {
        self.handshakes.clone()
    }

    fn forget_handshake(&mut self, h: &PendingHandshake) -> bool {
        let before = self.handshakes.len();
        self.handshakes
            .retain(|p| (p.local, p.remote) != (h.local, h.remote));
        self.handshakes.len() < before
    }

    fn health_lost(&self) -> u64 {
        self.health_lost
    }
}

/// A [`FakeKernel`] shared between a test and the code under test (which owns its kernel as
/// a `Box<dyn Programs>`): the test keeps a clone and plays the kernel's part between steps,
/// or from another seam (a command that sends while it is being stopped).
#[derive(Debug, Default, Clone)]
pub struct SharedKernel(pub std::rc::Rc<std::cell::RefCell<FakeKernel>>);

/// Forwards each method to the shared [`FakeKernel`].
macro_rules! forward {
    ($(fn $name:ident(&mut self $(, $a:ident: $t:ty)*) $(-> $r:ty)?;)*) => {
        $(fn $name(&mut self $(, $a: $t)*) $(-> $r)? { self.0.borrow_mut().$name($($a),*) })*
    };
    ($(fn $name:ident(&self $(, $a:ident: $t:ty)*) $(-> $r:ty)?;)*) => {
        $(fn $name(&self $(, $a: $t)*) $(-> $r)? { self.0.borrow().$name($($a),*) })*
    };
}

impl super::Programs for SharedKernel {
    forward! {
        fn attach_sock_hooks(&mut self, dir: &std::path::Path) -> anyhow::Result<()>;
        fn attach_counters(&mut self, dir: &std::path::Path) -> anyhow::Result<()>;
        fn attach_whole(
            &mut self,
            dir: &std::path::Path,
            slot: Slot,
            scanning: bool
        ) -> anyhow::Result<()>;
        fn attach_node(&mut self, root: &std::path::Path) -> anyhow::Result<()>;
        fn attach_node_hooks(&mut self, root: &std::path::Path) -> anyhow::Result<()>;
    }
    forward! {
        fn netns_helper(&self) -> bool;
        fn moves_fd(&self) -> Option<OwnedFd>;
    }
}

impl Kernel for SharedKernel {
    forward! {
        fn add_target_pid(&mut self, tgid: u32, slot: Slot) -> anyhow::Result<()>;
        fn add_cgroup_target(&mut self, cgroup_id: u64, slot: Slot) -> anyhow::Result<()>;
        fn allow_iface(&mut self, key: IfaceKey) -> anyhow::Result<()>;
        fn deny_iface(&mut self, key: IfaceKey);
        fn skip_iface(&mut self, key: IfaceKey) -> anyhow::Result<()>;
        fn new_ifaces(&mut self) -> Vec<IfaceKey>;
        fn stamp_netns(&mut self, sock: &OwnedFd, netns_cookie: u64) -> anyhow::Result<()>;
        fn stamp_socket(&mut self, sock: &OwnedFd, stamp: SocketStamp) -> anyhow::Result<bool>;
        fn end_scan(&mut self, slot: Slot);
        fn put_connection(&mut self, cookie: u64, conn: Connection) -> anyhow::Result<()>;
        fn refresh_connection(&mut self, cookie: u64, srtt_us: u32, retrans: u32, state: u8);
        fn forget_connection(&mut self, cookie: u64);
        fn remove_cgroup_counts(&mut self, keys: &[super::CgroupCountKey]);
        fn set_class_cidrs(&mut self, cidrs: &[(ipnet::IpNet, u8)]) -> anyhow::Result<()>;
        fn dns_events(&mut self) -> Vec<DnsEvent>;
        fn moves(&mut self) -> Vec<Moved>;
        fn remove_node_dests(&mut self, keys: &[NodeDestKey], cgroups: &[u64]);
        fn remove_node_health(&mut self, cgroups: &[u64]);
        fn set_rtt_epoch(&mut self, epoch: u32);
        fn forget_handshake(&mut self, h: &PendingHandshake) -> bool;
    }
    forward! {
        fn totals(&self, slot: Slot) -> anyhow::Result<Traffic>;
        fn gauges(&self, slot: Slot) -> anyhow::Result<(i64, i64)>;
        fn untracked(&self) -> anyhow::Result<Untracked>;
        fn connections(&self) -> Vec<(u64, Connection)>;
        fn cgroup_totals(&self) -> Vec<CgroupCount>;
        fn target_pid_count(&self) -> u32;
        fn destinations(&self) -> Vec<DestCount>;
        fn dest_other(&self, slot: Slot) -> anyhow::Result<DestOther>;
        fn class_totals(&self) -> Vec<ClassCount>;
        fn node_destinations(&self) -> Vec<NodeDestCount>;
        fn node_dest_other(&self) -> Vec<(u64, DestOther)>;
        fn node_dest_lost(&self) -> crate::model::Counters;
        fn health(&self, slot: Slot) -> anyhow::Result<Health>;
        fn node_health(&self) -> Vec<(u64, Health)>;
        fn handshakes(&self) -> Vec<PendingHandshake>;
        fn health_lost(&self) -> u64;
        fn dns_drops(&self, slot: Slot) -> DnsDrops;
        fn moves_lost(&self) -> u64;
    }
}
