//! Helpers shared by the hooks: knobs, atomics and per-CPU adds, the per-socket state, the
//! connection gauge state machine, and `--details` records.

use core::{
    ffi::c_void,
    intrinsics::{AtomicOrdering, atomic_xadd},
};

use aya_ebpf::helpers::generated::{bpf_ktime_get_ns, bpf_spin_lock, bpf_spin_unlock};
use procnetmon2_common::{
    conn::ConnRecord,
    sock::{
        COUNT_ACTIVE, COUNT_DONE, COUNT_NOT_YET, FLAG_ESTABLISHED, FLAG_IFACE_OK, FLAG_UDP_ACTIVE,
        PROTO_TCP, PROTO_UDP, SockState,
    },
    traffic::Counters,
};

use crate::maps::{CONNS, SOCK_STATE, TARGET_CONNS};

/// Verdict of cgroup_skb, cgroup/sock and cgroup sock_addr programs: allow. A monitor never
/// drops a packet or refuses a socket, whatever fails inside it.
pub const ALLOW: i32 = 1;

/// Knob (set by the agent at load): keep `CONNS` records (`--details`).
#[unsafe(no_mangle)]
static PNM_DETAILS: u8 = 0;
/// Knob: count only packets through the interfaces in `IFACES` (`-i`).
#[unsafe(no_mangle)]
static PNM_IFACE_FILTER: u8 = 0;

/// Knob: cgroup_skb programs may call `bpf_get_netns_cookie` (probed by the agent).
#[unsafe(no_mangle)]
static PNM_NETNS_HELPER: u8 = 0;

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

/// Knob: processes are targets (`TARGET_PIDS` has entries: `-p`, `-n`, and their children).
#[unsafe(no_mangle)]
static PNM_PID_TARGETS: u8 = 0;

#[inline(always)]
pub fn pid_targets_on() -> bool {
    // SAFETY: read-only global.
    unsafe { core::ptr::read_volatile(&raw const PNM_PID_TARGETS) != 0 }
}

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

/// With `-i`: the kernel lets cgroup_skb ask for the packet's namespace (~6.15); otherwise
/// the filter uses the namespace stamped on the socket. Constant per load, so the verifier
/// never walks the branch with a helper this kernel lacks.
#[inline(always)]
pub fn netns_helper_on() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const PNM_NETNS_HELPER) != 0 }
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
/// unused compiles to `BPF_ATOMIC | BPF_ADD`, the plain `lock xadd` every kernel has (the
/// fetching atomics, or, xchg and cmpxchg need 5.12: none is used).
#[inline(always)]
pub fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: callers pass pointers into map values the verifier proved valid and aligned.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

/// Adds one skb to counters shared by all CPUs (`CONNS` records, `DEST_TOTALS`,
/// `DEST_OTHER`): any CPU may charge the same value at once, so both directions add
/// atomically.
#[inline(always)]
pub fn add_shared(c: *mut Counters, ingress: bool, len: u64) {
    // SAFETY: `c` points into a map value (checked non-null by the caller).
    unsafe {
        if ingress {
            atomic_add(&raw mut (*c).bytes_in, len);
            atomic_add(&raw mut (*c).pkts_in, 1);
        } else {
            atomic_add(&raw mut (*c).bytes_out, len);
            atomic_add(&raw mut (*c).pkts_out, 1);
        }
    }
}

/// Adds one skb to per-CPU counters (`TARGET_TOTALS`, `CLASS_TOTALS`, `CGROUP_TOTALS`,
/// `UNTRACKED`): a plain add on ingress, an atomic one on egress.
///
/// Ingress programs run with bottom halves off (softirq, or a caller that disabled them), and
/// bottom halves never nest on a CPU: no other writer of the `_in` fields can interrupt this
/// one, and no other CPU writes this CPU's value, so a load and a store lose nothing. Egress
/// also runs in process context (`sendmsg`), where a softirq on the same CPU can send for
/// another socket of the same target (an ACK, a retransmit) between the load and the store:
/// there the add stays atomic (XADD, uncontended on a per-CPU line, every kernel).
#[inline(always)]
pub fn add_percpu(c: *mut Counters, ingress: bool, len: u64) {
    // SAFETY: `c` points into this CPU's value of a per-CPU map (checked non-null by the
    // caller); see above for why the ingress fields need no atomics.
    unsafe {
        if ingress {
            (*c).bytes_in = (*c).bytes_in.wrapping_add(len);
            (*c).pkts_in = (*c).pkts_in.wrapping_add(1);
        } else {
            atomic_add(&raw mut (*c).bytes_out, len);
            atomic_add(&raw mut (*c).pkts_out, 1);
        }
    }
}

/// Gauge change a socket's state transition asks for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delta {
    None,
    Enter,
    Leave,
}

/// Whether flags make a socket of `proto` count as an open connection.
#[inline(always)]
fn ready(flags: u64, proto: u8) -> bool {
    flags & FLAG_IFACE_OK != 0
        && match proto {
            PROTO_TCP => flags & FLAG_ESTABLISHED != 0,
            PROTO_UDP => flags & FLAG_UDP_ACTIVE != 0,
            _ => false,
        }
}

/// What a transition does besides setting flags.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Enter the gauge once ready.
    Mark,
    /// Leave it for good.
    Close,
    /// A socket accepted by a listener: its state is a copy of the listener's (`BPF_F_CLONE`),
    /// so start its flags and gauge state afresh, then enter the gauge once ready.
    Accepted,
}

/// Flags a new socket starts with: without an interface filter every socket qualifies.
#[inline(always)]
pub fn initial_flags() -> u64 {
    if filter_on() { 0 } else { FLAG_IFACE_OK }
}

/// Under the socket's spin lock: sets `bits`, then either closes the socket for good
/// (`Step::Close`) or enters it in the gauge once it is ready. Racing hooks (ingress runs
/// without the socket lock) serialise here, so a socket enters and leaves its gauge exactly
/// once. Nothing between lock and unlock may call a helper (verifier rule).
#[inline(always)]
fn transition(st: *mut SockState, bits: u64, step: Step) -> Delta {
    let base = initial_flags();
    // SAFETY: `st` is a live storage value of a map whose value type has the lock.
    unsafe {
        let lock = (&raw mut (*st).lock).cast::<aya_ebpf::bindings::bpf_spin_lock>();
        bpf_spin_lock(lock);
        if step == Step::Accepted {
            (*st).flags = base;
            (*st).counted = COUNT_NOT_YET;
        }
        let flags = (*st).flags | bits;
        (*st).flags = flags;
        let counted = (*st).counted;
        let delta = if step == Step::Close {
            (*st).counted = COUNT_DONE;
            if counted == COUNT_ACTIVE {
                Delta::Leave
            } else {
                Delta::None
            }
        } else if counted == COUNT_NOT_YET && ready(flags, (*st).proto) {
            (*st).counted = COUNT_ACTIVE;
            Delta::Enter
        } else {
            Delta::None
        };
        bpf_spin_unlock(lock);
        delta
    }
}

/// Applies a transition's gauge change (after the unlock: a map lookup is a helper call).
#[inline(always)]
fn apply(st: *mut SockState, delta: Delta) {
    // SAFETY: `st` is a live storage value.
    let (proto, slot) = unsafe { ((*st).proto, (*st).slot) };
    match delta {
        Delta::Enter => gauge(slot, proto, 1),
        Delta::Leave => gauge(slot, proto, u64::MAX),
        Delta::None => {}
    }
}

/// Adds `delta` (wrapping: `u64::MAX` is −1) to the gauge of `proto` for `slot`. Also the
/// cgroup path's (whole.rs) way for TCP connections, which have no state there.
#[inline(always)]
pub fn gauge(slot: u32, proto: u8, delta: u64) {
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

/// The state of a target's socket; null for any other socket (and for request and
/// time-wait sockets, which have no storage). The one storage lookup of every hook.
#[inline(always)]
pub fn state_of(sk: *mut c_void) -> *mut SockState {
    SOCK_STATE.get(sk)
}

/// Takes the socket out of the gauge for good (closed, or TCP left ESTABLISHED).
#[inline(always)]
pub fn uncount(st: *mut SockState) {
    // SAFETY: `st` is a live storage value; an unlocked read only skips needless locking
    // (DONE is final).
    if unsafe { core::ptr::read_volatile(&raw const (*st).counted) } == COUNT_DONE {
        return;
    }
    apply(st, transition(st, 0, Step::Close));
}

/// Marks flags on the socket and enters it in the gauge once it qualifies: TCP established
/// or UDP bound/connected, and (with `-i`) seen on a chosen interface.
#[inline(always)]
pub fn mark(st: *mut SockState, bits: u64) {
    // SAFETY: `st` is a live storage value; unlocked reads only skip needless locking (flags
    // only grow, and `counted` only moves forward).
    let (flags, counted, proto) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*st).flags),
            core::ptr::read_volatile(&raw const (*st).counted),
            (*st).proto,
        )
    };
    let flags_done = flags & bits == bits;
    let nothing_to_count = counted != COUNT_NOT_YET || !ready(flags, proto);
    if flags_done && nothing_to_count {
        return;
    }
    apply(st, transition(st, bits, Step::Mark));
}

/// An accepted connection is established (sock_ops passive-established, which runs before
/// the new socket's own packets: the handshake is the listener's): restart the state it
/// copied from its listener, then mark `bits`.
#[inline(always)]
pub fn accepted(st: *mut SockState, bits: u64) {
    apply(st, transition(st, bits, Step::Accepted));
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
pub fn record_of(cookie: u64, st: *const SockState, state: u8) -> *mut ConnRecord {
    if let Some(r) = CONNS.get_ptr_mut(cookie) {
        return r;
    }
    // SAFETY: `st` is a live storage value; fields one by one (never a whole copy: the
    // verifier forbids reading its spin lock).
    let (counted, tgid, slot, proto, family, flags) = unsafe {
        (
            (*st).counted,
            (*st).tgid,
            (*st).slot,
            (*st).proto,
            (*st).family,
            (*st).flags,
        )
    };
    if counted == COUNT_DONE {
        return core::ptr::null_mut();
    }
    let init = ConnRecord {
        open_ns: now_ns(),
        tgid,
        slot,
        proto,
        family,
        state,
        iface_ok: u8::from(flags & FLAG_IFACE_OK != 0),
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
