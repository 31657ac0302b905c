//! The cgroup path's maps from user space (ebpf/src/whole.rs): `CG_TARGET`, a per-CPU cgroup
//! storage keyed by the cgroup id alone, and the per-slot flags `CG_SCANNING` and `CG_OLD`.
//!
//! aya 0.14 reads and writes cgroup storages only with the 16-byte key that gives each attach
//! type its own value; the shared `u64` key (one value for every program at the cgroup, Linux
//! 5.9+) needs the two `bpf(2)` calls made here.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, MapData};
use procnetmon2_common::{conn::ConnGauges, traffic::TargetTotals, whole::CgroupTarget};

use super::Slot;

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
/// `BPF_EXIST`: update only (the kernel made the entry when the first program attached).
const BPF_EXIST: u64 = 2;

/// The head of `union bpf_attr` for the map element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The cgroup path's targets and their maps.
pub struct WholeMaps {
    storage: MapData,
    scanning: Array<MapData, u32>,
    old: Array<MapData, u32>,
    /// Possible CPUs: a per-CPU value is one copy per possible CPU.
    cpus: usize,
    /// slot → its attach point's cgroup id.
    slots: BTreeMap<Slot, u64>,
}

impl WholeMaps {
    /// Wraps the loaded maps.
    pub fn new(
        storage: MapData,
        scanning: Array<MapData, u32>,
        old: Array<MapData, u32>,
    ) -> anyhow::Result<Self> {
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
        Ok(Self {
            storage,
            scanning,
            old,
            cpus,
            slots: BTreeMap::new(),
        })
    }

    /// Whether `slot` is counted here.
    pub fn has(&self, slot: Slot) -> bool {
        self.slots.contains_key(&slot)
    }

    /// Once the storage exists (the first program attached at `cgroup_id`), before any program
    /// that counts is attached: writes the slot into every CPU's copy (the write replaces the
    /// whole value) and, with `scanning`, raises `CG_SCANNING` for the slot.
    pub fn start(&mut self, cgroup_id: u64, slot: Slot, scanning: bool) -> anyhow::Result<()> {
        let value = CgroupTarget {
            slot: slot.0,
            ..CgroupTarget::default()
        };
        let values = vec![value; self.cpus];
        self.call(
            BPF_MAP_UPDATE_ELEM,
            cgroup_id,
            values.as_ptr() as u64,
            BPF_EXIST,
        )
        .with_context(|| format!("initialise the cgroup storage of cgroup {cgroup_id}"))?;
        self.scanning
            .set(slot.0, u32::from(scanning), 0)
            .context("set CG_SCANNING")?;
        self.slots.insert(slot, cgroup_id);
        Ok(())
    }

    /// The scan of `slot`'s existing sockets is over.
    pub fn end_scan(&mut self, slot: Slot) {
        if let Err(e) = self.scanning.set(slot.0, 0, 0) {
            log::warn!("clear CG_SCANNING[{}]: {e}", slot.0);
        }
    }

    /// Some socket of `slot` is about to carry a counted state (a TCP connection that predates
    /// the run): from now on its programs look for it. Set before the state is written, so no
    /// close between the two goes unseen.
    pub fn mark_old(&mut self, slot: Slot) -> anyhow::Result<()> {
        self.old.set(slot.0, 1, 0).context("set CG_OLD")
    }

    /// `slot`'s totals and gauges summed over the CPUs, or None if it is not counted here.
    pub fn read(&self, slot: Slot) -> Option<anyhow::Result<(TargetTotals, ConnGauges)>> {
        let id = *self.slots.get(&slot)?;
        Some(self.sum(id))
    }

    fn sum(&self, cgroup_id: u64) -> anyhow::Result<(TargetTotals, ConnGauges)> {
        let mut values = vec![CgroupTarget::default(); self.cpus];
        self.call(
            BPF_MAP_LOOKUP_ELEM,
            cgroup_id,
            values.as_mut_ptr() as u64,
            0,
        )
        .with_context(|| format!("read the cgroup storage of cgroup {cgroup_id}"))?;
        let mut totals = TargetTotals::default();
        let mut conns = ConnGauges::default();
        for v in &values {
            for (a, b) in totals.by_proto.iter_mut().zip(v.totals.by_proto) {
                *a = a.add(b);
            }
            conns.tcp = conns.tcp.wrapping_add(v.conns.tcp);
            conns.udp = conns.udp.wrapping_add(v.conns.udp);
        }
        Ok((totals, conns))
    }

    /// One map element command on `CG_TARGET` with key `cgroup_id`; `value` points at one
    /// `CgroupTarget` per possible CPU (120 bytes each: already a multiple of 8, as the
    /// kernel lays per-CPU values out).
    fn call(
        &self,
        cmd: libc::c_long,
        cgroup_id: u64,
        value: u64,
        flags: u64,
    ) -> std::io::Result<()> {
        let key = cgroup_id;
        let attr = ElemAttr {
            map_fd: self.storage.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const key) as u64,
            value,
            flags,
        };
        // SAFETY: bpf(2) with a valid attribute of the size passed; `key` and the value buffer
        // (one value per possible CPU, the size the kernel copies) outlive the call. Neither
        // nix nor rustix wraps bpf(2).
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &raw const attr,
                std::mem::size_of::<ElemAttr>(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
