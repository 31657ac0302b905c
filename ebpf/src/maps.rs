//! Every map of the procnetmon2 programs. The agent names them in `agent/src/bpf.rs`.
//!
//! All maps are BTF-defined (`.maps` section). The socket storages are declared by hand:
//! aya-ebpf 0.2.1's `SkStorage` fixes its flags to `BPF_F_NO_PREALLOC` and only takes a
//! `SockAddrContext`, while `SOCK_STATE` needs `BPF_F_CLONE` and every hook passes a socket.

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{
        BPF_F_NO_PREALLOC,
        bpf_map_type::{BPF_MAP_TYPE_CGROUP_STORAGE, BPF_MAP_TYPE_SK_STORAGE},
    },
    btf_maps::{
        Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, PerfEventArray, RingBuf,
    },
    helpers::generated::{bpf_get_local_storage, bpf_sk_storage_get},
};
use procnetmon2_common::{
    conn::{ConnGauges, ConnRecord, MAX_CONNS},
    dest::{
        DestKey, DestOther, DnsPendingKey, DnsState, MAX_CIDRS, MAX_DESTS, MAX_DNS_PENDING,
        MAX_NODE_DEST_CGROUPS, MAX_NODE_DESTS, NodeDestKey,
    },
    health::{
        Handoff, Handshake, HandshakeKey, Health, MAX_HANDSHAKES, MAX_NODE_HEALTH, NodeSock,
        RTT_SEEN_SLOTS,
    },
    knobs::{CgroupKey, IfaceKey, MAX_CGROUP_KEYS, MAX_IFACES, MAX_NEW_IFACES},
    moves::{MOVES_RING_BYTES, MoveEvent},
    sock::SockState,
    target::{MAX_TARGET_PIDS, MAX_TARGETS},
    traffic::{Counters, TargetTotals},
};

/// `BPF_F_CLONE` (include/uapi/linux/bpf.h): copy the storage to sockets cloned from this one,
/// that is, to every connection a listener accepts. Missing from aya-ebpf 0.2.1's bindings.
const BPF_F_CLONE: usize = 1 << 9;
/// `BPF_SK_STORAGE_GET_F_CREATE`.
const F_CREATE: u64 = 1;

/// A socket-local storage map definition (`BPF_MAP_TYPE_SK_STORAGE`, key `i32` = socket fd
/// from user space, `max_entries` 0: storage lives and dies with its socket, so there is no
/// fixed cap on live sockets). `FLAGS` must include `BPF_F_NO_PREALLOC`.
///
/// The field layout is the BTF map-definition convention: each field is a pointer to an
/// array whose length encodes the attribute; aya parses it from BTF and creates the map.
#[repr(C)]
pub struct SkStorageDef<V, const FLAGS: usize> {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const V,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; FLAGS],
}

// SAFETY: the fields are placeholders the loader replaces; nothing dereferences them.
unsafe impl<V, const FLAGS: usize> Sync for SkStorageDef<V, FLAGS> {}

impl<V, const FLAGS: usize> SkStorageDef<V, FLAGS> {
    const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
            map_flags: ptr::null(),
        }
    }

    /// The storage of `sk`, or null. `sk` is any socket pointer the verifier accepts for
    /// `bpf_sk_storage_get` in the calling program type (`__sk_buff.sk`, `bpf_sock *` ctx of
    /// cgroup/sock, `bpf_sock_ops.sk`); the helper itself returns null for non-full sockets
    /// (request and time-wait sockets).
    #[inline(always)]
    pub fn get(&self, sk: *mut c_void) -> *mut V {
        // SAFETY: `self` is a map definition in `.maps`; the helper validates `sk`.
        unsafe {
            bpf_sk_storage_get(
                ptr::from_ref(self).cast_mut().cast(),
                sk,
                ptr::null_mut(),
                0,
            )
        }
        .cast()
    }

    /// The storage of `sk`, created from `init` when absent; null when the kernel cannot
    /// allocate it.
    #[inline(always)]
    pub fn get_or_create(&self, sk: *mut c_void, init: &V) -> *mut V {
        // SAFETY: as in `get`; the kernel copies `init` and never writes through it.
        unsafe {
            bpf_sk_storage_get(
                ptr::from_ref(self).cast_mut().cast(),
                sk,
                ptr::from_ref(init).cast_mut().cast(),
                F_CREATE,
            )
        }
        .cast()
    }
}

/// A cgroup storage map definition (`BPF_MAP_TYPE_CGROUP_STORAGE`) keyed by the cgroup id
/// alone (`u64`): one value per cgroup where a program using the map is attached, shared by
/// all the programs attached there whatever their attach type (Linux 5.9+; the 16-byte key of
/// aya-ebpf's `CgroupStorage` gives each attach type its own value). `max_entries` must be 0:
/// the kernel creates an entry at attach time.
#[repr(C)]
pub struct CgroupStorageDef<V> {
    r#type: *const [i32; BPF_MAP_TYPE_CGROUP_STORAGE as usize],
    key: *const u64,
    value: *const V,
    max_entries: *const [i32; 0],
}

// SAFETY: the fields are placeholders the loader replaces; nothing dereferences them.
unsafe impl<V> Sync for CgroupStorageDef<V> {}

impl<V> CgroupStorageDef<V> {
    const fn new() -> Self {
        Self {
            r#type: ptr::null(),
            key: ptr::null(),
            value: ptr::null(),
            max_entries: ptr::null(),
        }
    }

    /// The value of the cgroup the running program is attached at. Never null: the verifier
    /// types the helper's result as a map value (the storage lives while the program is
    /// attached).
    #[inline(always)]
    pub fn get(&self) -> *mut V {
        // SAFETY: `self` is a map definition in `.maps`; flags must be 0.
        unsafe { bpf_get_local_storage(ptr::from_ref(self).cast_mut().cast(), 0) }.cast()
    }
}

/// socket → [`SockState`]; flags `NO_PREALLOC | CLONE`, so an accepted socket inherits its
/// listener's owner (its gauge state is reset at passive-established). Created by
/// `pnm_sock_create` for a target's new socket and by the agent for sockets that predate the
/// run; every other hook only looks it up, so a socket without one is not a target's.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCK_STATE")]
pub static SOCK_STATE: SkStorageDef<SockState, { BPF_F_NO_PREALLOC as usize | BPF_F_CLONE }> =
    SkStorageDef::new();

/// tgid → target slot, `MAX_TARGET_PIDS` entries. Written by the agent (targets) ; read by
/// `pnm_sock_create` to decide whether a new socket belongs to a target.
#[aya_ebpf::macros::btf_map]
pub static TARGET_PIDS: HashMap<u32, u32, { MAX_TARGET_PIDS as usize }> = HashMap::new();

/// slot → [`TargetTotals`] per CPU, `MAX_TARGETS` entries. Written by the skb programs at
/// packet time (so the tail of a close still counts); summed over CPUs by the agent.
#[aya_ebpf::macros::btf_map]
pub static TARGET_TOTALS: PerCpuArray<TargetTotals, { MAX_TARGETS as usize }> = PerCpuArray::new();

/// Index 0: traffic of target sockets that could not be charged to a target slot (slot out of
/// range), reported as "untracked" rather than dropped silently. Per CPU.
#[aya_ebpf::macros::btf_map]
pub static UNTRACKED: PerCpuArray<Counters, 1> = PerCpuArray::new();

/// Events that leave traffic unattributable, per CPU: index 0 = a target's new socket whose
/// owner stamp could not be allocated, 1 = a forked child that could not join its target
/// (`TARGET_PIDS` full), 2 = a target's move to another cgroup that `MOVES` had no room for
/// (the agent then finds it at its next tick). Reported, never silent.
#[aya_ebpf::macros::btf_map]
pub static UNTRACKED_EVENTS: PerCpuArray<u64, 3> = PerCpuArray::new();

/// A target's process moved to another cgroup (`pnm_cgroup_attach`): a ring buffer (one
/// pollable descriptor, 5.8+) the agent's loop wakes on, to attach there and stamp the
/// process's new sockets at once rather than at its next tick.
#[aya_ebpf::macros::btf_map]
pub static MOVES: RingBuf<MoveEvent, { MOVES_RING_BYTES as usize }> = RingBuf::new();

/// slot → [`ConnGauges`], `MAX_TARGETS` entries: connections open now. Shared (not per-CPU):
/// updated with atomic adds on connection events only, never per packet.
#[aya_ebpf::macros::btf_map]
pub static TARGET_CONNS: Array<ConnGauges, { MAX_TARGETS as usize }> = Array::new();

/// socket cookie → [`ConnRecord`], `MAX_CONNS` entries, allocated on demand
/// (`BPF_F_NO_PREALLOC`). Used only with `--details`: the agent walks it per report and
/// deletes records it has shown closed.
#[aya_ebpf::macros::btf_map]
pub static CONNS: HashMap<u64, ConnRecord, { MAX_CONNS as usize }, { BPF_F_NO_PREALLOC as usize }> =
    HashMap::new();

/// Interfaces when `-i` is given: (netns cookie, ifindex) → `IFACE_COUNT`, or with `--all`
/// also `IFACE_SKIP` for every other interface of each namespace the agent resolved (so an
/// absent key means "not resolved yet", see `NEW_IFACES`). Written by the agent (and
/// rewritten when an interface goes away or comes back); read per packet only when the
/// `PNM_IFACE_FILTER` knob is on.
#[aya_ebpf::macros::btf_map]
pub static IFACES: HashMap<IfaceKey, u8, { MAX_IFACES as usize }> = HashMap::new();

/// `--all -i`: interfaces packets passed before the agent resolved them (a pod's namespace or
/// its `eth0` appeared mid-run). Their bytes went to `UNTRACKED`; the agent reads these keys
/// each tick, resolves their namespaces and deletes them.
#[aya_ebpf::macros::btf_map]
pub static NEW_IFACES: HashMap<IfaceKey, u8, { MAX_NEW_IFACES as usize }> = HashMap::new();

/// `--all -i` on kernels whose cgroup_skb lacks `bpf_get_netns_cookie`: socket → its network
/// namespace cookie, for sockets that are no target's (a target's carries it in its owner).
/// Stamped by `pnm_sock_create` and by the agent for sockets that predate the run; cloned to
/// accepted sockets. Empty otherwise.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCK_NETNS")]
pub static SOCK_NETNS: SkStorageDef<u64, { BPF_F_NO_PREALLOC as usize | BPF_F_CLONE }> =
    SkStorageDef::new();

/// Whole cgroups as targets (spawn mode, `--cgroup`): cgroup id (kernfs inode) → slot. Every
/// socket created by a process anywhere in the subtree belongs to the slot. Written by the
/// agent; read by `pnm_sock_create` (not per packet).
#[aya_ebpf::macros::btf_map]
pub static CGROUP_TARGETS: HashMap<u64, u32, 1024> = HashMap::new();

/// `--all`: (cgroup id the socket was created in, protocol, destination class) → counters, per
/// CPU. Written per packet by the skb programs; summed and grouped into workloads by the agent.
/// With classes the agent sizes it at load (`knobs::cgroup_key_capacity`: keys × classes).
#[aya_ebpf::macros::btf_map]
pub static CGROUP_TOTALS: PerCpuHashMap<CgroupKey, Counters, { MAX_CGROUP_KEYS as usize }> =
    PerCpuHashMap::new();

// ---- Whole-cgroup targets without per-socket state (issue 28): see ebpf/src/whole.rs.

/// Each whole-cgroup target on the cgroup path: its attach point's storage holds the target's
/// slot, written once by the agent before any program that counts is attached there. The
/// counters stay in `TARGET_TOTALS` and `TARGET_CONNS`, which outlive the cgroup: a removed
/// cgroup's storage is freed with it, and with it anything counted there since the last read.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "CG_SLOT")]
pub static CG_SLOT: CgroupStorageDef<u32> = CgroupStorageDef::new();

/// slot → nonzero while the agent scans the target's existing sockets: then sock_ops gives a
/// connection established meanwhile a socket state, so that the scan (which stamps only
/// sockets without one) does not count it a second time. Written by the agent only.
#[aya_ebpf::macros::btf_map]
pub static CG_SCANNING: Array<u32, { MAX_TARGETS as usize }> = Array::new();

/// slot → nonzero once some socket of the target may carry a `SOCK_STATE` counted in its TCP
/// gauge (a connection that predates the run, stamped by the agent, or one made while it
/// scanned): only then do the target's programs look for it when a TCP socket leaves
/// ESTABLISHED or is released. Both the agent and the kernel only ever write 1 here, so no
/// write can undo another. Plain arrays: their lookups are inlined by the verifier.
#[aya_ebpf::macros::btf_map]
pub static CG_OLD: Array<u32, { MAX_TARGETS as usize }> = Array::new();

// ---- Where the bytes go (issue 17): see ebpf/src/dest.rs. Empty and unused unless the
// `PNM_CLASSES` / `PNM_DESTS` / `PNM_DNS` knobs are on.

/// CIDR → class index (LPM trie, IPv4 stored IPv4-mapped; see `common::dest`). Written by the
/// agent at load; looked up once per packet when `PNM_CLASSES` is on.
#[aya_ebpf::macros::btf_map]
pub static CLASS_CIDRS: LpmTrie<[u8; 16], u32, { MAX_CIDRS as usize }> = LpmTrie::new();

/// `slot * PNM_CLASS_COUNT + class` → counters per protocol, per CPU: an array, so a packet
/// pays an index computation, not a hash lookup (no cross-CPU cache-line traffic either). Its
/// size (targets × classes) is set by the agent at load; 1 entry when classes are off.
#[aya_ebpf::macros::btf_map]
pub static CLASS_TOTALS: PerCpuArray<TargetTotals, 1> = PerCpuArray::new();

/// (slot, remote address) → counters, shared, plain atomic adds (XADD, any kernel). Shared
/// rather than per CPU so the agent reads 10,000 hosts without a per-CPU fold and memory does
/// not grow with the CPU count. Allocated on first use; never deleted during a run (cumulative).
#[aya_ebpf::macros::btf_map]
pub static DEST_TOTALS: HashMap<
    DestKey,
    Counters,
    { MAX_DESTS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// slot → traffic past the per-target cap (the `other` bucket) and the target's host count.
#[aya_ebpf::macros::btf_map]
pub static DEST_OTHER: Array<DestOther, { MAX_TARGETS as usize }> = Array::new();

/// `--all` with classes: per CPU, a direct-mapped cache of IPv4 remote address → class for
/// sockets without storage (every packet of a non-target socket would otherwise walk the
/// trie). Entry: address (upper 32 bits), bit 8 valid, class (bits 0–7). 8 KiB per CPU.
#[aya_ebpf::macros::btf_map]
pub static CLASS_CACHE: PerCpuArray<u64, { CLASS_CACHE_SLOTS as usize }> = PerCpuArray::new();
/// Slots of `CLASS_CACHE` (a power of two: the hash keeps its top bits).
pub const CLASS_CACHE_SLOTS: u32 = 1024;

/// Index 0: class-counted traffic with no `CLASS_TOTALS` entry (a slot or class past the size
/// the agent gave it; reported, never silent).
#[aya_ebpf::macros::btf_map]
pub static CLASS_LOST: PerCpuArray<Counters, 1> = PerCpuArray::new();

/// `--all --destinations`: (cgroup, remote address) → counters, shared, plain atomic adds, for
/// every socket on the node. Cumulative; the agent deletes a cgroup's keys once the cgroup is
/// gone and its last counts are charged (as for `CGROUP_TOTALS`).
#[aya_ebpf::macros::btf_map]
pub static NODE_DEST_TOTALS: HashMap<
    NodeDestKey,
    Counters,
    { MAX_NODE_DESTS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// `--all --destinations`: cgroup id → traffic past that cgroup's cap (its `other`) and its
/// host count, so one chatty cgroup fills its own cap, never the others' room. Drained with
/// the cgroup's keys.
#[aya_ebpf::macros::btf_map]
pub static NODE_DEST_OTHER: HashMap<
    u64,
    DestOther,
    { MAX_NODE_DEST_CGROUPS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Index 0: `--all --destinations` traffic that found no `NODE_DEST_OTHER` entry (more
/// cgroups than it holds): still in its cgroup's totals, missing from its hosts; the agent
/// warns when it grows.
#[aya_ebpf::macros::btf_map]
pub static NODE_DEST_LOST: PerCpuArray<Counters, 1> = PerCpuArray::new();

/// DNS queries targets' sockets sent (UDP to port 53) and the answers to them: a
/// `DnsHeader`, then the packet from its IP header. Per-CPU perf buffers: the packet bytes
/// are copied from the skb by the helper (`BPF_F_CTXLEN_MASK`), which a ring buffer cannot.
#[aya_ebpf::macros::btf_map]
pub static DNS_EVENTS: PerfEventArray = PerfEventArray::new();

// ---- TCP health (issue 29): see ebpf/src/health.rs.

/// slot → [`Health`], shared, plain atomic adds (failures, retransmissions, RTT samples: rare
/// events, never per packet). Sized by the agent at load (the plan's slots).
#[aya_ebpf::macros::btf_map]
pub static TARGET_HEALTH: Array<Health, { MAX_TARGETS as usize }> = Array::new();

/// `--all`: cgroup id → [`Health`], shared, plain atomic adds; allocated on a cgroup's first
/// event; the agent deletes a removed cgroup's key once it has charged it (as for
/// `CGROUP_TOTALS`). One entry without `--all`.
#[aya_ebpf::macros::btf_map]
pub static NODE_HEALTH: HashMap<
    u64,
    Health,
    { MAX_NODE_HEALTH as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// socket → [`NodeSock`]: a TCP socket's cgroup, for the node path's sock_ops (which has no
/// cgroup helper), and whether its process released it while it was connecting. Created at
/// the node path's `cgroup/sock_create` (process context, where the cgroup is `current`'s),
/// cloned to accepted sockets; on the cgroup path only when a process releases a socket still
/// connecting. Empty without `--all` and the cgroup path.
#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCK_CGROUP")]
pub static SOCK_CGROUP: SkStorageDef<NodeSock, { BPF_F_NO_PREALLOC as usize | BPF_F_CLONE }> =
    SkStorageDef::new();

/// Index 0: the RTT sampling epoch, bumped by the agent once per tick. A socket (a slot of
/// `RTT_SEEN`) gives at most one RTT sample per epoch (its `rtt_epoch` differs from this). An array lookup the verifier
/// inlines, instead of a clock read per packet.
#[aya_ebpf::macros::btf_map]
pub static RTT_EPOCH: Array<u32, 1> = Array::new();

/// Per CPU: the listener whose packet the ingress programs passed last ([`Handoff`]): entry
/// `HANDOFF_TARGET` for the socket and cgroup paths, `HANDOFF_NODE` for the node path.
#[aya_ebpf::macros::btf_map]
pub static HANDOFF: PerCpuArray<Handoff, 2> = PerCpuArray::new();

/// The cgroup path's, then the node path's `RTT_SEEN_SLOTS` one-byte slots, eight per value:
/// the RTT epoch (its tag, see `health::sample_flow_rtt`) in which a packet of that slot of
/// the flow hash was last sampled. A plain array: its lookups are inlined by the verifier, no
/// helper call per packet.
#[aya_ebpf::macros::btf_map]
pub static RTT_SEEN: Array<u64, { 2 * RTT_SEEN_SLOTS as usize / 8 }> = Array::new();

/// Incoming handshakes in request mini-sockets: addresses → owner and start. Inserted when the
/// kernel makes the request (sock_ops `TIMEOUT_INIT` on a mini-socket), deleted by the accepted
/// socket's passive-established callback; what is left and gone from the kernel's tables
/// failed, which the agent resolves and deletes.
#[aya_ebpf::macros::btf_map]
pub static HANDSHAKES: HashMap<
    HandshakeKey,
    Handshake,
    { MAX_HANDSHAKES as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// A zeroed [`Health`], never written: where `NODE_HEALTH` inserts copy their initial value
/// from (a map value as the value argument keeps 272 bytes off the BPF stack).
#[aya_ebpf::macros::btf_map]
pub static HEALTH_ZERO: Array<Health, 1> = Array::new();

/// Index 0: TCP health events that could not be charged to a workload (`NODE_HEALTH` or
/// `HANDSHAKES` full, a socket's `SOCK_CGROUP` not allocated), per CPU; the agent warns when
/// it grows.
#[aya_ebpf::macros::btf_map]
pub static HEALTH_LOST: PerCpuArray<u64, 1> = PerCpuArray::new();
/// Queries in flight: (socket, server, transaction ID) → until when an answer may come. An
/// answer without its key is never handed up (counted as unmatched), so a flood of answers
/// nobody asked for costs the agent nothing. LRU: a target that asks more than it holds
/// pushes out its oldest queries, whose answers then count as unmatched. Sized at load (1
/// entry without DNS names).
#[aya_ebpf::macros::btf_map]
pub static DNS_PENDING: LruHashMap<DnsPendingKey, u64, { MAX_DNS_PENDING as usize }> =
    LruHashMap::new();

/// slot → [`DnsState`] per CPU: the target's budget of records handed up, and what was not
/// handed up (unmatched answers, dropped records). Per CPU: no atomics on the budget.
#[aya_ebpf::macros::btf_map]
pub static DNS_STATE: PerCpuArray<DnsState, { MAX_TARGETS as usize }> = PerCpuArray::new();
