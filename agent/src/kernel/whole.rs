//! The cgroup path's maps from user space (ebpf/src/whole.rs): `CG_SLOT`, a cgroup storage
//! keyed by the cgroup id alone that holds each target's slot, and the per-slot flags
//! `CG_SCANNING` and `CG_OLD`. Its counters are the socket path's (`TARGET_TOTALS`,
//! `TARGET_CONNS`), read as theirs.
//!
//! aya 0.14 writes cgroup storages only with the 16-byte key that gives each attach type its
//! own value; the shared `u64` key (one value for every program at the cgroup, Linux 5.9+)
//! needs the one `bpf(2)` call made here.

use std::{
    collections::BTreeSet,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::Context as _;
use aya::maps::{Array, MapData};

use super::Slot;

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
    /// The slots counted here.
    slots: BTreeSet<Slot>,
}

impl WholeMaps {
    /// Wraps the loaded maps.
    pub fn new(storage: MapData, scanning: Array<MapData, u32>, old: Array<MapData, u32>) -> Self {
        Self {
            storage,
            scanning,
            old,
            slots: BTreeSet::new(),
        }
    }

    /// Whether `slot` is counted here.
    pub fn has(&self, slot: Slot) -> bool {
        self.slots.contains(&slot)
    }

    /// Once the storage exists (the first program attached at `cgroup_id`), before any program
    /// that counts is attached: writes the slot into it and, with `scanning`, raises
    /// `CG_SCANNING` for the slot.
    pub fn start(&mut self, cgroup_id: u64, slot: Slot, scanning: bool) -> anyhow::Result<()> {
        self.write_slot(cgroup_id, slot.0).with_context(|| {
            format!("write the slot into the cgroup storage of cgroup {cgroup_id}")
        })?;
        self.scanning
            .set(slot.0, u32::from(scanning), 0)
            .context("set CG_SCANNING")?;
        self.slots.insert(slot);
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

    /// `bpf_map_update_elem(CG_SLOT, &cgroup_id, &slot, BPF_EXIST)`.
    fn write_slot(&self, cgroup_id: u64, slot: u32) -> std::io::Result<()> {
        let attr = ElemAttr {
            map_fd: self.storage.fd().as_fd().as_raw_fd() as u32,
            _pad: 0,
            key: (&raw const cgroup_id) as u64,
            value: (&raw const slot) as u64,
            flags: BPF_EXIST,
        };
        // SAFETY: a valid BPF_MAP_UPDATE_ELEM attribute; the key and the 4-byte value (the
        // map's value size) outlive the call.
        unsafe { super::features::sys_bpf(BPF_MAP_UPDATE_ELEM, &attr) }?;
        Ok(())
    }
}
