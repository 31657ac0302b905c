//! Helpers shared by the hooks: knobs, atomics, the per-socket state, the connection gauge
//! state machine, and `--details` records.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_or, atomic_xadd},
};

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use procnetmon2_common::{
    conn::ConnRecord,
    sock::{
        COUNT_ACTIVE, COUNT_DONE, COUNT_NOT_YET, FLAG_ESTABLISHED, FLAG_IFACE_OK, FLAG_UDP_ACTIVE,
        PROTO_TCP, PROTO_UDP, SockStats,
    },
};

use crate::maps::{CONNS, SOCK_OWNER, SOCK_STATS, TARGET_CONNS};

/// Verdict of cgroup_skb, cgroup/sock and cgroup sock_addr programs: allow. A monitor never
/// drops a packet or refuses a socket, whatever fails inside it.
pub const ALLOW: i32 = 1;

/// Knob (set by the agent at load): keep `CONNS` records (`--details`).
#[unsafe(no_mangle)]
static PNM_DETAILS: u8 = 0;
/// Knob: count only packets through the interfaces in `IFACES` (`-i`).
#[unsafe(no_mangle)]
static PNM_IFACE_FILTER: u8 = 0;

/// Knob: follow forks of target processes.
#[unsafe(no_mangle)]
static PNM_CHILDREN: u8 = 0;
/// Knob: `task_struct.pid` offset in the running kernel (from its BTF; no CO-RE in aya-ebpf).
#[unsafe(no_mangle)]
static PNM_TASK_PID_OFF: u32 = 0;
/// Knob: `task_struct.tgid` offset.
#[unsafe(no_mangle)]
static PNM_TASK_TGID_OFF: u32 = 0;
/// Knob: whole cgroups are targets (`CGROUP_TARGETS` has entries).
#[unsafe(no_mangle)]
static PNM_CGROUP_TARGETS: u8 = 0;

/// Knob: node-wide accounting by cgroup (`--all`).
#[unsafe(no_mangle)]
static PNM_ALL: u8 = 0;

#[inline(always)]
pub fn all_on() -> bool {
    // SAFETY: read-only global.
    unsafe { core::ptr::read_volatile(&raw const PNM_ALL) != 0 }
}

#[inline(always)]
pub fn children_on() -> bool {
    // SAFETY: read-only global.
    unsafe { core::ptr::read_volatile(&raw const PNM_CHILDREN) != 0 }
}

#[inline(always)]
pub fn cgroup_targets_on() -> bool {
    // SAFETY: read-only global.
    unsafe { core::ptr::read_volatile(&raw const PNM_CGROUP_TARGETS) != 0 }
}

/// (`pid`, `tgid`) offsets in `task_struct`.
#[inline(always)]
pub fn task_offsets() -> (u32, u32) {
    // SAFETY: read-only globals.
    unsafe {
        (
            core::ptr::read_volatile(&raw const PNM_TASK_PID_OFF),
            core::ptr::read_volatile(&raw const PNM_TASK_TGID_OFF),
        )
    }
}

#[inline(always)]
pub fn details_on() -> bool {
    // SAFETY: a read-only global; volatile so the compiler keeps the load the loader patches.
    unsafe { core::ptr::read_volatile(&raw const PNM_DETAILS) != 0 }
}

#[inline(always)]
pub fn filter_on() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const PNM_IFACE_FILTER) != 0 }
}

/// Lock-free add that cannot lose an update to another CPU, or to a softirq interrupting this
/// program on the same CPU (a per-CPU `+=` is a load and a store, and ingress softirqs can
/// preempt an egress program running in process context).
///
/// `AtomicU64::fetch_add` does not exist for bpfel-unknown-none; the intrinsic with its result
/// unused compiles to `BPF_ATOMIC | BPF_ADD`.
#[inline(always)]
pub fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: callers pass pointers into map values the verifier proved valid and aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

#[inline(always)]
fn set_flags(st: *mut SockStats, bits: u64) {
    // SAFETY: `st` is a live storage value.
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*st).flags, bits) };
}

/// Compare-and-swap on `counted` (BPF_CMPXCHG, Linux 5.12).
#[inline(always)]
fn cas_counted(st: *mut SockStats, old: u64, new: u64) -> bool {
    // SAFETY: `st` is a live storage value.
    unsafe {
        atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &raw mut (*st).counted,
            old,
            new,
        )
        .1
    }
}

/// Adds `delta` (wrapping: `u64::MAX` is −1) to the gauge of `proto` for `slot`.
#[inline(always)]
fn gauge(slot: u32, proto: u8, delta: u64) {
    if let Some(g) = TARGET_CONNS.get_ptr_mut(slot) {
        // SAFETY: `g` points into the array value for `slot`.
        unsafe {
            match proto {
                PROTO_TCP => atomic_add(&raw mut (*g).tcp, delta),
                PROTO_UDP => atomic_add(&raw mut (*g).udp, delta),
                _ => {}
            }
        }
    }
}

/// The state of a target's socket, created from its owner stamp on first use; null when the
/// socket is not a target's (no owner) or the kernel cannot allocate.
#[inline(always)]
pub fn stats_of(sk: *mut c_void) -> *mut SockStats {
    let st = SOCK_STATS.get(sk);
    if !st.is_null() {
        return st;
    }
    let owner = SOCK_OWNER.get(sk);
    if owner.is_null() {
        return st;
    }
    // SAFETY: non-null storage pointer from the helper.
    let o = unsafe { *owner };
    let init = SockStats {
        slot: o.slot,
        proto: o.proto,
        family: o.family,
        tgid: o.tgid,
        // Without an interface filter every socket qualifies from the start.
        flags: if filter_on() { 0 } else { FLAG_IFACE_OK },
        ..SockStats::default()
    };
    SOCK_STATS.get_or_create(sk, &init)
}

/// Enters the socket in its target's connection gauge once it qualifies: TCP established or
/// UDP bound/connected, and (with `-i`) seen on a chosen interface. The compare-and-swap makes
/// racing hooks (ingress runs without the socket lock) count it exactly once.
#[inline(always)]
pub fn maybe_count(st: *mut SockStats) {
    // SAFETY: `st` is a live storage value.
    let (flags, counted, proto, slot) =
        unsafe { ((*st).flags, (*st).counted, (*st).proto, (*st).slot) };
    if counted != COUNT_NOT_YET || flags & FLAG_IFACE_OK == 0 {
        return;
    }
    let ready = match proto {
        PROTO_TCP => flags & FLAG_ESTABLISHED != 0,
        PROTO_UDP => flags & FLAG_UDP_ACTIVE != 0,
        _ => false,
    };
    if ready && cas_counted(st, COUNT_NOT_YET, COUNT_ACTIVE) {
        gauge(slot, proto, 1);
    }
}

/// Takes the socket out of the gauge for good (closed, or TCP left ESTABLISHED).
#[inline(always)]
pub fn uncount(st: *mut SockStats) {
    // SAFETY: `st` is a live storage value.
    let (proto, slot) = unsafe { ((*st).proto, (*st).slot) };
    if cas_counted(st, COUNT_ACTIVE, COUNT_DONE) {
        gauge(slot, proto, u64::MAX);
    } else {
        cas_counted(st, COUNT_NOT_YET, COUNT_DONE);
    }
}

/// Marks flags on the socket, then re-evaluates its gauge entry.
#[inline(always)]
pub fn mark(st: *mut SockStats, bits: u64) {
    // SAFETY: `st` is a live storage value.
    if unsafe { (*st).flags } & bits != bits {
        set_flags(st, bits);
    }
    maybe_count(st);
}

/// CLOCK_MONOTONIC nanoseconds.
#[inline(always)]
pub fn now_ns() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The `--details` record of socket `cookie`, created from `st` (state `state`) when absent
/// and the socket is not done (after a close the agent deletes the record it has shown; the
/// tail packets and state changes of a closed socket must not bring it back).
/// Null when absent and not created, or when the map is full.
#[inline(always)]
pub fn record_of(cookie: u64, st: *const SockStats, state: u8) -> *mut ConnRecord {
    if let Some(r) = CONNS.get_ptr_mut(cookie) {
        return r;
    }
    // SAFETY: `st` is a live storage value.
    let s = unsafe { *st };
    if s.counted == COUNT_DONE {
        return core::ptr::null_mut();
    }
    let init = ConnRecord {
        open_ns: now_ns(),
        tgid: s.tgid,
        slot: s.slot,
        proto: s.proto,
        family: s.family,
        state,
        iface_ok: u8::from(s.flags & FLAG_IFACE_OK != 0),
        ..ConnRecord::default()
    };
    // BPF_NOEXIST: if another CPU created it meanwhile, keep theirs.
    let _ = CONNS.insert(cookie, init, 1);
    CONNS.get_ptr_mut(cookie).unwrap_or(core::ptr::null_mut())
}

/// Copies an IPv6 address out of a program context word by word. A plain array copy
/// becomes a byte-wise memcpy through a moving context pointer, which the verifier refuses:
/// "dereference of modified ctx ptr R5 off=131 disallowed".
#[inline(always)]
pub fn copy_ip6(dst: &mut [u32; 4], src: *const [u32; 4]) {
    let src = src.cast::<u32>();
    // SAFETY: `src` points at four u32 context fields; each is read at its fixed offset.
    unsafe {
        dst[0] = core::ptr::read_volatile(src);
        dst[1] = core::ptr::read_volatile(src.add(1));
        dst[2] = core::ptr::read_volatile(src.add(2));
        dst[3] = core::ptr::read_volatile(src.add(3));
    }
}
