//! The kernel's BPF side seen from user space, behind one small trait.
//!
//! [`Kernel`] is everything the run asks of the loaded programs: the set-up writes (targets,
//! interfaces, stamps for sockets that predate the run) and the per-tick reads (totals, gauges,
//! connection records, node-wide counters), in agent-side types. [`probes::Probes`] implements
//! it with aya and is the only code that touches aya or the `procnetmon2_common` ABI structs;
//! `fake::FakeKernel` (tests only) implements it in memory so the session, set-up and the loop
//! can be tested without root.
//!
//! [`Programs`] adds what set-up and the loop do with the loaded programs beyond the maps:
//! attach them to a cgroup (at start, and when a target moves to a cgroup they do not cover).

pub mod btf;
#[cfg(test)]
pub mod fake;
pub mod features;
pub mod probes;
mod whole;

use std::{os::fd::OwnedFd, path::Path};

use crate::model::{Counters, RttHistogram, TcpHealth, Traffic};

/// Most targets (slots) the kernel's per-target maps hold.
pub const MAX_TARGETS: u32 = procnetmon2_common::target::MAX_TARGETS;
/// Most PIDs (targets and the children they fork) the kernel tracks.
pub const MAX_TARGET_PIDS: u32 = procnetmon2_common::target::MAX_TARGET_PIDS;
/// Most (cgroup, protocol) keys of the node-wide counters (`--all`).
pub const MAX_CGROUP_KEYS: u32 = procnetmon2_common::knobs::MAX_CGROUP_KEYS;

/// Most cgroups with TCP health the node-wide map holds (`--all`).
pub const MAX_NODE_HEALTH: u32 = procnetmon2_common::health::MAX_NODE_HEALTH;
/// Most incoming handshakes in flight the kernel records.
pub const MAX_HANDSHAKES: u32 = procnetmon2_common::health::MAX_HANDSHAKES;
const _: () = assert!(crate::model::RTT_BUCKETS == procnetmon2_common::health::RTT_BUCKETS);

/// A target's index in the kernel's per-target maps, handed out by `plan::Slots` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slot(pub u32);

/// Load-time switches: which optional work the programs do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Knobs {
    /// Keep per-connection records (`--details`).
    pub details: bool,
    /// Count only the interfaces put in with [`Kernel::allow_iface`] (`-i`).
    pub iface_filter: bool,
    /// Follow forks: children join their parent's target.
    pub children: bool,
    /// Whole cgroups counted on the socket path are targets ([`Kernel::add_cgroup_target`]:
    /// its sock_create looks the creator's cgroups up); the cgroup path needs no such map.
    pub cgroup_targets: bool,
    /// Processes are targets ([`Kernel::add_target_pid`]); off, socket creation skips that map.
    pub pid_targets: bool,
    /// Node-wide accounting by cgroup ([`Kernel::cgroup_totals`]): the node path's programs.
    pub all: bool,
    /// Some target is counted on the socket path: its programs are loaded.
    pub socket_path: bool,
    /// Some whole-cgroup target is counted on the cgroup path ([`Programs::attach_whole`]):
    /// its programs are loaded.
    pub cgroup_path: bool,
    /// Where the bytes go: see [`DestKnobs`].
    pub dest: DestKnobs,
}

/// Load-time switches of the per-destination work (issue 17); all off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestKnobs {
    /// Class every packet by its remote address ([`Kernel::set_class_cidrs`]).
    pub classes: bool,
    /// Number of classes (built-in ones included); with `slots`, the size of the per-target
    /// class counters.
    pub class_count: u32,
    /// Target slots handed out (`0..slots`).
    pub slots: u32,
    /// Keep per-remote-host totals ([`Kernel::destinations`]).
    pub destinations: bool,
    /// Most remote hosts per target kept apart (the rest: [`Kernel::dest_other`]).
    pub cap: u64,
    /// Hand targets' DNS queries and the answers that match them up
    /// ([`Kernel::dns_events`]).
    pub dns: bool,
    /// `--all --destinations`: per-remote-host totals per cgroup
    /// ([`Kernel::node_destinations`]), `cap` hosts per cgroup.
    pub node_destinations: bool,
}

/// `--all --destinations`: cumulative traffic of one cgroup with one remote host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeDestCount {
    /// The cgroup the sockets were created in.
    pub cgroup_id: u64,
    /// The remote address (from the packets' IP headers).
    pub addr: std::net::IpAddr,
    /// Its class index (None when classes are off).
    pub class: Option<u8>,
    /// Cumulative since the programs were loaded (or since its key was last drained).
    pub counters: Counters,
}

impl NodeDestCount {
    /// Its key (what [`Kernel::remove_node_dests`] takes).
    pub fn key(&self) -> NodeDestKey {
        (self.cgroup_id, self.addr, self.class)
    }
}

/// A key of the node-wide remote-host counters: (cgroup id, remote address, class).
pub type NodeDestKey = (u64, std::net::IpAddr, Option<u8>);

/// Cumulative traffic of one target with one remote host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestCount {
    /// The target.
    pub slot: Slot,
    /// The remote address (from the packets' IP headers).
    pub addr: std::net::IpAddr,
    /// Its class index (None when classes are off).
    pub class: Option<u8>,
    /// Cumulative since the programs were loaded.
    pub counters: Counters,
}

/// Cumulative traffic of one target, protocol and destination class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassCount {
    /// The target.
    pub slot: Slot,
    /// The protocol.
    pub proto: Proto,
    /// The class index.
    pub class: u8,
    /// Cumulative since the programs were loaded.
    pub counters: Counters,
}

/// A target's remote hosts past the cap: their traffic and how many hosts are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DestOther {
    /// Traffic not kept per host, cumulative.
    pub counters: Counters,
    /// Remote hosts of the target kept apart now.
    pub hosts: u64,
}

/// An interface in one network namespace: ifindex values repeat across namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// The namespace's cookie (`SO_NETNS_COOKIE`).
    pub netns_cookie: u64,
    /// The interface's index in that namespace.
    pub ifindex: u32,
}

/// Transport protocol of a socket or counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Anything else the skb programs saw (raw, ICMP, …).
    Other,
}

/// What is known of a socket that predates the run, to stamp it with its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketStamp {
    /// The target it belongs to.
    pub slot: Slot,
    /// Its owning process (tgid).
    pub tgid: u32,
    /// TCP or UDP.
    pub proto: Proto,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// A TCP connection in ESTABLISHED.
    pub established: bool,
    /// A UDP socket that is bound or connected.
    pub udp_active: bool,
    /// Count it as a live connection now (without `-i`; with it, the first packet through a
    /// chosen interface counts it in the kernel).
    pub count_now: bool,
    /// Without `-i` every interface qualifies.
    pub iface_ok: bool,
    /// Its network namespace's cookie (`SO_NETNS_COOKIE`), with `-i` only: kernels whose
    /// cgroup_skb lacks `bpf_get_netns_cookie` filter on this stamp (0 without `-i`).
    pub netns_cookie: u64,
}

/// One connection record (`--details`), in agent terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connection {
    /// Bytes received (IP bytes, since the run or the connection started).
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// CLOCK_MONOTONIC ns when it was first seen (0: unknown).
    pub open_ns: u64,
    /// CLOCK_MONOTONIC ns when it closed (0: open).
    pub close_ns: u64,
    /// Local address (IPv4 in the first word, network order), and port (host order).
    pub local: ([u32; 4], u16),
    /// Remote address and port.
    pub remote: ([u32; 4], u16),
    /// The target it is charged to.
    pub slot: Slot,
    /// The process that owns it (tgid).
    pub tgid: u32,
    /// Smoothed RTT, µs (TCP).
    pub srtt_us: u32,
    /// Retransmitted segments (TCP).
    pub retrans: u32,
    /// TCP or UDP.
    pub tcp: bool,
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// TCP state (`TCP_*`), or 0 for UDP.
    pub state: u8,
    /// Seen on a chosen interface (always true without `-i`).
    pub iface_ok: bool,
}

/// Node-wide counters of one (cgroup, protocol) (`--all`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupCount {
    /// The cgroup's id (inode of its directory).
    pub cgroup_id: u64,
    /// The protocol.
    pub proto: Proto,
    /// Destination class index (`--class`/`--classes`); None with classes off (or for
    /// traffic that is not IP).
    pub class: Option<u8>,
    /// Cumulative since the programs were loaded.
    pub counters: Counters,
}

/// A key of the node-wide counters: (cgroup id, protocol, destination class).
pub type CgroupCountKey = (u64, Proto, Option<u8>);

/// TCP health of one target or cgroup as the kernel counted it, cumulative (issue 29).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Outgoing connects that never reached ESTABLISHED.
    pub connect_failures: u64,
    /// Incoming handshakes of full sockets (Fast Open) that never completed; those in request
    /// mini-sockets are [`Kernel::handshakes`], resolved by the agent.
    pub handshake_failures: u64,
    /// Retransmitted segments.
    pub retransmits: u64,
    /// Smoothed-RTT samples.
    pub rtt: RttHistogram,
}

impl Health {
    /// Field-wise difference, never below zero.
    #[must_use]
    pub fn minus(&self, o: &Self) -> Self {
        Self {
            connect_failures: self.connect_failures.saturating_sub(o.connect_failures),
            handshake_failures: self.handshake_failures.saturating_sub(o.handshake_failures),
            retransmits: self.retransmits.saturating_sub(o.retransmits),
            rtt: self.rtt.minus(&o.rtt),
        }
    }

    /// As reported: both kinds of failure together.
    pub fn report(&self) -> TcpHealth {
        TcpHealth {
            connect_failures: self
                .connect_failures
                .saturating_add(self.handshake_failures),
            retransmitted_segments: self.retransmits,
            rtt: self.rtt,
        }
    }
}

/// Who a recorded incoming handshake belongs to: its listener's target and/or (`--all`) cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HandshakeOwner {
    /// The listener's target.
    pub slot: Option<Slot>,
    /// `--all`: the listener's cgroup.
    pub cgroup_id: Option<u64>,
}

/// An incoming handshake still recorded as in flight (a request mini-socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingHandshake {
    /// The listener's address (as the accepted socket would have it).
    pub local: std::net::SocketAddr,
    /// The client's.
    pub remote: std::net::SocketAddr,
    /// Whose listener.
    pub owner: HandshakeOwner,
    /// CLOCK_MONOTONIC ns when the kernel made the request.
    pub started_ns: u64,
}

/// A DNS query a target's socket sent, or an answer to it, as the kernel handed it up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEvent {
    /// The target the socket belongs to.
    pub slot: Slot,
    /// The socket's cookie.
    pub cookie: u64,
    /// CLOCK_MONOTONIC ns when the packet passed.
    pub ns: u64,
    /// An answer (received); else a query (sent).
    pub answer: bool,
    /// The packet from its IP header (at most 4 KiB of it).
    pub packet: Vec<u8>,
}

/// What the kernel did not hand up of a target's DNS, cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsDrops {
    /// Answers that matched no query the receiving socket sent (same server and
    /// transaction ID, within 10 s).
    pub unmatched: u64,
    /// Queries and answers past the target's budget, or refused by a full perf buffer.
    pub dropped: u64,
}

/// A target's process moved to another cgroup (seen by the kernel as it happened).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// The process.
    pub tgid: u32,
    /// Its target.
    pub slot: Slot,
    /// CLOCK_MONOTONIC ns of the move.
    pub ns: u64,
}

/// Counts the kernel could not charge to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Untracked {
    /// Traffic of target sockets without an owner.
    pub traffic: Counters,
    /// Target sockets left unstamped.
    pub sockets: u64,
    /// Forked children that could not join their target.
    pub processes: u64,
}

/// The loaded programs as set-up and the loop attach them (the attach seam): the real ones
/// ([`probes::Probes`]) or `fake::FakeKernel`.
pub trait Programs: Kernel {
    /// Attaches the socket path's socket hooks (creation, release, bind, connect, sendmsg,
    /// sock_ops) at cgroup `dir`, so at its whole subtree. Before [`Programs::attach_counters`]
    /// and before existing sockets are scanned, so no socket created in between goes
    /// unstamped.
    fn attach_sock_hooks(&mut self, dir: &std::path::Path) -> anyhow::Result<()>;
    /// Attaches the socket path's ingress and egress counters at cgroup `dir`.
    fn attach_counters(&mut self, dir: &std::path::Path) -> anyhow::Result<()>;
    /// Attaches the cgroup path's programs at whole-cgroup target `slot`'s cgroup `dir`, which
    /// they count in its cgroup storage. With `scanning`, connections established from now on
    /// until [`Kernel::end_scan`] get a socket state, so the scan of existing sockets cannot
    /// count one twice.
    fn attach_whole(&mut self, dir: &Path, slot: Slot, scanning: bool) -> anyhow::Result<()>;
    /// `--all`: attaches the node path's counters at `root`.
    fn attach_node(&mut self, root: &std::path::Path) -> anyhow::Result<()>;
    /// `--all`: attaches the node path's socket hooks at `root` (TCP sockets' cgroups and
    /// TCP health; with `-i` and no `bpf_get_netns_cookie` in cgroup_skb, every new socket's
    /// namespace), before its counters and before existing sockets are stamped.
    fn attach_node_hooks(&mut self, root: &std::path::Path) -> anyhow::Result<()>;
    /// With `-i`: whether the packet counters ask each packet's namespace
    /// (`bpf_get_netns_cookie` in cgroup_skb); false: they filter on the namespace stamped on
    /// each socket.
    fn netns_helper(&self) -> bool;
    /// A descriptor that becomes readable when a target's process moves to another cgroup
    /// (then [`Kernel::moves`] has it), for the loop to wake on; None when moves are not
    /// watched (no process targets).
    fn moves_fd(&self) -> Option<OwnedFd>;
}

/// What the run asks of the loaded programs' maps.
pub trait Kernel {
    /// Declares `tgid` a member of target `slot`: sockets it creates from now on are stamped.
    fn add_target_pid(&mut self, tgid: u32, slot: Slot) -> anyhow::Result<()>;
    /// Makes every process in cgroup `cgroup_id` and below a member of target `slot`.
    fn add_cgroup_target(&mut self, cgroup_id: u64, slot: Slot) -> anyhow::Result<()>;
    /// Counts traffic through interface `key` (with the interface filter on).
    fn allow_iface(&mut self, key: IfaceKey) -> anyhow::Result<()>;
    /// Stops counting traffic through interface `key`.
    fn deny_iface(&mut self, key: IfaceKey);
    /// `--all -i`: interface `key` is known and not chosen (not counted, and not reported as
    /// new); keys absent from the filter are charged to `untracked` and reported by
    /// [`Kernel::new_ifaces`].
    fn skip_iface(&mut self, key: IfaceKey) -> anyhow::Result<()>;
    /// `--all -i`: the interfaces packets passed since the last call that were not in the
    /// filter yet (their bytes went to `untracked`); taken out of the kernel's list.
    fn new_ifaces(&mut self) -> Vec<IfaceKey>;
    /// `--all -i` without `bpf_get_netns_cookie` in cgroup_skb: stamps a socket that predates
    /// the run, through a descriptor copied from its process, with its namespace's cookie.
    fn stamp_netns(&mut self, sock: &OwnedFd, netns_cookie: u64) -> anyhow::Result<()>;
    /// Stamps a socket that predates the run, through a descriptor copied from its process.
    /// Returns whether the state was installed (false: the kernel already had one, or the
    /// target is on the cgroup path and the socket does not count as a connection now: there a
    /// state only serves the gauges).
    fn stamp_socket(&mut self, sock: &OwnedFd, stamp: SocketStamp) -> anyhow::Result<bool>;
    /// The scan of whole-cgroup target `slot`'s existing sockets is over (cgroup path).
    fn end_scan(&mut self, slot: Slot);
    /// Creates a `--details` record for a socket that predates the run (kept if one exists).
    fn put_connection(&mut self, cookie: u64, conn: Connection) -> anyhow::Result<()>;
    /// Updates RTT, retransmits and state of a record that predates the run.
    fn refresh_connection(&mut self, cookie: u64, srtt_us: u32, retrans: u32, state: u8);
    /// Forgets a record the agent has shown closed.
    fn forget_connection(&mut self, cookie: u64);

    /// Cumulative traffic of target `slot`, by protocol.
    fn totals(&self, slot: Slot) -> anyhow::Result<Traffic>;
    /// Live connections of `slot` as the kernel counted them (tcp, udp): signed, since
    /// connections that predate the run are taken out when they close.
    fn gauges(&self, slot: Slot) -> anyhow::Result<(i64, i64)>;
    /// What could not be charged to a target, cumulative.
    fn untracked(&self) -> anyhow::Result<Untracked>;
    /// Every `--details` record, by socket cookie.
    fn connections(&self) -> Vec<(u64, Connection)>;
    /// `--all`: cumulative counters per (cgroup, protocol, destination class).
    fn cgroup_totals(&self) -> Vec<CgroupCount>;
    /// `--all`: deletes the counters of removed cgroups (after the caller has charged them),
    /// so the map holds live cgroups only. Keys that are not there are skipped.
    fn remove_cgroup_counts(&mut self, keys: &[CgroupCountKey]);
    /// Entries in the target-PID map (targets and their children), for the map-fill metric.
    fn target_pid_count(&self) -> u32;

    /// TCP health of target `slot`, cumulative.
    fn health(&self, slot: Slot) -> anyhow::Result<Health>;
    /// `--all`: TCP health per cgroup, cumulative.
    fn node_health(&self) -> Vec<(u64, Health)>;
    /// `--all`: deletes the TCP health of removed cgroups (after the caller has charged it).
    fn remove_node_health(&mut self, cgroups: &[u64]);
    /// Starts RTT sampling epoch `epoch` (not 0): each socket gives at most one sample per
    /// epoch.
    fn set_rtt_epoch(&mut self, epoch: u32);
    /// Incoming handshakes recorded as in flight (completed ones leave by themselves).
    fn handshakes(&self) -> Vec<PendingHandshake>;
    /// Deletes a handshake's record; true when it was still there (not completed meanwhile).
    fn forget_handshake(&mut self, h: &PendingHandshake) -> bool;
    /// TCP health events the kernel could not charge (a map full), cumulative.
    fn health_lost(&self) -> u64;

    /// Puts the destination classes' prefixes in (set-up; class index per prefix).
    fn set_class_cidrs(&mut self, cidrs: &[(ipnet::IpNet, u8)]) -> anyhow::Result<()>;
    /// Per-remote-host totals of every target, cumulative.
    fn destinations(&self) -> Vec<DestCount>;
    /// The `other` bucket of target `slot`.
    fn dest_other(&self, slot: Slot) -> anyhow::Result<DestOther>;
    /// Per-class totals of every target, cumulative.
    fn class_totals(&self) -> Vec<ClassCount>;
    /// DNS queries targets' sockets sent and the answers the kernel matched to them, since
    /// the last call (in no particular order: one buffer per CPU).
    fn dns_events(&mut self) -> Vec<DnsEvent>;
    /// What the kernel did not hand up of target `slot`'s DNS, cumulative.
    fn dns_drops(&self, slot: Slot) -> DnsDrops;
    /// Targets' processes that moved to another cgroup since the last call, oldest first.
    fn moves(&mut self) -> Vec<Moved>;
    /// Moves the kernel had no room to hand up (cumulative); the loop finds them at a tick.
    fn moves_lost(&self) -> u64;

    /// `--all --destinations`: per-(cgroup, remote host) totals, cumulative.
    fn node_destinations(&self) -> Vec<NodeDestCount>;
    /// `--all --destinations`: each cgroup's `other` (traffic past its cap, hosts kept apart).
    fn node_dest_other(&self) -> Vec<(u64, DestOther)>;
    /// `--all --destinations`: traffic no cgroup's `other` could take (more cgroups than the
    /// kernel's map holds), cumulative: in its workload's totals, missing from its hosts.
    fn node_dest_lost(&self) -> Counters;
    /// `--all --destinations`: deletes removed cgroups' host keys and their `other` entries
    /// (after the caller has charged them). Keys that are not there are skipped.
    fn remove_node_dests(&mut self, keys: &[NodeDestKey], cgroups: &[u64]);
}
