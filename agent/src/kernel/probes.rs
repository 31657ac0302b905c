//! The kernel side seen from user space: load the object, attach the programs to cgroups,
//! and typed access to the maps. The only module that uses `aya`.
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
    maps::{Array, HashMap, MapData, MapError, PerCpuArray, PerCpuHashMap, SkStorage},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
        RawTracePoint, SockOps,
    },
};
use procnetmon2_common::{
    conn::{ConnGauges, ConnRecord},
    knobs::{self, CgroupKey, IfaceKey},
    sock::{SockOwner, SockStats},
    target::MAX_TARGETS,
    traffic::{Counters, TargetTotals},
};

/// Programs by kind, as the `pnm_*` functions in ebpf/src/main.rs.
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
/// Raw tracepoints: (program, tracepoint).
const TP_PROGS: [(&str, &str); 2] = [
    ("pnm_fork", "sched_process_fork"),
    ("pnm_exit", "sched_process_exit"),
];
/// Map names, as the statics in ebpf/src/maps.rs.
const MAP_SOCK_OWNER: &str = "SOCK_OWNER";
const MAP_SOCK_STATS: &str = "SOCK_STATS";
const MAP_TARGET_PIDS: &str = "TARGET_PIDS";
const MAP_TARGET_TOTALS: &str = "TARGET_TOTALS";
const MAP_TARGET_CONNS: &str = "TARGET_CONNS";
const MAP_UNTRACKED: &str = "UNTRACKED";
const MAP_UNTRACKED_EVENTS: &str = "UNTRACKED_EVENTS";
const MAP_CONNS: &str = "CONNS";
const MAP_IFACES: &str = "IFACES";
const MAP_CGROUP_TARGETS: &str = "CGROUP_TARGETS";
const MAP_CGROUP_TOTALS: &str = "CGROUP_TOTALS";

/// `BPF_NOEXIST`: create only.
const BPF_NOEXIST: u64 = 1;

/// Load-time switches.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knobs {
    /// Keep per-connection records (`--details`).
    pub details: bool,
    /// Count only the interfaces put in with [`Probes::allow_iface`] (`-i`).
    pub iface_filter: bool,
    /// Follow forks: children join their parent's target.
    pub children: bool,
    /// Whole cgroups are targets ([`Probes::add_cgroup_target`]).
    pub cgroup_targets: bool,
    /// Node-wide accounting by cgroup ([`Probes::cgroup_totals`]).
    pub all: bool,
}

/// The loaded programs and their maps.
pub struct Probes {
    ebpf: Ebpf,
    owner: SkStorage<MapData, SockOwner>,
    stats: SkStorage<MapData, SockStats>,
    target_pids: HashMap<MapData, u32, u32>,
    totals: PerCpuArray<MapData, TargetTotals>,
    gauges: Array<MapData, ConnGauges>,
    untracked: PerCpuArray<MapData, Counters>,
    untracked_events: PerCpuArray<MapData, u64>,
    conns: HashMap<MapData, u64, ConnRecord>,
    ifaces: HashMap<MapData, IfaceKey, u8>,
    cgroup_targets: HashMap<MapData, u64, u32>,
    cgroup_totals: PerCpuHashMap<MapData, CgroupKey, Counters>,
}

/// Raises RLIMIT_MEMLOCK for kernels that still charge BPF memory to it (< 5.11).
fn bump_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) } != 0 {
        // Newer kernels account BPF memory to the memory cgroup: not an error.
        log::debug!(
            "setrlimit(RLIMIT_MEMLOCK) failed: {}",
            std::io::Error::last_os_error()
        );
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
const MIN_KERNEL: &str = "needs Linux >= 5.12 with BTF, and root or CAP_BPF + CAP_NET_ADMIN";

impl Probes {
    /// Loads the object and every program into the kernel (nothing is attached yet).
    pub fn load(knobs: Knobs) -> anyhow::Result<Self> {
        bump_memlock();
        let details = u8::from(knobs.details);
        let filter = u8::from(knobs.iface_filter);
        let children = u8::from(knobs.children);
        let cgroups = u8::from(knobs.cgroup_targets);
        let all = u8::from(knobs.all);
        let (pid_off, tgid_off) = if knobs.children {
            crate::kernel::btf::task_pid_tgid_offsets()?
        } else {
            (0, 0)
        };
        let mut ebpf = EbpfLoader::new()
            .override_global(knobs::DETAILS, &details, true)
            .override_global(knobs::IFACE_FILTER, &filter, true)
            .override_global(knobs::CHILDREN, &children, true)
            .override_global(knobs::CGROUP_TARGETS, &cgroups, true)
            .override_global(knobs::ALL, &all, true)
            .override_global(knobs::TASK_PID_OFF, &pid_off, true)
            .override_global(knobs::TASK_TGID_OFF, &tgid_off, true)
            .load(aya::include_bytes_aligned!(concat!(
                env!("OUT_DIR"),
                "/procnetmon2"
            )))
            .with_context(|| format!("load the eBPF object ({MIN_KERNEL})"))?;
        for (name, _) in SKB_PROGS {
            let p: &mut CgroupSkb = program(&mut ebpf, name)?;
            p.load()
                .with_context(|| format!("load {name} (cgroup_skb; {MIN_KERNEL})"))?;
        }
        for name in SOCK_PROGS {
            let p: &mut CgroupSock = program(&mut ebpf, name)?;
            p.load()
                .with_context(|| format!("load {name} (cgroup/sock; {MIN_KERNEL})"))?;
        }
        for name in SOCK_ADDR_PROGS {
            let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            p.load()
                .with_context(|| format!("load {name} (cgroup/sock_addr; {MIN_KERNEL})"))?;
        }
        let p: &mut SockOps = program(&mut ebpf, SOCKOPS_PROG)?;
        p.load()
            .with_context(|| format!("load {SOCKOPS_PROG} (sock_ops; {MIN_KERNEL})"))?;
        if knobs.children {
            for (name, tp) in TP_PROGS {
                let p: &mut RawTracePoint = program(&mut ebpf, name)?;
                p.load()
                    .with_context(|| format!("load {name} (raw tracepoint; {MIN_KERNEL})"))?;
                p.attach(tp)
                    .with_context(|| format!("attach {name} to raw tracepoint {tp}"))?;
            }
        }
        Ok(Self {
            cgroup_targets: take(&mut ebpf, MAP_CGROUP_TARGETS)?,
            cgroup_totals: take(&mut ebpf, MAP_CGROUP_TOTALS)?,
            owner: take(&mut ebpf, MAP_SOCK_OWNER)?,
            stats: take(&mut ebpf, MAP_SOCK_STATS)?,
            target_pids: take(&mut ebpf, MAP_TARGET_PIDS)?,
            totals: take(&mut ebpf, MAP_TARGET_TOTALS)?,
            gauges: take(&mut ebpf, MAP_TARGET_CONNS)?,
            untracked: take(&mut ebpf, MAP_UNTRACKED)?,
            untracked_events: take(&mut ebpf, MAP_UNTRACKED_EVENTS)?,
            conns: take(&mut ebpf, MAP_CONNS)?,
            ifaces: take(&mut ebpf, MAP_IFACES)?,
            ebpf,
        })
    }

    /// Declares `tgid` a member of target `slot`: sockets it creates from now on are stamped.
    pub fn add_target_pid(&mut self, tgid: u32, slot: u32) -> anyhow::Result<()> {
        anyhow::ensure!(slot < MAX_TARGETS, "at most {MAX_TARGETS} targets");
        self.target_pids
            .insert(tgid, slot, 0)
            .with_context(|| format!("add PID {tgid} to TARGET_PIDS"))
    }

    /// Makes every process in cgroup `cgroup_id` (kernfs inode of its directory) and below it a
    /// member of target `slot` for the sockets it creates.
    pub fn add_cgroup_target(&mut self, cgroup_id: u64, slot: u32) -> anyhow::Result<()> {
        self.cgroup_targets
            .insert(cgroup_id, slot, 0)
            .context("insert CGROUP_TARGETS")
    }

    /// Entries in `TARGET_PIDS` (targets and their children), for the map-fill metric.
    pub fn target_pid_count(&self) -> u32 {
        self.target_pids.keys().filter(Result::is_ok).count() as u32
    }

    /// `--all`: counters per (cgroup id, protocol), summed over CPUs.
    pub fn cgroup_totals(&self) -> Vec<(CgroupKey, Counters)> {
        self.cgroup_totals
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.iter().fold(Counters::default(), |acc, c| acc.add(*c))))
            .collect()
    }

    /// Attaches the socket hooks (creation, release, bind, connect, sendmsg, sock_ops) to
    /// `cgroup` and so to its whole subtree. Call before [`Self::attach_counters`] and before
    /// scanning existing sockets, so no socket created in between goes unstamped.
    pub fn attach_sock_hooks(&mut self, cgroup: &File) -> anyhow::Result<()> {
        for name in SOCK_PROGS {
            let p: &mut CgroupSock = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .with_context(|| format!("attach {name}"))?;
        }
        for name in SOCK_ADDR_PROGS {
            let p: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .with_context(|| format!("attach {name}"))?;
        }
        let p: &mut SockOps = program(&mut self.ebpf, SOCKOPS_PROG)?;
        p.attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .with_context(|| format!("attach {SOCKOPS_PROG}"))?;
        Ok(())
    }

    /// Attaches the ingress and egress counters to `cgroup`.
    ///
    /// Links, not legacy attachments: several programs stack on one cgroup whatever else is
    /// attached there (`AllowMultiple` is implied by links; passing it fails with EINVAL).
    pub fn attach_counters(&mut self, cgroup: &File) -> anyhow::Result<()> {
        for (name, kind) in SKB_PROGS {
            let p: &mut CgroupSkb = program(&mut self.ebpf, name)?;
            p.attach(cgroup.as_fd(), kind, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name}"))?;
        }
        Ok(())
    }

    /// Stamps an existing socket, through a descriptor copied from its process: its state
    /// first (unless the kernel already made one), then its owner, so the kernel never builds
    /// a state of its own from the owner in between. Returns whether `stats` was installed.
    pub fn stamp_socket(
        &mut self,
        sock: &OwnedFd,
        owner: SockOwner,
        stats: SockStats,
    ) -> anyhow::Result<bool> {
        let fd = sock.as_raw_fd();
        let installed = match self.stats.insert(&fd, stats, BPF_NOEXIST) {
            Ok(()) => true,
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                false
            }
            Err(e) => return Err(e).context("set socket state"),
        };
        self.owner
            .insert(&fd, owner, 0)
            .context("stamp socket owner")?;
        Ok(installed)
    }

    /// Totals of target `slot`, summed over CPUs.
    pub fn totals(&self, slot: u32) -> anyhow::Result<TargetTotals> {
        let per_cpu = self
            .totals
            .get(&slot, 0)
            .with_context(|| format!("read TARGET_TOTALS[{slot}]"))?;
        Ok(per_cpu.iter().fold(TargetTotals::default(), |mut acc, t| {
            for (a, b) in acc.by_proto.iter_mut().zip(t.by_proto) {
                *a = a.add(b);
            }
            acc
        }))
    }

    /// Kernel-side connection gauges of `slot` (tcp, udp), as signed deltas.
    pub fn gauges(&self, slot: u32) -> anyhow::Result<(i64, i64)> {
        let g = self
            .gauges
            .get(&slot, 0)
            .with_context(|| format!("read TARGET_CONNS[{slot}]"))?;
        Ok((g.tcp as i64, g.udp as i64))
    }

    /// Traffic of target sockets that could not be charged to a target.
    pub fn untracked(&self) -> anyhow::Result<Counters> {
        let per_cpu = self.untracked.get(&0, 0).context("read UNTRACKED")?;
        Ok(per_cpu
            .iter()
            .fold(Counters::default(), |acc, c| acc.add(*c)))
    }

    /// (target sockets left unstamped, forked children left out), summed over CPUs.
    pub fn untracked_events(&self) -> anyhow::Result<(u64, u64)> {
        let sum = |i: u32| -> anyhow::Result<u64> {
            Ok(self
                .untracked_events
                .get(&i, 0)
                .context("read UNTRACKED_EVENTS")?
                .iter()
                .sum())
        };
        Ok((sum(0)?, sum(1)?))
    }

    /// Every `--details` record (cookie, record).
    pub fn connections(&self) -> Vec<(u64, ConnRecord)> {
        self.conns.iter().filter_map(Result::ok).collect()
    }

    /// Creates a `--details` record (for a socket that predates the run).
    pub fn put_connection(&mut self, cookie: u64, rec: ConnRecord) -> anyhow::Result<()> {
        match self.conns.insert(cookie, rec, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            Err(e) => Err(e).context("insert CONNS record"),
        }
    }

    /// Updates RTT and retransmits of a record (connections that predate the run).
    pub fn refresh_connection(&mut self, cookie: u64, srtt_us: u32, retrans: u32, state: u8) {
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

    /// Forgets a record the agent has shown closed.
    pub fn forget_connection(&mut self, cookie: u64) {
        let _ = self.conns.remove(&cookie);
    }

    /// Counts traffic through interface `key` (with the interface filter on).
    pub fn allow_iface(&mut self, key: IfaceKey) -> anyhow::Result<()> {
        self.ifaces.insert(key, 1, 0).context("insert IFACES")
    }

    /// Stops counting traffic through interface `key`.
    pub fn deny_iface(&mut self, key: &IfaceKey) {
        let _ = self.ifaces.remove(key);
    }
}
