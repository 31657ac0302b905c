//! The aya implementation of [`Kernel`]: load the object, attach the programs to cgroups,
//! and typed access to the maps, converting the `procnetmon2_common` ABI structs to agent
//! types at this boundary. The only module that uses `aya`.
//!
//! Links are owned by the [`Ebpf`] value: dropping [`Probes`] detaches every program, on
//! success, on error and on unwinding alike.

use std::{
    fs::File,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap, PerfEventArray,
        RingBuf, SkStorage,
        lpm_trie::Key,
        perf::{PerfEvent, PerfEventArrayBuffer},
    },
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        RawTracePoint, SockOps,
    },
};
use procnetmon2_common::{
    conn::{ConnGauges, ConnRecord},
    dest::{self, DestKey, DnsState, NodeDestKey},
    health::{self, HandshakeKey},
    knobs::{self, CgroupKey},
    sock::{
        COUNT_ACTIVE, COUNT_NOT_YET, FLAG_ESTABLISHED, FLAG_IFACE_OK, FLAG_UDP_ACTIVE, PROTO_OTHER,
        PROTO_TCP, PROTO_UDP, SockState,
    },
    traffic::{self, TargetTotals},
};

use super::{
    CgroupCount, ClassCount, Connection, DestCount, DestOther, DnsDrops, DnsEvent, HandshakeOwner,
    Health, IfaceKey, Kernel, Knobs, MAX_NODE_HEALTH, MAX_TARGET_PIDS, MAX_TARGETS, Moved,
    NodeDestCount, PendingHandshake, Programs, Proto, Slot, SocketStamp, Untracked,
    whole::WholeMaps,
};
use crate::model::{Counters, RttHistogram, Traffic};

/// Programs by kind, as the `pnm_*` functions in ebpf/src/main.rs.
/// The eBPF object built by agent/build.rs.
const OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/procnetmon2"));

const SKB_PROGS: [(&str, CgroupSkbAttachType); 2] = [
    ("pnm_ingress", CgroupSkbAttachType::Ingress),
    ("pnm_egress", CgroupSkbAttachType::Egress),
];
const SOCK_PROGS: [&str; 4] = [
    "pnm_sock_create",
    "pnm_sock_release",
    "pnm_post_bind4",
    "pnm_post_bind6",
];
const SOCK_ADDR_PROGS: [&str; 4] = [
    "pnm_connect4",
    "pnm_connect6",
    "pnm_sendmsg4",
    "pnm_sendmsg6",
];
const SOCKOPS_PROG: &str = "pnm_sockops";
/// The cgroup path (ebpf/src/whole.rs). Its release program is attached first: it creates the
/// target's cgroup storage without counting anything (`attach_whole`).
const CG_RELEASE_PROG: &str = "pnm_cg_release";
const CG_SKB_PROGS: [(&str, CgroupSkbAttachType); 2] = [
    ("pnm_cg_ingress", CgroupSkbAttachType::Ingress),
    ("pnm_cg_egress", CgroupSkbAttachType::Egress),
];
const CG_SOCK_PROGS: [&str; 2] = ["pnm_cg_bind4", "pnm_cg_bind6"];
const CG_SOCK_ADDR_PROGS: [&str; 4] = [
    "pnm_cg_connect4",
    "pnm_cg_connect6",
    "pnm_cg_sendmsg4",
    "pnm_cg_sendmsg6",
];
const CG_SOCKOPS_PROG: &str = "pnm_cg_sockops";
/// The node path (`--all`, ebpf/src/node.rs).
const NODE_SKB_PROGS: [(&str, CgroupSkbAttachType); 2] = [
    ("pnm_all_ingress", CgroupSkbAttachType::Ingress),
    ("pnm_all_egress", CgroupSkbAttachType::Egress),
];
/// Its socket hooks: TCP sockets' cgroups (and, for `--all -i` without
/// `bpf_get_netns_cookie` in cgroup_skb, every socket's namespace), releases while connecting,
/// and TCP health.
const NODE_SOCK_PROGS: [&str; 2] = ["pnm_all_sock_create", "pnm_all_release"];
const NODE_SOCKOPS_PROG: &str = "pnm_all_sockops";
/// Raw tracepoints: (program, tracepoint).
const TP_PROGS: [(&str, &str); 2] = [
    ("pnm_fork", "sched_process_fork"),
    ("pnm_exit", "sched_process_exit"),
];
/// The raw tracepoint that sees a process move to another cgroup (with process targets).
const MOVE_PROG: (&str, &str) = ("pnm_cgroup_attach", "cgroup_attach_task");
/// Map names, as the statics in ebpf/src/maps.rs.
const MAP_SOCK_STATE: &str = "SOCK_STATE";
const MAP_TARGET_PIDS: &str = "TARGET_PIDS";
const MAP_TARGET_TOTALS: &str = "TARGET_TOTALS";
const MAP_TARGET_CONNS: &str = "TARGET_CONNS";
const MAP_UNTRACKED: &str = "UNTRACKED";
const MAP_UNTRACKED_EVENTS: &str = "UNTRACKED_EVENTS";
const MAP_CONNS: &str = "CONNS";
const MAP_IFACES: &str = "IFACES";
const MAP_NEW_IFACES: &str = "NEW_IFACES";
const MAP_SOCK_NETNS: &str = "SOCK_NETNS";
const MAP_CGROUP_TARGETS: &str = "CGROUP_TARGETS";
const MAP_CGROUP_TOTALS: &str = "CGROUP_TOTALS";
const MAP_CLASS_CIDRS: &str = "CLASS_CIDRS";
const MAP_CLASS_TOTALS: &str = "CLASS_TOTALS";
const MAP_DEST_TOTALS: &str = "DEST_TOTALS";
const MAP_DEST_OTHER: &str = "DEST_OTHER";
const MAP_DNS_EVENTS: &str = "DNS_EVENTS";
const MAP_DNS_PENDING: &str = "DNS_PENDING";
const MAP_DNS_STATE: &str = "DNS_STATE";
const MAP_MOVES: &str = "MOVES";
const MAP_NODE_DEST_TOTALS: &str = "NODE_DEST_TOTALS";
const MAP_NODE_DEST_OTHER: &str = "NODE_DEST_OTHER";
const MAP_NODE_DEST_LOST: &str = "NODE_DEST_LOST";
const MAP_CG_SLOT: &str = "CG_SLOT";
const MAP_CG_SCANNING: &str = "CG_SCANNING";
const MAP_CG_OLD: &str = "CG_OLD";
const MAP_TARGET_HEALTH: &str = "TARGET_HEALTH";
const MAP_NODE_HEALTH: &str = "NODE_HEALTH";
const MAP_RTT_EPOCH: &str = "RTT_EPOCH";
const MAP_HANDSHAKES: &str = "HANDSHAKES";
const MAP_HEALTH_LOST: &str = "HEALTH_LOST";
const MAP_RTT_SEEN: &str = "RTT_SEEN";
/// Pages per CPU of the DNS perf buffers (64 KiB with 4 KiB pages): a tick's answers.
const DNS_PAGES: usize = 16;

/// `BPF_NOEXIST`: create only.
const BPF_NOEXIST: u64 = 1;

/// The loaded programs and their maps.
pub struct Probes {
    ebpf: Ebpf,
    /// With `-i`: the skb programs ask each packet's namespace (else: the socket's stamp).
    netns_helper: bool,
    state: SkStorage<MapData, SockState>,
    target_pids: HashMap<MapData, u32, u32>,
    totals: PerCpuArray<MapData, TargetTotals>,
    gauges: Array<MapData, ConnGauges>,
    untracked: PerCpuArray<MapData, traffic::Counters>,
    untracked_events: PerCpuArray<MapData, u64>,
    conns: HashMap<MapData, u64, ConnRecord>,
    ifaces: HashMap<MapData, knobs::IfaceKey, u8>,
    new_ifaces: HashMap<MapData, knobs::IfaceKey, u8>,
    sock_netns: SkStorage<MapData, u64>,
    cgroup_targets: HashMap<MapData, u64, u32>,
    cgroup_totals: PerCpuHashMap<MapData, CgroupKey, traffic::Counters>,
    dest: DestMaps,
    /// The cgroup path's targets and maps.
    whole: WholeMaps,
    /// Targets' moves to other cgroups (with process targets only).
    moves: Option<RingBuf<MapData>>,
    health: HealthMaps,
}

/// The maps of issue 29 (TCP health).
struct HealthMaps {
    targets: Array<MapData, health::Health>,
    node: HashMap<MapData, u64, health::Health>,
    epoch: Array<MapData, u32>,
    handshakes: HashMap<MapData, HandshakeKey, health::Handshake>,
    lost: PerCpuArray<MapData, u64>,
}

impl HealthMaps {
    fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            targets: take(ebpf, MAP_TARGET_HEALTH)?,
            node: take(ebpf, MAP_NODE_HEALTH)?,
            epoch: take(ebpf, MAP_RTT_EPOCH)?,
            handshakes: take(ebpf, MAP_HANDSHAKES)?,
            lost: take(ebpf, MAP_HEALTH_LOST)?,
        })
    }
}

/// The maps of issue 17 (remote hosts, classes, DNS answers).
struct DestMaps {
    cidrs: LpmTrie<MapData, [u8; 16], u32>,
    /// `slot * class_count + class` → per-protocol counters, per CPU.
    class_totals: PerCpuArray<MapData, TargetTotals>,
    class_count: u32,
    slots: u32,
    totals: HashMap<MapData, DestKey, traffic::Counters>,
    other: Array<MapData, dest::DestOther>,
    /// One perf buffer per online CPU, opened only when DNS answers are asked for.
    dns: Vec<PerfEventArrayBuffer<MapData>>,
    /// Records lost because a perf buffer was full (warned about as they happen; the kernel
    /// also counts them per target, in `DNS_STATE`).
    dns_lost: u64,
    /// slot → budget and drops, per CPU.
    dns_state: PerCpuArray<MapData, DnsState>,
    /// `--all --destinations`: (cgroup, remote address) → counters; per cgroup its `other`.
    node_totals: HashMap<MapData, NodeDestKey, traffic::Counters>,
    node_other: HashMap<MapData, u64, dest::DestOther>,
    node_lost: PerCpuArray<MapData, traffic::Counters>,
}

impl DestMaps {
    fn take(ebpf: &mut Ebpf, knobs: &crate::kernel::DestKnobs) -> anyhow::Result<Self> {
        let dns = knobs.dns;
        let mut buffers = Vec::new();
        if dns {
            let mut events: PerfEventArray<MapData> = take(ebpf, MAP_DNS_EVENTS)?;
            let cpus = aya::util::online_cpus()
                .map_err(|(what, e)| anyhow!("{what}: {e}"))
                .context("list online CPUs for the DNS buffers")?;
            for cpu in cpus {
                buffers.push(
                    events
                        .open(cpu, Some(DNS_PAGES))
                        .with_context(|| format!("open the DNS perf buffer of CPU {cpu}"))?,
                );
            }
        }
        Ok(Self {
            cidrs: take(ebpf, MAP_CLASS_CIDRS)?,
            class_totals: take(ebpf, MAP_CLASS_TOTALS)?,
            class_count: if knobs.classes { knobs.class_count } else { 0 },
            slots: knobs.slots,
            totals: take(ebpf, MAP_DEST_TOTALS)?,
            other: take(ebpf, MAP_DEST_OTHER)?,
            dns: buffers,
            dns_lost: 0,
            dns_state: take(ebpf, MAP_DNS_STATE)?,
            node_totals: take(ebpf, MAP_NODE_DEST_TOTALS)?,
            node_other: take(ebpf, MAP_NODE_DEST_OTHER)?,
            node_lost: take(ebpf, MAP_NODE_DEST_LOST)?,
        })
    }
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (< 5.11).
fn bump_memlock() {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY) {
        // Newer kernels account BPF memory to the memory cgroup: not an error.
        log::debug!("setrlimit(RLIMIT_MEMLOCK) failed: {e}");
    }
}

fn take<T: TryFrom<aya::maps::Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

/// A map aya has no typed access for here (`CG_SLOT`: kernel/whole.rs).
fn take_data(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<MapData> {
    match ebpf.take_map(name) {
        Some(aya::maps::Map::CgroupStorage(m)) => Ok(m),
        Some(_) => Err(anyhow!("map {name} has an unexpected type")),
        None => Err(anyhow!("map {name} missing from the eBPF object")),
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    prog.try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}

/// Explains a load failure with the minimum kernel the program type needs.
static MIN_KERNEL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "needs Linux >= {} with BTF, and root or CAP_BPF + CAP_NET_ADMIN",
        crate::version::MIN_KERNEL
    )
});

/// The programs of one path, by type.
struct ProgramSet<'a> {
    skb: &'a [(&'a str, CgroupSkbAttachType)],
    sock: &'a [&'a str],
    sock_addr: &'a [&'a str],
    sock_ops: &'a [&'a str],
}

const SOCKET_PATH: ProgramSet<'static> = ProgramSet {
    skb: &SKB_PROGS,
    sock: &SOCK_PROGS,
    sock_addr: &SOCK_ADDR_PROGS,
    sock_ops: &[SOCKOPS_PROG],
};
const EMPTY_SET: ProgramSet<'static> = ProgramSet {
    skb: &[],
    sock: &[],
    sock_addr: &[],
    sock_ops: &[],
};
const CGROUP_PATH: ProgramSet<'static> = ProgramSet {
    skb: &CG_SKB_PROGS,
    sock: &[CG_RELEASE_PROG, CG_SOCK_PROGS[0], CG_SOCK_PROGS[1]],
    sock_addr: &CG_SOCK_ADDR_PROGS,
    sock_ops: &[CG_SOCKOPS_PROG],
};
const NODE_PATH: ProgramSet<'static> = ProgramSet {
    skb: &NODE_SKB_PROGS,
    sock: &NODE_SOCK_PROGS,
    sock_addr: &[],
    sock_ops: &[NODE_SOCKOPS_PROG],
};

/// Loads (verification happens here) every program of `set`.
fn load_set(ebpf: &mut Ebpf, set: &ProgramSet<'_>) -> anyhow::Result<()> {
    for (name, _) in set.skb {
        let p: &mut CgroupSkb = program(ebpf, name)?;
        p.load()
            .with_context(|| format!("load {name} (cgroup_skb; {})", *MIN_KERNEL))?;
    }
    for name in set.sock {
        let p: &mut CgroupSock = program(ebpf, name)?;
        p.load()
            .with_context(|| format!("load {name} (cgroup/sock; {})", *MIN_KERNEL))?;
    }
    for name in set.sock_addr {
        let p: &mut CgroupSockAddr = program(ebpf, name)?;
        p.load()
            .with_context(|| format!("load {name} (cgroup/sock_addr; {})", *MIN_KERNEL))?;
    }
    for name in set.sock_ops {
        let p: &mut SockOps = program(ebpf, name)?;
        p.load()
            .with_context(|| format!("load {name} (sock_ops; {})", *MIN_KERNEL))?;
    }
    Ok(())
}

/// Loads the programs of the paths the run uses (the others stay out of the kernel: each load
/// is a verification, seconds under emulation); the fork and exit tracepoints only when
/// children are followed, the move tracepoint only with process targets, and those are
/// attached at once.
fn load_programs(ebpf: &mut Ebpf, knobs: &Knobs) -> anyhow::Result<()> {
    if knobs.socket_path {
        load_set(ebpf, &SOCKET_PATH)?;
    }
    if knobs.cgroup_path {
        load_set(ebpf, &CGROUP_PATH)?;
    }
    if knobs.all {
        load_set(ebpf, &NODE_PATH)?;
    }
    let tps = TP_PROGS
        .iter()
        .filter(|_| knobs.children)
        .chain(std::iter::once(&MOVE_PROG).filter(|_| knobs.pid_targets));
    for &(name, tp) in tps {
        let p: &mut RawTracePoint = program(ebpf, name)?;
        p.load()
            .with_context(|| format!("load {name} (raw tracepoint; {})", *MIN_KERNEL))?;
        p.attach(tp)
            .with_context(|| format!("attach {name} to raw tracepoint {tp}"))?;
    }
    Ok(())
}

/// `max_entries` of the maps sized at load. Maps a run does not use get one entry (a map
/// cannot be empty): the preallocated ones cost their full size in kernel memory and start-up
/// time whether used or not, the per-CPU ones times the CPUs (`CGROUP_TOTALS` at 16,384 ×
/// 32 B and `TARGET_TOTALS` at 4,096 × 96 B: 56 MiB on 64 CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MapSizes {
    /// Classes counted in the kernel (0 without `--class`/`--classes`).
    class_count: u32,
    /// Targets × classes.
    class_totals: u32,
    /// `--all`: (cgroup, protocol) keys × classes, bounded (overflow: untracked).
    cgroup_totals: u32,
    /// `-i`: the chosen interfaces of every namespace.
    ifaces: u32,
    /// The plan's slots (fixed for the run).
    target_totals: u32,
    /// `-p` runs: the targets and the children they fork.
    target_pids: u32,
    /// `--all`: cgroups with TCP health (allocated on use, so the cap costs nothing).
    node_health: u32,
    /// DNS names: queries in flight.
    dns_pending: u32,
    /// The cgroup and node paths' RTT sampler (`RTT_SEEN`, eight one-byte slots per
    /// entry): both paths' shares, or 1.
    rtt_seen: u32,
}

impl MapSizes {
    fn for_knobs(knobs: &Knobs) -> Self {
        let class_count = if knobs.dest.classes {
            knobs.dest.class_count
        } else {
            0
        };
        let used = |on: bool, n: u32| if on { n } else { 1 };
        Self {
            class_count,
            class_totals: knobs.dest.slots.saturating_mul(class_count).max(1),
            cgroup_totals: used(knobs.all, knobs::cgroup_key_capacity(class_count)),
            ifaces: used(knobs.iface_filter, knobs::MAX_IFACES),
            target_totals: knobs.dest.slots.clamp(1, MAX_TARGETS),
            target_pids: used(knobs.pid_targets, MAX_TARGET_PIDS),
            node_health: used(knobs.all, MAX_NODE_HEALTH),
            dns_pending: used(knobs.dest.dns, dest::MAX_DNS_PENDING),
            rtt_seen: used(
                knobs.all || knobs.cgroup_path,
                2 * health::RTT_SEEN_SLOTS / 8,
            ),
        }
    }
}

impl Probes {
    /// Loads the object and every program into the kernel (the cgroup programs are not
    /// attached yet).
    pub fn load(knobs: Knobs) -> anyhow::Result<Self> {
        bump_memlock();
        let details = u8::from(knobs.details);
        let filter = u8::from(knobs.iface_filter);
        let children = u8::from(knobs.children);
        let cgroups = u8::from(knobs.cgroup_targets);
        let pids = u8::from(knobs.pid_targets);
        let all = u8::from(knobs.all);
        // Probed only for -i, the one user: the fast path where cgroup_skb has the helper.
        let netns_helper = knobs.iface_filter && super::features::netns_cookie_in_cgroup_skb();
        log::debug!("bpf_get_netns_cookie in cgroup_skb: {netns_helper}");
        let helper = netns_helper;
        let netns_helper = u8::from(netns_helper);
        let classes = u8::from(knobs.dest.classes);
        let dests = u8::from(knobs.dest.destinations);
        let dns = u8::from(knobs.dest.dns);
        let node_dests = u8::from(knobs.dest.node_destinations);
        let cap = knobs.dest.cap;
        let sizes = MapSizes::for_knobs(&knobs);
        let class_count = sizes.class_count;
        let (pid_off, tgid_off) = if knobs.children || knobs.pid_targets {
            crate::kernel::btf::task_pid_tgid_offsets()?
        } else {
            (0, 0)
        };
        let mut ebpf = EbpfLoader::new()
            // No kernel BTF: it only serves CO-RE relocations, and the object has none
            // (aya-ebpf emits none; `object_has_no_core_relocations` checks the built
            // object). Not parsing the kernel's 5-6 MB of BTF cut a 100-ms run in a 6.12 TCG
            // VM from 2.76 to 2.20 s (median of 3).
            .btf(None)
            .override_global(knobs::DETAILS, &details, true)
            .override_global(knobs::IFACE_FILTER, &filter, true)
            .override_global(knobs::CHILDREN, &children, true)
            .override_global(knobs::CGROUP_TARGETS, &cgroups, true)
            .override_global(knobs::PID_TARGETS, &pids, true)
            .override_global(knobs::ALL, &all, true)
            .override_global(knobs::NETNS_HELPER, &netns_helper, true)
            .override_global(dest::CLASSES, &classes, true)
            .override_global(dest::DESTS, &dests, true)
            .override_global(dest::DNS, &dns, true)
            .override_global(dest::NODE_DESTS, &node_dests, true)
            .override_global(dest::DEST_CAP, &cap, true)
            .override_global(dest::CLASS_COUNT, &class_count, true)
            .map_max_entries(MAP_CLASS_TOTALS, sizes.class_totals)
            .map_max_entries(MAP_CGROUP_TOTALS, sizes.cgroup_totals)
            .map_max_entries(MAP_IFACES, sizes.ifaces)
            .map_max_entries(MAP_TARGET_TOTALS, sizes.target_totals)
            .map_max_entries(MAP_TARGET_PIDS, sizes.target_pids)
            // TCP health per slot: 272 bytes each, as many as TARGET_TOTALS.
            .map_max_entries(MAP_TARGET_HEALTH, sizes.target_totals)
            .map_max_entries(MAP_NODE_HEALTH, sizes.node_health)
            .map_max_entries(MAP_DNS_PENDING, sizes.dns_pending)
            .map_max_entries(MAP_RTT_SEEN, sizes.rtt_seen)
            .map_max_entries(MAP_DNS_STATE, sizes.target_totals)
            .override_global(knobs::TASK_PID_OFF, &pid_off, true)
            .override_global(knobs::TASK_TGID_OFF, &tgid_off, true)
            .load(OBJECT)
            .with_context(|| format!("load the eBPF object ({})", *MIN_KERNEL))?;
        load_programs(&mut ebpf, &knobs)?;
        let whole = WholeMaps::new(
            take_data(&mut ebpf, MAP_CG_SLOT)?,
            take(&mut ebpf, MAP_CG_SCANNING)?,
            take(&mut ebpf, MAP_CG_OLD)?,
        );
        let moves = if knobs.pid_targets {
            Some(take(&mut ebpf, MAP_MOVES)?)
        } else {
            None
        };
        Ok(Self {
            whole,
            netns_helper: helper,
            cgroup_targets: take(&mut ebpf, MAP_CGROUP_TARGETS)?,
            cgroup_totals: take(&mut ebpf, MAP_CGROUP_TOTALS)?,
            state: take(&mut ebpf, MAP_SOCK_STATE)?,
            target_pids: take(&mut ebpf, MAP_TARGET_PIDS)?,
            totals: take(&mut ebpf, MAP_TARGET_TOTALS)?,
            gauges: take(&mut ebpf, MAP_TARGET_CONNS)?,
            untracked: take(&mut ebpf, MAP_UNTRACKED)?,
            untracked_events: take(&mut ebpf, MAP_UNTRACKED_EVENTS)?,
            conns: take(&mut ebpf, MAP_CONNS)?,
            ifaces: take(&mut ebpf, MAP_IFACES)?,
            new_ifaces: take(&mut ebpf, MAP_NEW_IFACES)?,
            sock_netns: take(&mut ebpf, MAP_SOCK_NETNS)?,
            dest: DestMaps::take(&mut ebpf, &knobs.dest)?,
            moves,
            health: HealthMaps::take(&mut ebpf)?,
            ebpf,
        })
    }

    /// Attaches the socket hooks of `set` at `cgroup` (no counters).
    fn attach_hooks_at(&mut self, set: &ProgramSet<'_>, cgroup: &File) -> anyhow::Result<()> {
        for name in set.sock {
            let p: &mut CgroupSock = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(attach_hint)
                .with_context(|| format!("attach {name}"))?;
        }
        for name in set.sock_addr {
            let p: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(attach_hint)
                .with_context(|| format!("attach {name}"))?;
        }
        for name in set.sock_ops {
            let p: &mut SockOps = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(attach_hint)
                .with_context(|| format!("attach {name}"))?;
        }
        Ok(())
    }

    /// Links, not legacy attachments: several programs stack on one cgroup whatever else is
    /// attached there (`AllowMultiple` is implied by links; passing it fails with EINVAL).
    fn attach_counters_at(
        &mut self,
        progs: &[(&str, CgroupSkbAttachType)],
        cgroup: &File,
    ) -> anyhow::Result<()> {
        for &(name, kind) in progs {
            let p: &mut CgroupSkb = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), kind, CgroupAttachMode::Single)
                .map_err(attach_hint)
                .with_context(|| format!("attach {name}"))?;
        }
        Ok(())
    }
}

/// The kernel allows 64 programs per attach type on one cgroup (`BPF_CGROUP_MAX_PROGS`);
/// past that, attaching fails with E2BIG ("Argument list too long"): say what it means.
fn attach_hint(e: aya::programs::ProgramError) -> anyhow::Error {
    let too_many = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.raw_os_error() == Some(libc::E2BIG))
        || format!("{e:?}").contains("E2BIG")
        || format!("{e:?}").contains("Argument list too long");
    if too_many {
        anyhow!(
            "{e}: this cgroup already has the 64 programs of this kind the kernel allows (other procnetmon2 runs or BPF tools attached there); stop some of them"
        )
    } else {
        e.into()
    }
}

fn proto_of(p: u8) -> Proto {
    match p {
        PROTO_TCP => Proto::Tcp,
        PROTO_UDP => Proto::Udp,
        _ => Proto::Other,
    }
}

fn proto_index(p: Proto) -> u8 {
    match p {
        Proto::Tcp => PROTO_TCP,
        Proto::Udp => PROTO_UDP,
        Proto::Other => PROTO_OTHER,
    }
}

fn counters(c: traffic::Counters) -> Counters {
    let traffic::Counters {
        bytes_in,
        bytes_out,
        pkts_in,
        pkts_out,
    } = c;
    Counters {
        bytes_in,
        bytes_out,
        packets_in: pkts_in,
        packets_out: pkts_out,
    }
}

fn health_of(h: &health::Health) -> Health {
    Health {
        connect_failures: h.connect_failures,
        handshake_failures: h.handshake_failures,
        retransmits: h.retrans_segs,
        rtt: RttHistogram {
            buckets: h.rtt_buckets,
            sum_us: h.rtt_sum_us,
        },
    }
}

/// A socket address from a `HandshakeKey`'s (network-order address words, host-order port).
fn sock_addr(family: u16, ip: [u32; 4], port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::new(remote_addr(family as u8, ip), port)
}

/// The `HANDSHAKES` key of a pending handshake (the inverse of `pending_handshake`).
fn handshake_key(h: &PendingHandshake) -> HandshakeKey {
    let words = |a: std::net::IpAddr| -> (u16, [u32; 4]) {
        match a {
            std::net::IpAddr::V4(a) => (2, [u32::from_ne_bytes(a.octets()), 0, 0, 0]),
            std::net::IpAddr::V6(a) => {
                let o = a.octets();
                let mut w = [0u32; 4];
                for (i, x) in w.iter_mut().enumerate() {
                    *x = u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]]);
                }
                (10, w)
            }
        }
    };
    let (family, local_ip) = words(h.local.ip());
    let (_, remote_ip) = words(h.remote.ip());
    HandshakeKey {
        local_ip,
        remote_ip,
        local_port: h.local.port(),
        remote_port: h.remote.port(),
        family,
        _pad: 0,
    }
}

fn pending_handshake(k: &HandshakeKey, v: &health::Handshake) -> PendingHandshake {
    PendingHandshake {
        local: sock_addr(k.family, k.local_ip, k.local_port),
        remote: sock_addr(k.family, k.remote_ip, k.remote_port),
        owner: HandshakeOwner {
            slot: (v.slot != health::NO_SLOT).then_some(Slot(v.slot)),
            cgroup_id: (v.cgroup_id != 0).then_some(v.cgroup_id),
        },
        started_ns: v.started_ns,
    }
}

fn abi_iface(k: IfaceKey) -> knobs::IfaceKey {
    knobs::IfaceKey {
        netns_cookie: k.netns_cookie,
        ifindex: k.ifindex,
        _pad: 0,
    }
}

fn connection(r: &ConnRecord) -> Connection {
    Connection {
        bytes_in: r.bytes_in,
        bytes_out: r.bytes_out,
        open_ns: r.open_ns,
        close_ns: r.close_ns,
        local: (r.local_ip, r.local_port),
        remote: (r.remote_ip, r.remote_port),
        slot: Slot(r.slot),
        tgid: r.tgid,
        srtt_us: r.srtt_us,
        retrans: r.retrans,
        tcp: r.proto == PROTO_TCP,
        family: r.family,
        state: r.state,
        iface_ok: r.iface_ok != 0,
    }
}

fn conn_record(c: &Connection) -> ConnRecord {
    ConnRecord {
        bytes_in: c.bytes_in,
        bytes_out: c.bytes_out,
        open_ns: c.open_ns,
        close_ns: c.close_ns,
        local_ip: c.local.0,
        local_port: c.local.1,
        remote_ip: c.remote.0,
        remote_port: c.remote.1,
        tgid: c.tgid,
        slot: c.slot.0,
        srtt_us: c.srtt_us,
        retrans: c.retrans,
        proto: if c.tcp { PROTO_TCP } else { PROTO_UDP },
        family: c.family,
        state: c.state,
        iface_ok: u8::from(c.iface_ok),
        ..ConnRecord::default()
    }
}

/// A `NODE_DEST_TOTALS` key from its agent form (the inverse of `remote_addr`).
fn node_dest_key(k: &super::NodeDestKey) -> NodeDestKey {
    let (cgroup_id, addr, class) = *k;
    let (family, addr) = match addr {
        std::net::IpAddr::V4(a) => (2, [u32::from_ne_bytes(a.octets()), 0, 0, 0]),
        std::net::IpAddr::V6(a) => {
            let o = a.octets();
            let mut w = [0u32; 4];
            for (i, x) in w.iter_mut().enumerate() {
                *x = u32::from_ne_bytes([o[i * 4], o[i * 4 + 1], o[i * 4 + 2], o[i * 4 + 3]]);
            }
            (10, w)
        }
    };
    NodeDestKey {
        cgroup_id,
        addr,
        family,
        class: class.unwrap_or(dest::CLASS_NONE),
        _pad: [0; 6],
    }
}

/// A `DNS_EVENTS` record: a `dest::DnsHeader` (ns, cookie, slot, len, kind), then the packet.
fn dns_event(bytes: &[u8]) -> Option<DnsEvent> {
    let hdr = std::mem::size_of::<dest::DnsHeader>();
    let u64_at = |o: usize| Some(u64::from_ne_bytes(bytes.get(o..o + 8)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_ne_bytes(bytes.get(o..o + 4)?.try_into().ok()?));
    let len = usize::try_from(u32_at(20)?).ok()?;
    let end = hdr.checked_add(len)?.min(bytes.len());
    Some(DnsEvent {
        ns: u64_at(0)?,
        cookie: u64_at(8)?,
        slot: Slot(u32_at(16)?),
        answer: *bytes.get(24)? == dest::DNS_ANSWER,
        packet: bytes.get(hdr..end)?.to_vec(),
    })
}

/// A remote address from a `DestKey` (network-order words, IPv4 in the first).
fn remote_addr(family: u8, a: [u32; 4]) -> std::net::IpAddr {
    if family == 2 {
        std::net::Ipv4Addr::from(a[0].to_ne_bytes()).into()
    } else {
        let mut b = [0u8; 16];
        for (i, w) in a.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        std::net::Ipv6Addr::from(b).into()
    }
}

fn is_eexist(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::EEXIST))
}

impl Programs for Probes {
    fn attach_sock_hooks(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        self.attach_hooks_at(&SOCKET_PATH, &crate::host::cgroup::open_dir(dir)?)
    }

    fn attach_counters(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        self.attach_counters_at(&SKB_PROGS, &crate::host::cgroup::open_dir(dir)?)
    }

    /// In this order: the release program (its attachment creates the cgroup storage, and it
    /// counts nothing yet), the slot written into the storage (a write replaces the whole
    /// value, so it must come before anything counts), the scan flag, the socket hooks, then
    /// the counters.
    fn attach_whole(
        &mut self,
        dir: &std::path::Path,
        slot: Slot,
        scanning: bool,
    ) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        let cgroup = crate::host::cgroup::open_dir(dir)?;
        // A cgroup's id is its directory's inode number.
        let cgroup_id = cgroup
            .metadata()
            .with_context(|| format!("stat cgroup {}", dir.display()))?
            .ino();
        let release = ProgramSet {
            sock: &[CG_RELEASE_PROG],
            ..EMPTY_SET
        };
        self.attach_hooks_at(&release, &cgroup)?;
        self.whole.start(cgroup_id, slot, scanning)?;
        let hooks = ProgramSet {
            sock: &CG_SOCK_PROGS,
            ..CGROUP_PATH
        };
        self.attach_hooks_at(&hooks, &cgroup)?;
        self.attach_counters_at(&CG_SKB_PROGS, &cgroup)
    }

    fn attach_node(&mut self, root: &std::path::Path) -> anyhow::Result<()> {
        self.attach_counters_at(&NODE_SKB_PROGS, &crate::host::cgroup::open_dir(root)?)
    }

    fn attach_node_hooks(&mut self, root: &std::path::Path) -> anyhow::Result<()> {
        self.attach_hooks_at(&NODE_PATH, &crate::host::cgroup::open_dir(root)?)
    }

    fn netns_helper(&self) -> bool {
        self.netns_helper
    }

    fn moves_fd(&self) -> Option<OwnedFd> {
        let ring = self.moves.as_ref()?;
        match ring.as_fd().try_clone_to_owned() {
            Ok(fd) => Some(fd),
            Err(e) => {
                log::warn!(
                    "cannot watch the moves ring buffer ({e}); moves are followed each interval"
                );
                None
            }
        }
    }
}

impl Kernel for Probes {
    fn add_target_pid(&mut self, tgid: u32, slot: Slot) -> anyhow::Result<()> {
        anyhow::ensure!(slot.0 < MAX_TARGETS, "at most {MAX_TARGETS} targets");
        self.target_pids
            .insert(tgid, slot.0, 0)
            .with_context(|| format!("add PID {tgid} to TARGET_PIDS"))
    }

    fn add_cgroup_target(&mut self, cgroup_id: u64, slot: Slot) -> anyhow::Result<()> {
        self.cgroup_targets
            .insert(cgroup_id, slot.0, 0)
            .context("insert CGROUP_TARGETS")
    }

    fn allow_iface(&mut self, key: IfaceKey) -> anyhow::Result<()> {
        self.ifaces
            .insert(abi_iface(key), knobs::IFACE_COUNT, 0)
            .context("insert IFACES (full: more interfaces on the node than it holds)")
    }

    fn deny_iface(&mut self, key: IfaceKey) {
        let _ = self.ifaces.remove(&abi_iface(key));
    }

    fn skip_iface(&mut self, key: IfaceKey) -> anyhow::Result<()> {
        self.ifaces
            .insert(abi_iface(key), knobs::IFACE_SKIP, 0)
            .context("insert IFACES (full: more interfaces on the node than it holds)")
    }

    fn new_ifaces(&mut self) -> Vec<IfaceKey> {
        let keys: Vec<knobs::IfaceKey> = self.new_ifaces.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = self.new_ifaces.remove(k);
        }
        keys.into_iter()
            .map(|k| IfaceKey {
                netns_cookie: k.netns_cookie,
                ifindex: k.ifindex,
            })
            .collect()
    }

    fn stamp_netns(&mut self, sock: &OwnedFd, netns_cookie: u64) -> anyhow::Result<()> {
        // BPF_NOEXIST: a stamp from sock_create (or an accepted socket's clone) is as good.
        match self
            .sock_netns
            .insert(&sock.as_raw_fd(), netns_cookie, BPF_NOEXIST)
        {
            Ok(()) => Ok(()),
            Err(e) if is_eexist(&e) => Ok(()),
            Err(e) => Err(e).context("stamp socket namespace"),
        }
    }

    /// Its state, unless the kernel already made one (`pnm_sock_create` saw it being created
    /// after the hooks were attached: the same owner, and a gauge state of its own).
    fn stamp_socket(&mut self, sock: &OwnedFd, stamp: SocketStamp) -> anyhow::Result<bool> {
        let SocketStamp {
            slot,
            tgid,
            proto,
            family,
            established,
            udp_active,
            count_now,
            iface_ok,
            netns_cookie,
        } = stamp;
        if self.whole.has(slot) {
            // The cgroup path keeps a state only for a socket in a gauge now (a listener's
            // would be cloned into every connection it accepts), and its programs look for a
            // TCP one only once told to: before the state exists, so no close is missed.
            if !count_now {
                return Ok(false);
            }
            if proto == Proto::Tcp {
                self.whole.mark_old(slot)?;
            }
        }
        let mut flags = 0;
        if established {
            flags |= FLAG_ESTABLISHED;
        }
        if udp_active {
            flags |= FLAG_UDP_ACTIVE;
        }
        if iface_ok {
            flags |= FLAG_IFACE_OK;
        }
        let state = SockState {
            slot: slot.0,
            tgid,
            proto: proto_index(proto),
            family,
            flags,
            counted: if count_now {
                COUNT_ACTIVE
            } else {
                COUNT_NOT_YET
            },
            netns_cookie,
            ..SockState::default()
        };
        let fd = sock.as_raw_fd();
        let installed = match self.state.insert(&fd, state, BPF_NOEXIST) {
            Ok(()) => true,
            Err(e) if is_eexist(&e) => false,
            Err(e) => return Err(e).context("set socket state"),
        };
        Ok(installed)
    }

    fn end_scan(&mut self, slot: Slot) {
        self.whole.end_scan(slot);
    }

    fn put_connection(&mut self, cookie: u64, conn: Connection) -> anyhow::Result<()> {
        match self.conns.insert(cookie, conn_record(&conn), BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(e) if is_eexist(&e) => Ok(()),
            Err(e) => Err(e).context("insert CONNS record"),
        }
    }

    fn refresh_connection(&mut self, cookie: u64, srtt_us: u32, retrans: u32, state: u8) {
        if let Ok(mut r) = self.conns.get(&cookie, 0) {
            r.srtt_us = srtt_us;
            r.retrans = retrans;
            if r.close_ns == 0 {
                r.state = state;
            }
            // BPF_EXIST: never resurrect a record deleted meanwhile.
            let _ = self.conns.insert(cookie, r, 2);
        }
    }

    fn forget_connection(&mut self, cookie: u64) {
        let _ = self.conns.remove(&cookie);
    }

    /// `TARGET_TOTALS[slot]`, plus with classes the slot's `CLASS_TOTALS` entries: the skb
    /// programs then charge a packet to its class only (one per-CPU add, not two), and
    /// `TARGET_TOTALS` keeps what had no class (not an IP packet).
    fn totals(&self, slot: Slot) -> anyhow::Result<Traffic> {
        let fold = |mut acc: TargetTotals, t: &TargetTotals| {
            for (a, b) in acc.by_proto.iter_mut().zip(t.by_proto) {
                *a = a.add(b);
            }
            acc
        };
        let per_cpu = self
            .totals
            .get(&slot.0, 0)
            .with_context(|| format!("read TARGET_TOTALS[{}]", slot.0))?;
        let mut sum = per_cpu.iter().fold(TargetTotals::default(), fold);
        let d = &self.dest;
        if slot.0 < d.slots {
            for class in 0..d.class_count {
                let i = slot.0 * d.class_count + class;
                let per_cpu = d
                    .class_totals
                    .get(&i, 0)
                    .with_context(|| format!("read CLASS_TOTALS[{i}]"))?;
                sum = per_cpu.iter().fold(sum, fold);
            }
        }
        Ok(Traffic {
            tcp: counters(sum.by_proto[usize::from(PROTO_TCP)]),
            udp: counters(sum.by_proto[usize::from(PROTO_UDP)]),
            other: counters(sum.by_proto[usize::from(PROTO_OTHER)]),
        })
    }

    fn gauges(&self, slot: Slot) -> anyhow::Result<(i64, i64)> {
        let g: ConnGauges = self
            .gauges
            .get(&slot.0, 0)
            .with_context(|| format!("read TARGET_CONNS[{}]", slot.0))?;
        Ok((g.tcp as i64, g.udp as i64))
    }

    fn untracked(&self) -> anyhow::Result<Untracked> {
        let per_cpu = self.untracked.get(&0, 0).context("read UNTRACKED")?;
        let traffic = per_cpu
            .iter()
            .fold(traffic::Counters::default(), |acc, c| acc.add(*c));
        let event = |i: u32| -> anyhow::Result<u64> {
            Ok(self
                .untracked_events
                .get(&i, 0)
                .context("read UNTRACKED_EVENTS")?
                .iter()
                .sum())
        };
        Ok(Untracked {
            traffic: counters(traffic),
            sockets: event(0)?,
            processes: event(1)?,
        })
    }

    fn moves(&mut self) -> Vec<Moved> {
        let Some(ring) = self.moves.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            let b: &[u8] = &item;
            let u64_at = |o: usize| {
                b.get(o..o + 8)
                    .map(|s| u64::from_ne_bytes(s.try_into().unwrap_or_default()))
            };
            let u32_at = |o: usize| {
                b.get(o..o + 4)
                    .map(|s| u32::from_ne_bytes(s.try_into().unwrap_or_default()))
            };
            // `procnetmon2_common::moves::MoveEvent`: ns, tgid, slot.
            if let (Some(ns), Some(tgid), Some(slot)) = (u64_at(0), u32_at(8), u32_at(12)) {
                out.push(Moved {
                    tgid,
                    slot: Slot(slot),
                    ns,
                });
            }
        }
        out
    }

    fn moves_lost(&self) -> u64 {
        self.untracked_events
            .get(&2, 0)
            .map_or(0, |v| v.iter().sum())
    }

    fn connections(&self) -> Vec<(u64, Connection)> {
        self.conns
            .iter()
            .filter_map(Result::ok)
            .map(|(cookie, r)| (cookie, connection(&r)))
            .collect()
    }

    fn cgroup_totals(&self) -> Vec<CgroupCount> {
        self.cgroup_totals
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| CgroupCount {
                cgroup_id: k.cgroup_id,
                proto: proto_of(u8::try_from(k.proto).unwrap_or(PROTO_OTHER)),
                class: u8::try_from(k.class)
                    .ok()
                    .filter(|c| *c != procnetmon2_common::dest::CLASS_NONE),
                counters: counters(
                    v.iter()
                        .fold(traffic::Counters::default(), |acc, c| acc.add(*c)),
                ),
            })
            .collect()
    }

    fn remove_cgroup_counts(&mut self, keys: &[super::CgroupCountKey]) {
        for &(cgroup_id, proto, class) in keys {
            let key = CgroupKey {
                cgroup_id,
                proto: u32::from(proto_index(proto)),
                class: u32::from(class.unwrap_or(procnetmon2_common::dest::CLASS_NONE)),
            };
            // ENOENT: that protocol never carried traffic in this cgroup.
            if let Err(e) = self.cgroup_totals.remove(&key) {
                let absent = matches!(&e, MapError::SyscallError(s)
                    if s.io_error.raw_os_error() == Some(libc::ENOENT));
                if !absent {
                    log::debug!("CGROUP_TOTALS: removing cgroup {cgroup_id}: {e}");
                }
            }
        }
    }

    fn target_pid_count(&self) -> u32 {
        self.target_pids.keys().filter(Result::is_ok).count() as u32
    }

    fn set_class_cidrs(&mut self, cidrs: &[(ipnet::IpNet, u8)]) -> anyhow::Result<()> {
        for (net, class) in cidrs {
            let (len, addr) = crate::classes::trie_key(net);
            self.dest
                .cidrs
                .insert(&Key::new(len, addr), u32::from(*class), 0)
                .with_context(|| format!("insert {net} into CLASS_CIDRS"))?;
        }
        Ok(())
    }

    fn destinations(&self) -> Vec<DestCount> {
        self.dest
            .totals
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| DestCount {
                slot: Slot(k.slot),
                addr: remote_addr(k.family, k.addr),
                class: (k.class != dest::CLASS_NONE).then_some(k.class),
                counters: counters(v),
            })
            .collect()
    }

    fn dest_other(&self, slot: Slot) -> anyhow::Result<DestOther> {
        let o = self
            .dest
            .other
            .get(&slot.0, 0)
            .with_context(|| format!("read DEST_OTHER[{}]", slot.0))?;
        Ok(DestOther {
            counters: counters(o.counters),
            hosts: o.hosts,
        })
    }

    fn class_totals(&self) -> Vec<ClassCount> {
        let d = &self.dest;
        let mut out = Vec::new();
        for slot in 0..d.slots {
            for class in 0..d.class_count {
                let Ok(per_cpu) = d.class_totals.get(&(slot * d.class_count + class), 0) else {
                    continue;
                };
                let mut sum = TargetTotals::default();
                for t in per_cpu.iter() {
                    for (a, b) in sum.by_proto.iter_mut().zip(t.by_proto) {
                        *a = a.add(b);
                    }
                }
                for (p, c) in sum.by_proto.into_iter().enumerate() {
                    if c != traffic::Counters::default() {
                        out.push(ClassCount {
                            slot: Slot(slot),
                            proto: proto_of(p as u8),
                            class: class as u8,
                            counters: counters(c),
                        });
                    }
                }
            }
        }
        out
    }

    fn dns_events(&mut self) -> Vec<DnsEvent> {
        let mut out = Vec::new();
        let mut lost = 0;
        for buf in &mut self.dest.dns {
            buf.for_each(|ev| match ev {
                PerfEvent::Sample { head, tail } => {
                    let bytes: Vec<u8> = head.iter().chain(tail).copied().collect();
                    if let Some(e) = dns_event(&bytes) {
                        out.push(e);
                    }
                }
                PerfEvent::Lost { count } => lost += count,
            });
        }
        if lost > 0 {
            self.dest.dns_lost += lost;
            log::warn!(
                "{lost} DNS records lost (perf buffer full); names may be missing for some hosts"
            );
        }
        out
    }

    fn dns_drops(&self, slot: Slot) -> DnsDrops {
        self.dest.dns_state.get(&slot.0, 0).map_or_else(
            |_| DnsDrops::default(),
            |v| DnsDrops {
                unmatched: v.iter().map(|s| s.unmatched).sum(),
                dropped: v.iter().map(|s| s.dropped).sum(),
            },
        )
    }

    fn node_destinations(&self) -> Vec<NodeDestCount> {
        self.dest
            .node_totals
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| NodeDestCount {
                cgroup_id: k.cgroup_id,
                addr: remote_addr(k.family, k.addr),
                class: (k.class != dest::CLASS_NONE).then_some(k.class),
                counters: counters(v),
            })
            .collect()
    }

    fn node_dest_other(&self) -> Vec<(u64, DestOther)> {
        self.dest
            .node_other
            .iter()
            .filter_map(Result::ok)
            .map(|(id, o)| {
                (
                    id,
                    DestOther {
                        counters: counters(o.counters),
                        hosts: o.hosts,
                    },
                )
            })
            .collect()
    }

    fn node_dest_lost(&self) -> Counters {
        self.dest.node_lost.get(&0, 0).map_or_else(
            |_| Counters::default(),
            |v| {
                counters(
                    v.iter()
                        .fold(traffic::Counters::default(), |a, c| a.add(*c)),
                )
            },
        )
    }

    fn remove_node_dests(&mut self, keys: &[super::NodeDestKey], cgroups: &[u64]) {
        // ENOENT is fine: a key read this tick may have no twin (nothing else deletes them).
        for k in keys {
            let _ = self.dest.node_totals.remove(&node_dest_key(k));
        }
        for id in cgroups {
            let _ = self.dest.node_other.remove(id);
        }
    }

    fn health(&self, slot: Slot) -> anyhow::Result<Health> {
        let h = self
            .health
            .targets
            .get(&slot.0, 0)
            .with_context(|| format!("read TARGET_HEALTH[{}]", slot.0))?;
        Ok(health_of(&h))
    }

    fn node_health(&self) -> Vec<(u64, Health)> {
        self.health
            .node
            .iter()
            .filter_map(Result::ok)
            .map(|(id, h)| (id, health_of(&h)))
            .collect()
    }

    fn remove_node_health(&mut self, cgroups: &[u64]) {
        // ENOENT: that cgroup never had a TCP event.
        for id in cgroups {
            let _ = self.health.node.remove(id);
        }
    }

    fn set_rtt_epoch(&mut self, epoch: u32) {
        if let Err(e) = self.health.epoch.set(0, epoch, 0) {
            log::debug!("RTT_EPOCH: {e}");
        }
    }

    fn handshakes(&self) -> Vec<PendingHandshake> {
        self.health
            .handshakes
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| pending_handshake(&k, &v))
            .collect()
    }

    fn forget_handshake(&mut self, h: &PendingHandshake) -> bool {
        // ENOENT: the accepted socket's callback deleted it first (it completed).
        self.health.handshakes.remove(&handshake_key(h)).is_ok()
    }

    fn health_lost(&self) -> u64 {
        self.health
            .lost
            .get(&0, 0)
            .map_or(0, |v| v.iter().copied().fold(0, u64::wrapping_add))
    }
}

#[cfg(test)]
mod tests {
    use object::{Object as _, ObjectSection as _};

    /// The loader is given no kernel BTF (`.btf(None)`), which is only right while the object
    /// asks for no CO-RE relocation: the `core_relo_len` of its `.BTF.ext` header is 0. A
    /// program that starts using CO-RE fails here, not silently at run time.
    #[test]
    fn object_has_no_core_relocations() {
        let file = object::File::parse(super::OBJECT).expect("parse the eBPF object");
        let Some(ext) = file.section_by_name(".BTF.ext") else {
            return; // no .BTF.ext: no relocations at all
        };
        let data = ext.data().expect(".BTF.ext data");
        let u32_at = |off: usize| u32::from_le_bytes(data[off..off + 4].try_into().expect("u32"));
        let hdr_len = u32_at(4) as usize;
        // btf_ext_header: magic, version, flags, hdr_len, func_info off/len, line_info
        // off/len, then core_relo off/len (present when hdr_len covers them).
        if hdr_len < 32 {
            return;
        }
        assert_eq!(
            u32_at(28),
            0,
            "CO-RE relocations in the object: pass the kernel BTF"
        );
    }
}

#[cfg(test)]
mod map_size_tests {
    use procnetmon2_common::dest::MAX_DNS_PENDING;

    use procnetmon2_common::health::RTT_SEEN_SLOTS;

    use super::{MAX_NODE_HEALTH, MAX_TARGET_PIDS, MapSizes, knobs};
    use crate::kernel::{DestKnobs, Knobs};

    /// Each run gets the big preallocated maps it uses, and one entry of the others.
    #[test]
    fn maps_are_sized_by_what_the_run_uses() {
        let pids = Knobs {
            pid_targets: true,
            dest: DestKnobs {
                slots: 2,
                ..DestKnobs::default()
            },
            ..Knobs::default()
        };
        let pids_dns = Knobs {
            dest: DestKnobs {
                dns: true,
                destinations: true,
                ..pids.dest
            },
            ..pids
        };
        let all_i_classes = Knobs {
            all: true,
            iface_filter: true,
            dest: DestKnobs {
                classes: true,
                class_count: 5,
                ..DestKnobs::default()
            },
            ..Knobs::default()
        };
        let cgroups_with_classes = Knobs {
            cgroup_path: true,
            dest: DestKnobs {
                classes: true,
                class_count: 5,
                slots: 3,
                ..DestKnobs::default()
            },
            ..Knobs::default()
        };
        // One entry of everything, no classes: what a map the run does not use gets.
        let one = MapSizes {
            class_count: 0,
            class_totals: 1,
            cgroup_totals: 1,
            ifaces: 1,
            target_totals: 1,
            target_pids: 1,
            node_health: 1,
            dns_pending: 1,
            rtt_seen: 1,
        };
        let cases = [
            (
                pids,
                MapSizes {
                    target_totals: 2,
                    target_pids: MAX_TARGET_PIDS,
                    ..one
                },
            ),
            (
                pids_dns,
                MapSizes {
                    target_totals: 2,
                    target_pids: MAX_TARGET_PIDS,
                    dns_pending: MAX_DNS_PENDING,
                    ..one
                },
            ),
            (
                all_i_classes,
                MapSizes {
                    class_count: 5,
                    cgroup_totals: knobs::cgroup_key_capacity(5),
                    ifaces: knobs::MAX_IFACES,
                    node_health: MAX_NODE_HEALTH,
                    rtt_seen: 2 * RTT_SEEN_SLOTS / 8,
                    ..one
                },
            ),
            (
                cgroups_with_classes,
                MapSizes {
                    class_count: 5,
                    class_totals: 15,
                    target_totals: 3,
                    rtt_seen: 2 * RTT_SEEN_SLOTS / 8,
                    ..one
                },
            ),
        ];
        for (k, want) in cases {
            assert_eq!(MapSizes::for_knobs(&k), want, "{k:?}");
        }
    }
}
