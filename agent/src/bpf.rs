//! The kernel side seen from user space: load the object, attach the programs to cgroups,
//! and typed access to the maps. The only module that uses `aya`.
//!
//! Links are owned by the [`Ebpf`] value: dropping [`Probes`] detaches every program, on
//! success, on error and on unwinding alike.

use std::{
    fs::File,
    os::fd::{AsFd as _, OwnedFd},
};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray, SkStorage},
    programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock},
};
use procnetmon2_common::{
    sock::SockOwner,
    target::MAX_TARGETS,
    traffic::{Counters, TargetTotals},
};

/// Program names, as the `pnm_*` functions in ebpf/src/main.rs.
const PROG_INGRESS: &str = "pnm_ingress";
const PROG_EGRESS: &str = "pnm_egress";
const PROG_SOCK_CREATE: &str = "pnm_sock_create";
/// Map names, as the statics in ebpf/src/maps.rs.
const MAP_SOCK_OWNER: &str = "SOCK_OWNER";
const MAP_TARGET_PIDS: &str = "TARGET_PIDS";
const MAP_TARGET_TOTALS: &str = "TARGET_TOTALS";
const MAP_UNTRACKED: &str = "UNTRACKED";

/// The loaded programs and their maps.
pub struct Probes {
    ebpf: Ebpf,
    owner: SkStorage<MapData, SockOwner>,
    target_pids: HashMap<MapData, u32, u32>,
    totals: PerCpuArray<MapData, TargetTotals>,
    untracked: PerCpuArray<MapData, Counters>,
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

fn take<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &str,
) -> anyhow::Result<T> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
    T::try_from(map).with_context(|| format!("map {name}"))
}

impl Probes {
    /// Loads the object and every program into the kernel (nothing is attached yet).
    pub fn load() -> anyhow::Result<Self> {
        bump_memlock();
        let mut ebpf = Ebpf::load(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/procnetmon2")))
            .context("load the eBPF object (needs Linux >= 5.11 with BTF, and CAP_BPF + CAP_NET_ADMIN or root)")?;
        for name in [PROG_INGRESS, PROG_EGRESS] {
            let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
            prog.load()
                .with_context(|| format!("load {name} (cgroup_skb, Linux >= 5.7)"))?;
        }
        let prog: &mut CgroupSock = program(&mut ebpf, PROG_SOCK_CREATE)?;
        prog.load().with_context(|| {
            format!("load {PROG_SOCK_CREATE} (cgroup/sock_create, Linux >= 5.11)")
        })?;
        let owner = take(&mut ebpf, MAP_SOCK_OWNER)?;
        let target_pids = take(&mut ebpf, MAP_TARGET_PIDS)?;
        let totals = take(&mut ebpf, MAP_TARGET_TOTALS)?;
        let untracked = take(&mut ebpf, MAP_UNTRACKED)?;
        Ok(Self {
            ebpf,
            owner,
            target_pids,
            totals,
            untracked,
        })
    }

    /// Declares `tgid` a member of target `slot`: sockets it creates from now on are stamped.
    pub fn add_target_pid(&mut self, tgid: u32, slot: u32) -> anyhow::Result<()> {
        anyhow::ensure!(slot < MAX_TARGETS, "at most {MAX_TARGETS} targets");
        self.target_pids
            .insert(tgid, slot, 0)
            .with_context(|| format!("add PID {tgid} to TARGET_PIDS"))
    }

    /// Attaches the socket-creation hook to `cgroup` (and so to its whole subtree).
    /// Call before [`Self::attach_counters`] and before scanning existing sockets, so no socket
    /// created in between goes unstamped.
    pub fn attach_sock_hooks(&mut self, cgroup: &File) -> anyhow::Result<()> {
        let prog: &mut CgroupSock = program(&mut self.ebpf, PROG_SOCK_CREATE)?;
        prog.attach(cgroup.as_fd(), CgroupAttachMode::Single)
            .with_context(|| format!("attach {PROG_SOCK_CREATE}"))?;
        Ok(())
    }

    /// Attaches the ingress and egress counters to `cgroup`.
    ///
    /// Links, not legacy attachments: several programs stack on one cgroup whatever else is
    /// attached there (`AllowMultiple` is implied by links; passing it fails with EINVAL).
    pub fn attach_counters(&mut self, cgroup: &File) -> anyhow::Result<()> {
        for (name, kind) in [
            (PROG_INGRESS, CgroupSkbAttachType::Ingress),
            (PROG_EGRESS, CgroupSkbAttachType::Egress),
        ] {
            let prog: &mut CgroupSkb = program(&mut self.ebpf, name)?;
            prog.attach(cgroup.as_fd(), kind, CgroupAttachMode::Single)
                .with_context(|| format!("attach {name}"))?;
        }
        Ok(())
    }

    /// Stamps the owner of an existing socket, through a descriptor copied from its process.
    pub fn stamp_socket(&mut self, sock: &OwnedFd, owner: SockOwner) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd as _;
        self.owner
            .insert(&sock.as_raw_fd(), owner, 0)
            .context("stamp socket owner")
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

    /// Traffic of target sockets that could not be charged to a target.
    pub fn untracked(&self) -> anyhow::Result<Counters> {
        let per_cpu = self.untracked.get(&0, 0).context("read UNTRACKED")?;
        Ok(per_cpu
            .iter()
            .fold(Counters::default(), |acc, c| acc.add(*c)))
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
