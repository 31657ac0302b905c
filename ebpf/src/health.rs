//! TCP health (issue 29): connection failures, retransmitted segments and smoothed-RTT
//! samples, charged to the socket's target slot (`TARGET_HEALTH`) and, with `--all`, to the
//! cgroup it was created in (`NODE_HEALTH`).
//!
//! Where each one comes from, and why there:
//! - **Outgoing connect failures**: the state callback, armed at `TCP_CONNECT_CB` (before the
//!   SYN leaves), sees each attempt leave SYN_SENT exactly once: for ESTABLISHED, or for CLOSE
//!   (a reset, an ICMP error, TCP's own SYN timeout, or the process giving up). A process that
//!   closes the socket before any SYN retransmission (the losing family of happy eyeballs)
//!   cancelled it; one that gives up after a retransmission timed out (a connect timeout).
//! - **Incoming handshakes**: a listener's SYN makes a request mini-socket, which has no
//!   storage, takes no callback flags and shows no listener in sock_ops (`ctx.sk` is null).
//!   The ingress program hands the listener's owner to the `TIMEOUT_INIT` callback that
//!   follows on the same CPU in the same softirq (`HANDOFF`), which records the request in
//!   `HANDSHAKES`; the accepted socket's passive-established callback deletes it. A request
//!   that dies (SYN-ACK retries exhausted, reset by the peer, listener closed) has no
//!   callback: the agent finds it gone from the kernel's tables and counts it. Fast Open
//!   children are full sockets from the SYN on: their SYN_RECV → CLOSE is counted here.
//! - **Retransmitted segments**: the retransmit callback's `segs`, which the kernel adds to
//!   `RetransSegs` at the same place (`__tcp_retransmit_skb`), armed with the state callback;
//!   an accepted socket starts with its request's SYN-ACK retransmissions (`total_retrans`).
//! - **RTT**: the kernel's smoothed RTT (`srtt_us >> 3`), at most once per socket per epoch
//!   (`RTT_EPOCH`, bumped by the agent each tick). Targets' sockets are sampled on the packet
//!   path (`bpf_tcp_sock`, behind one inlined array read and a compare per packet): an RTT
//!   callback would run a program on every ACK. Other sockets of `--all` have no storage
//!   the packet path could keep the epoch in, so they take the RTT callback.
//!
//! Every callback used exists on Linux 5.10 (state, retransmit, RTO: 4.16; RTT: 5.3;
//! `bpf_tcp_sock` in cgroup_skb: 5.1). Counters are shared map values with plain atomic adds
//! (no fetch/cmpxchg atomics, 5.12).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock},
    helpers::generated::{bpf_get_current_cgroup_id, bpf_skb_cgroup_id, bpf_tcp_sock},
    programs::{SkBuffContext, SockOpsContext},
};
use procnetmon2_common::{
    health::{
        Handoff, Handshake, HandshakeKey, Health, NO_SLOT, NodeSock, RTT_BUCKETS, rtt_bucket,
    },
    sock::{PROTO_TCP, SockState},
};

use crate::{
    maps::{
        HANDOFF, HANDSHAKES, HEALTH_LOST, HEALTH_ZERO, NODE_HEALTH, RTT_EPOCH, SOCK_CGROUP,
        TARGET_HEALTH,
    },
    track::{all_on, atomic_add, copy_ip6, now_ns},
};

/// TCP states (include/net/tcp_states.h).
const TCP_SYN_SENT: u32 = 2;
const TCP_SYN_RECV: u32 = 3;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;

/// Who an event is charged to: a target slot and/or (with `--all`) a cgroup.
#[derive(Clone, Copy)]
pub struct Owner {
    slot: u32,
    cgroup_id: u64,
}

impl Owner {
    const NONE: Self = Self {
        slot: NO_SLOT,
        cgroup_id: 0,
    };

    #[inline(always)]
    fn is_none(self) -> bool {
        self.slot == NO_SLOT && self.cgroup_id == 0
    }
}

/// The owner of a target's socket: its slot and, with `--all`, its cgroup.
#[inline(always)]
pub fn target_owner(st: *const SockState) -> Owner {
    // SAFETY: `st` is a live storage value; fields one by one (it holds a spin lock).
    unsafe {
        Owner {
            slot: (*st).slot,
            cgroup_id: (*st).cgroup_id,
        }
    }
}

/// The `--all` storage of a socket that is no target's; null without `--all` or when it
/// has none (it predates the run).
#[inline(always)]
fn node_sock(sk: *mut c_void) -> *mut NodeSock {
    if all_on() {
        SOCK_CGROUP.get(sk)
    } else {
        core::ptr::null_mut()
    }
}

/// The owner of a full socket in sock_ops: `st` (its target state, or null), else its
/// `--all` cgroup.
#[inline(always)]
fn owner_of(sk: *mut c_void, st: *const SockState) -> Owner {
    if !st.is_null() {
        return target_owner(st);
    }
    let n = node_sock(sk);
    if n.is_null() {
        return Owner::NONE;
    }
    // SAFETY: live storage value.
    Owner {
        slot: NO_SLOT,
        cgroup_id: unsafe { (*n).cgroup_id },
    }
}

/// `cgroup/sock_create` with `--all`: a TCP socket that is no target's gets its cgroup, for
/// sock_ops (which has no cgroup helper). `current` is the creator: its cgroup is the one
/// the kernel gives the socket. The allocation is `--all`'s price per TCP socket.
#[inline(always)]
pub fn stamp_node_cgroup(sk: *mut c_void, protocol: u32) {
    if !all_on() || protocol != 6 {
        return;
    }
    let init = NodeSock {
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ..NodeSock::default()
    };
    // On allocation failure the socket's health is not charged to its workload (its bytes
    // still are): counted in `HEALTH_LOST`.
    if SOCK_CGROUP.get_or_create(sk, &init).is_null() {
        lost();
    }
}

/// The cgroup a target's new socket is created in, with `--all` (else 0).
#[inline(always)]
pub fn creator_cgroup() -> u64 {
    if all_on() {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_current_cgroup_id() }
    } else {
        0
    }
}

/// `cgroup/sock_release`: the process let the socket go (before TCP closes it).
#[inline(always)]
pub fn released(sk: *mut c_void, st: *mut SockState) {
    if !st.is_null() {
        // SAFETY: live storage value; a plain byte store (never the lock).
        unsafe { (*st).released = 1 };
        return;
    }
    let n = node_sock(sk);
    if !n.is_null() {
        // SAFETY: live storage value.
        unsafe { (*n).released = 1 };
    }
}

/// Counts an event that could not be charged (`NODE_HEALTH` full, or a socket's `--all`
/// storage not allocated): the agent warns when it grows.
#[inline(always)]
fn lost() {
    if let Some(c) = HEALTH_LOST.get_ptr_mut(0) {
        atomic_add(c, 1);
    }
}

/// The `NODE_HEALTH` value of `cgroup_id`, created (zeroed) on its first event; null when
/// the map is full.
#[inline(always)]
fn node_health(cgroup_id: u64) -> *mut Health {
    if let Some(h) = NODE_HEALTH.get_ptr_mut(cgroup_id) {
        return h;
    }
    // The zero value comes from a map: a 272-byte `Health` on the 512-byte BPF stack would
    // crowd the callers. BPF_NOEXIST: a racing CPU's insert wins, then it is used.
    if let Some(zero) = HEALTH_ZERO.get(0) {
        let _ = NODE_HEALTH.insert(cgroup_id, zero, 1);
    }
    match NODE_HEALTH.get_ptr_mut(cgroup_id) {
        Some(h) => h,
        None => {
            lost();
            core::ptr::null_mut()
        }
    }
}

/// Which counter of a [`Health`] an event adds to.
#[derive(Clone, Copy)]
enum Event {
    ConnectFailure,
    HandshakeFailure,
    Retransmits(u64),
    Rtt(u32),
}

/// Adds `ev` to one health value (shared by all CPUs: atomic adds).
#[inline(always)]
fn add(h: *mut Health, ev: Event) {
    // SAFETY: `h` points into a live map value (checked non-null by the caller).
    unsafe {
        match ev {
            Event::ConnectFailure => atomic_add(&raw mut (*h).connect_failures, 1),
            Event::HandshakeFailure => atomic_add(&raw mut (*h).handshake_failures, 1),
            Event::Retransmits(n) => atomic_add(&raw mut (*h).retrans_segs, n),
            Event::Rtt(us) => {
                // Bounded for the verifier (every u32 RTT >> 3 is below 2^29, so the bucket
                // always fits), by a test against an immediate. `.min()` (and a clamp) compiled
                // to `r2 = 29; if r2 > r1`, and 5.10 and 6.1 decide a branch in advance only
                // when its right operand is the constant: they followed the impossible side with
                // inverted bounds (umin 30 > umax 28) and refused the index: "misaligned access
                // off (0x0; 0xffffffffffffffff)+0+32 size 8".
                let b = rtt_bucket(us);
                if b < RTT_BUCKETS {
                    atomic_add(&raw mut (*h).rtt_buckets[b], 1);
                }
                atomic_add(&raw mut (*h).rtt_sum_us, u64::from(us));
            }
        }
    }
}

/// Charges `ev` to each of `owner`'s counters.
#[inline(always)]
fn charge(owner: Owner, ev: Event) {
    if owner.slot != NO_SLOT
        && let Some(h) = TARGET_HEALTH.get_ptr_mut(owner.slot)
    {
        add(h, ev);
    }
    if owner.cgroup_id != 0 {
        let h = node_health(owner.cgroup_id);
        if !h.is_null() {
            add(h, ev);
        }
    }
}

/// The current RTT epoch (0 before the agent's first tick: nothing is sampled then).
#[inline(always)]
fn epoch() -> u32 {
    RTT_EPOCH.get(0).copied().unwrap_or(0)
}

/// Packet path, a target's TCP socket (after its bytes are charged): its smoothed RTT, once
/// per epoch. Per packet this is one inlined array read and a compare; the sample itself
/// (`bpf_tcp_sock`, the bucket, three atomic adds) runs once per socket per tick.
#[inline(always)]
pub fn sample_target_rtt(sk: *mut bpf_sock, st: *mut SockState, proto: u8) {
    if proto != PROTO_TCP {
        return;
    }
    let e = epoch();
    // SAFETY: `st` is a live storage value; a plain u32 load.
    if e == 0 || unsafe { (*st).rtt_epoch } == e {
        return;
    }
    // SAFETY: `sk` is the packet's socket (PTR_TO_SOCK_COMMON, null-checked by the caller);
    // the helper returns null unless it is a full TCP socket.
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return;
    }
    // SAFETY: non-null `bpf_tcp_sock`; the kernel stores the smoothed RTT << 3.
    let us = unsafe { (*tp).srtt_us } >> 3;
    if us == 0 {
        return; // no RTT measured yet (the SYN): try again on the next packet
    }
    // SAFETY: live storage value; a plain store (see `SockState::rtt_epoch`).
    unsafe { (*st).rtt_epoch = e };
    charge(target_owner(st), Event::Rtt(us));
}

/// RTT callback (armed on `--all` sockets that are no target's): a sample once per epoch.
/// A target's socket takes this callback only with `--details` (its record's RTT); its
/// health sample comes from the packet path.
#[inline(always)]
pub fn rtt_callback(ctx: &SockOpsContext, sk: *mut c_void, st: *const SockState) {
    if !st.is_null() {
        return;
    }
    let n = node_sock(sk);
    let e = epoch();
    // SAFETY: live storage value.
    if n.is_null() || e == 0 || unsafe { (*n).rtt_epoch } == e {
        return;
    }
    // SAFETY: ctx field read (full socket: `sk` is non-null).
    let us = unsafe { (*ctx.ops).srtt_us } >> 3;
    if us == 0 {
        return;
    }
    // SAFETY: live storage value.
    let cgroup_id = unsafe {
        (*n).rtt_epoch = e;
        (*n).cgroup_id
    };
    charge(
        Owner {
            slot: NO_SLOT,
            cgroup_id,
        },
        Event::Rtt(us),
    );
}

/// `sock_ops` callback flags.
pub const CB_RETRANS: i32 = 1 << 1;
pub const CB_STATE: i32 = 1 << 2;
pub const CB_RTT: i32 = 1 << 3;

/// `TCP_CONNECT_CB` (before the SYN leaves): arms the state and retransmit callbacks on a
/// target's connecting socket (`extra`: the RTT callback with `--details`) or, with
/// `--all`, on any other socket that has a cgroup (plus the RTT callback: its samples).
#[inline(always)]
pub fn connecting(ctx: &SockOpsContext, sk: *mut c_void, st: *const SockState, extra: i32) {
    let bits = if !st.is_null() {
        CB_STATE | CB_RETRANS | extra
    } else if !node_sock(sk).is_null() {
        CB_STATE | CB_RETRANS | CB_RTT
    } else {
        return;
    };
    let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 | bits);
}

/// Established (either side) for an `--all` socket that is no target's: arms the retransmit
/// and RTT callbacks, and disarms the state callback its connect armed (nothing fails once
/// established, and no gauge follows it: the closing connection's three or four state changes
/// would each run this program). A target's are armed with its gauge's state callback.
#[inline(always)]
pub fn node_established(ctx: &SockOpsContext, sk: *mut c_void) {
    if node_sock(sk).is_null() {
        return;
    }
    let flags = (ctx.cb_flags() as i32 | CB_RETRANS | CB_RTT) & !CB_STATE;
    let _ = ctx.set_cb_flags(flags);
}

/// Passive-established: the handshake completed (its request leaves `HANDSHAKES`), and the
/// SYN-ACK retransmissions of its request, which the kernel counted in `RetransSegs` and
/// copied into the new socket's `total_retrans`, are charged.
#[inline(always)]
pub fn accepted(ctx: &SockOpsContext, sk: *mut c_void, st: *const SockState) {
    if st.is_null() && !all_on() {
        return; // no request of this listener was recorded
    }
    // Whoever owns it now: with `--all`, a listener older than the run has no cgroup stamp
    // to clone, but its requests were recorded (from the packet's cgroup).
    let _ = HANDSHAKES.remove(handshake_key(ctx));
    let owner = owner_of(sk, st);
    if owner.is_none() {
        return;
    }
    // SAFETY: ctx field read (full socket).
    let synack_rtx = unsafe { (*ctx.ops).total_retrans };
    if synack_rtx != 0 {
        charge(owner, Event::Retransmits(u64::from(synack_rtx)));
    }
}

/// Retransmit callback: `arg(1)` segments, the kernel's `RetransSegs` increment.
#[inline(always)]
pub fn retransmitted(ctx: &SockOpsContext, sk: *mut c_void, st: *const SockState) {
    let segs = ctx.arg(1);
    if segs == 0 {
        return;
    }
    let owner = owner_of(sk, st);
    if !owner.is_none() {
        charge(owner, Event::Retransmits(u64::from(segs)));
    }
}

/// Whether the process had released the socket before this state change.
#[inline(always)]
fn was_released(sk: *mut c_void, st: *const SockState) -> bool {
    // SAFETY: live storage values; plain loads.
    unsafe {
        if !st.is_null() {
            return (*st).released != 0;
        }
        let n = node_sock(sk);
        !n.is_null() && (*n).released != 0
    }
}

/// State callback: a handshake that ends in CLOSE failed. SYN_SENT → CLOSE is an outgoing
/// connect that never reached ESTABLISHED; SYN_RECV → CLOSE an incoming one (a Fast Open
/// child). Not counted: an attempt the process itself abandoned before any SYN was sent
/// again (happy eyeballs' loser, a cancelled connect): `total_retrans` counts the SYN's
/// retransmissions, and a process that gives up after one timed out.
#[inline(always)]
pub fn state_changed(ctx: &SockOpsContext, sk: *mut c_void, st: *const SockState) {
    let (old, new) = (ctx.arg(0), ctx.arg(1));
    if new != TCP_CLOSE || (old != TCP_SYN_SENT && old != TCP_SYN_RECV) {
        return;
    }
    // SAFETY: ctx field read (full socket).
    let retransmitted = unsafe { (*ctx.ops).total_retrans } != 0;
    if was_released(sk, st) && !retransmitted {
        return;
    }
    let owner = owner_of(sk, st);
    if owner.is_none() {
        return;
    }
    let ev = if old == TCP_SYN_SENT {
        Event::ConnectFailure
    } else {
        Event::HandshakeFailure
    };
    charge(owner, ev);
}

/// Ingress, a listener's packet (its state is LISTEN: one field load per packet to know):
/// hands its owner to the sock_ops callback that makes a request for it, if any, on this
/// CPU (see `request_made`). `st`: the listener's target state, or null.
#[inline(always)]
pub fn listener_packet(ctx: &SkBuffContext, sk: *mut bpf_sock, st: *const SockState) {
    // SAFETY: `sk` is non-null (checked by the caller); a sock_common field.
    if unsafe { (*sk).state } != TCP_LISTEN {
        return;
    }
    // SAFETY: as above.
    let port = unsafe { (*sk).src_port };
    let slot = if st.is_null() {
        NO_SLOT
    } else {
        target_owner(st).slot
    };
    let cgroup_id = if all_on() {
        let skb: *mut __sk_buff = ctx.skb.skb;
        // SAFETY: helper on the program context: the listener's cgroup.
        unsafe { bpf_skb_cgroup_id(skb) }
    } else {
        0
    };
    if slot == NO_SLOT && cgroup_id == 0 {
        return;
    }
    if let Some(h) = HANDOFF.get_ptr_mut(0) {
        // SAFETY: this CPU's value; nothing else runs on this CPU between the listener's
        // ingress program and the request's callback (both in one softirq).
        unsafe {
            *h = Handoff {
                cgroup_id,
                slot,
                local_port: port as u16,
                _pad: 0,
            };
        }
    }
}

/// The addresses of the socket in `ctx` (a request mini-socket's, or the socket accepted from
/// it: the same four), as a `HANDSHAKES` key.
#[inline(always)]
fn handshake_key(ctx: &SockOpsContext) -> HandshakeKey {
    let ops = ctx.ops;
    let mut k = HandshakeKey::default();
    // SAFETY: ctx field reads of `struct sock_common` fields, valid for mini-sockets too.
    unsafe {
        k.family = (*ops).family as u16;
        k.local_port = (*ops).local_port as u16;
        // remote_port: network order, in the upper 16 bits on this kernel.
        let rp = (*ops).remote_port;
        k.remote_port = u16::from_be(if rp > 0xffff {
            (rp >> 16) as u16
        } else {
            rp as u16
        });
        if (*ops).family == 2 {
            k.local_ip[0] = (*ops).local_ip4;
            k.remote_ip[0] = (*ops).remote_ip4;
        } else {
            copy_ip6(&mut k.local_ip, &raw const (*ops).local_ip6);
            copy_ip6(&mut k.remote_ip, &raw const (*ops).remote_ip6);
        }
    }
    // An IPv6 listener's IPv4 client: its request is an IPv4 mini-socket, the socket accepted
    // from it an IPv6 one with v4-mapped addresses. One key for both: the IPv4 form.
    if k.family == 10 && v4_mapped(&k.remote_ip) && v4_mapped(&k.local_ip) {
        k.family = 2;
        k.local_ip = [k.local_ip[3], 0, 0, 0];
        k.remote_ip = [k.remote_ip[3], 0, 0, 0];
    }
    k
}

/// `::ffff:a.b.c.d` (words in network order).
#[inline(always)]
fn v4_mapped(a: &[u32; 4]) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == u32::from_be(0xffff)
}

/// `TIMEOUT_INIT` on a request mini-socket (the kernel made it for a SYN, right after the
/// listener's ingress program ran on this CPU): records the incoming handshake for the
/// listener's owner, if the hand-off is this listener's (same port; not the same family: an
/// IPv6 listener's IPv4 client gets an IPv4 request).
#[inline(always)]
pub fn request_made(ctx: &SockOpsContext) {
    let Some(h) = HANDOFF.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's value.
    let handoff = unsafe { *h };
    let key = handshake_key(ctx);
    if handoff.local_port == 0 || handoff.local_port != key.local_port {
        return;
    }
    // Consumed: a later request on this CPU needs its own listener's packet first.
    // SAFETY: this CPU's value.
    unsafe { (*h).local_port = 0 };
    let v = Handshake {
        cgroup_id: handoff.cgroup_id,
        started_ns: now_ns(),
        slot: handoff.slot,
        _pad: 0,
    };
    // BPF_ANY: a retransmitted SYN reusing the addresses of a request that died starts anew.
    if HANDSHAKES.insert(key, v, 0).is_err() {
        lost();
    }
}
