//! TCP health (issue 29): connection failures, retransmitted segments and smoothed-RTT
//! samples, on each of the three counting paths (issue 28), charged to whom that path counts:
//! - the socket path (`main.rs`): the socket's target slot, from its `SockState`
//!   (`TARGET_HEALTH`);
//! - the cgroup path (`whole.rs`): the slot its attach point names (`CG_SLOT`), with no
//!   per-socket state (`TARGET_HEALTH`);
//! - the node path (`node.rs`, `--all`): the cgroup the socket was created in
//!   (`NODE_HEALTH`). A target's socket under `--all` is charged by both its path and the node
//!   path, each by its own programs.
//!
//! Where each one comes from, and why there:
//! - **Outgoing connect failures**: the state callback, armed at `TCP_CONNECT_CB` (before the
//!   SYN leaves), sees each attempt leave SYN_SENT exactly once: for ESTABLISHED, or for CLOSE
//!   (a reset, an ICMP error, TCP's own SYN timeout, or the process giving up). A process that
//!   closes the socket before any SYN retransmission (the losing family of happy eyeballs)
//!   cancelled it; one that gives up after a retransmission timed out (a connect timeout).
//!   The process's release is seen by `cgroup/sock_release`, which runs before TCP's close.
//! - **Incoming handshakes**: a listener's SYN makes a request mini-socket, which has no
//!   storage, takes no callback flags and shows no listener in sock_ops (`ctx.sk` is null).
//!   Every ingress program that sees a listener's packet hands the listener's owner to the
//!   sock_ops callbacks that follow on the same CPU in the same softirq (`HANDOFF`: one entry
//!   for the socket and cgroup paths, one for the node path). The request's `TIMEOUT_INIT`
//!   callback records it in `HANDSHAKES` with both owners: the first program of the chain
//!   (the kernel runs a cgroup's own programs before its ancestors', so a target's before the
//!   node path's at the root) takes both entries. The accepted socket's passive-established
//!   callback deletes it. A request that dies (SYN-ACK retries exhausted, reset by the peer,
//!   listener closed) has no callback: the agent finds it gone from the kernel's tables and
//!   counts it. Fast Open children are full sockets from the SYN on: their SYN_RECV → CLOSE
//!   is counted here.
//! - **Retransmitted segments**: the retransmit callback's `segs`, which the kernel adds to
//!   `RetransSegs` at the same place (`__tcp_retransmit_skb`), armed with the state callback;
//!   an accepted socket starts with its request's SYN-ACK retransmissions (`total_retrans`).
//! - **RTT**: the kernel's smoothed RTT (`srtt_us >> 3`), sampled on the packet path (an RTT
//!   callback would run a program on every ACK), at most once per epoch (`RTT_EPOCH`, bumped
//!   by the agent each tick): per socket on the socket path (its `SockState` keeps the epoch,
//!   looked up per packet anyway); on the cgroup and node paths, which look no socket up, per
//!   slot of the flow hash (`RTT_SEEN`: an inlined array read and a compare per TCP packet
//!   sent): sockets sharing a slot share its one sample per epoch.
//!
//! The node path needs a socket's cgroup in sock_ops, which has no cgroup helper on 5.10 (the
//! `bpf_get_current_*cgroup_id` helpers reached sock_ops only with 6.x's base helpers, and
//! `current` is whatever a softirq interrupted in most of its callbacks): `SOCK_CGROUP` is
//! stamped at `cgroup/sock_create`, where `current` is the creator (one allocation per TCP
//! socket, the node path's price for failures and retransmissions per workload).
//!
//! Every callback used exists on Linux 5.10 (state, retransmit: 4.16; `bpf_tcp_sock` in
//! cgroup_skb: 5.1). Counters are shared map values with plain atomic adds (no fetch/cmpxchg
//! atomics, 5.12).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::bpf_sock,
    helpers::generated::{bpf_get_current_cgroup_id, bpf_tcp_sock},
    programs::{SkBuffContext, SockOpsContext},
};
use procnetmon2_common::{
    health::{
        HANDOFF_NODE, HANDOFF_TARGET, Handoff, Handshake, HandshakeKey, Health, NO_SLOT, NodeSock,
        RTT_BUCKETS, RTT_SEEN_SLOTS, rtt_bucket,
    },
    sock::{PROTO_TCP, SockState},
};

use crate::{
    maps::{
        HANDOFF, HANDSHAKES, HEALTH_LOST, HEALTH_ZERO, NODE_HEALTH, RTT_EPOCH, RTT_SEEN,
        SOCK_CGROUP, TARGET_HEALTH,
    },
    track::{atomic_add, copy_ip6, now_ns},
};

/// TCP states (include/net/tcp_states.h).
const TCP_SYN_SENT: u32 = 2;
const TCP_SYN_RECV: u32 = 3;
const TCP_CLOSE: u32 = 7;
const TCP_LISTEN: u32 = 10;

/// `sock_ops` callback flags.
pub const CB_RETRANS: i32 = 1 << 1;
pub const CB_STATE: i32 = 1 << 2;
pub const CB_RTT: i32 = 1 << 3;

/// `RTT_SEEN`'s share (first slot) of the cgroup path, then of the node path.
pub const RTT_CG: u32 = 0;
pub const RTT_NODE: u32 = RTT_SEEN_SLOTS;

/// Who an event is charged to: a target slot or (node path) a cgroup.
#[derive(Clone, Copy)]
pub struct Owner {
    slot: u32,
    cgroup_id: u64,
}

impl Owner {
    pub const NONE: Self = Self {
        slot: NO_SLOT,
        cgroup_id: 0,
    };

    /// A target slot (socket and cgroup paths).
    #[inline(always)]
    pub const fn slot(slot: u32) -> Self {
        Self { slot, cgroup_id: 0 }
    }

    /// A cgroup (node path).
    #[inline(always)]
    pub const fn cgroup(cgroup_id: u64) -> Self {
        Self {
            slot: NO_SLOT,
            cgroup_id,
        }
    }

    #[inline(always)]
    fn is_none(self) -> bool {
        self.slot == NO_SLOT && self.cgroup_id == 0
    }
}

/// The owner of a target's socket (socket path): its slot.
#[inline(always)]
pub fn target_owner(st: *const SockState) -> Owner {
    // SAFETY: `st` is a live storage value; one field (it holds a spin lock).
    Owner::slot(unsafe { (*st).slot })
}

/// Counts an event that could not be charged (`NODE_HEALTH` or `HANDSHAKES` full, a socket's
/// `SOCK_CGROUP` not allocated): the agent warns when it grows.
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
pub enum Event {
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

/// Charges `ev` to `owner`'s counters.
#[inline(always)]
pub fn charge(owner: Owner, ev: Event) {
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

/// Arms the callbacks `bits` on the socket of `ctx` (one helper call, only when some are not
/// armed yet).
#[inline(always)]
pub fn arm(ctx: &SockOpsContext, bits: i32) {
    let flags = ctx.cb_flags() as i32;
    if flags & bits != bits {
        let _ = ctx.set_cb_flags(flags | bits);
    }
}

// ---- RTT

/// The current RTT epoch (0 before the agent's first tick: nothing is sampled then).
#[inline(always)]
fn epoch() -> u32 {
    RTT_EPOCH.get(0).copied().unwrap_or(0)
}

/// The smoothed RTT (µs) of `sk` when it is a full TCP socket with one measured (0 otherwise:
/// before the handshake's first RTT, try again on the next packet).
#[inline(always)]
fn srtt_us(sk: *mut bpf_sock) -> u32 {
    // SAFETY: `sk` is the packet's socket (PTR_TO_SOCK_COMMON, null-checked by the caller);
    // the helper returns null unless it is a full TCP socket.
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return 0;
    }
    // SAFETY: non-null `bpf_tcp_sock`; the kernel stores the smoothed RTT << 3.
    unsafe { (*tp).srtt_us >> 3 }
}

/// Socket path, a target's TCP socket (after its bytes are charged): its smoothed RTT, once
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
    let us = srtt_us(sk);
    if us == 0 {
        return;
    }
    // SAFETY: live storage value; a plain store (see `SockState::rtt_epoch`).
    unsafe { (*st).rtt_epoch = e };
    charge(target_owner(st), Event::Rtt(us));
}

/// Cgroup and node paths, a TCP packet sent (`base`: the path's first slot of `RTT_SEEN`):
/// the socket's smoothed RTT, once per epoch per slot of the flow hash. `skb->hash` on egress
/// is the socket's own random `sk_txhash` (changed only when TCP rethinks a path after a
/// timeout), so a socket keeps its slot; sockets sharing a slot share its sample, which goes
/// to whichever sends first in the epoch: the rate stays bounded (`RTT_SEEN_SLOTS` samples
/// per path per epoch at most), no socket is favoured for long. A slot holds a one-byte tag
/// of the epoch (its low 7 bits, with the top bit set so that no tag is 0, the untouched
/// slot; no division per packet), so a slot last sampled 128 epochs ago, to the epoch, is
/// skipped once. Per packet: two inlined array reads and a compare, no helper call.
#[inline(always)]
pub fn sample_flow_rtt(ctx: &SkBuffContext, sk: *mut bpf_sock, base: u32, owner: Owner) {
    let e = epoch();
    if e == 0 {
        return;
    }
    // SAFETY: ctx field read.
    let slot = base + (unsafe { (*ctx.skb.skb).hash } & (RTT_SEEN_SLOTS - 1));
    let Some(word) = RTT_SEEN.get_ptr_mut(slot / 8) else {
        return;
    };
    // SAFETY: a byte of a live 8-byte array value (offset bounded by `& 7`).
    let seen = unsafe { word.cast::<u8>().add((slot & 7) as usize) };
    let tag = (e & 0x7f) as u8 | 0x80;
    // SAFETY: as above; plain byte loads and stores (a race samples twice at worst).
    if unsafe { *seen } == tag {
        return;
    }
    let us = srtt_us(sk);
    if us == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { *seen = tag };
    charge(owner, Event::Rtt(us));
}

// ---- State changes and retransmissions

/// The handshake failure a state callback reports, if any: SYN_SENT → CLOSE is an outgoing
/// connect that never reached ESTABLISHED, SYN_RECV → CLOSE an incoming one (a Fast Open
/// child).
#[inline(always)]
pub fn handshake_failure(ctx: &SockOpsContext) -> Option<Event> {
    match (ctx.arg(0), ctx.arg(1)) {
        (TCP_SYN_SENT, TCP_CLOSE) => Some(Event::ConnectFailure),
        (TCP_SYN_RECV, TCP_CLOSE) => Some(Event::HandshakeFailure),
        _ => None,
    }
}

/// Charges the failure `ev` to `owner`, unless the process itself abandoned the attempt
/// (`released` before this change) before any SYN was sent again (happy eyeballs' loser, a
/// cancelled connect): `total_retrans` counts the SYN's retransmissions, and a process that
/// gives up after one timed out.
#[inline(always)]
pub fn charge_failure(ctx: &SockOpsContext, ev: Event, owner: Owner, released: bool) {
    // SAFETY: ctx field read (full socket).
    let retransmitted = unsafe { (*ctx.ops).total_retrans } != 0;
    if (released && !retransmitted) || owner.is_none() {
        return;
    }
    charge(owner, ev);
}

/// Retransmit callback: `arg(1)` segments, the kernel's `RetransSegs` increment.
#[inline(always)]
pub fn retransmitted(ctx: &SockOpsContext, owner: Owner) {
    let segs = ctx.arg(1);
    if segs != 0 && !owner.is_none() {
        charge(owner, Event::Retransmits(u64::from(segs)));
    }
}

/// Whether the socket path's target state says the process released the socket.
#[inline(always)]
pub fn target_released(st: *const SockState) -> bool {
    // SAFETY: live storage value; a plain byte load.
    unsafe { (*st).released != 0 }
}

/// `cgroup/sock_release` on the socket path: the process let the socket go (before TCP
/// closes it). A plain byte store (never the lock).
#[inline(always)]
pub fn target_release(st: *mut SockState) {
    // SAFETY: live storage value.
    unsafe { (*st).released = 1 };
}

// ---- The node path's socket stamp (and the cgroup path's released mark)

/// A socket's `SOCK_CGROUP` value, or null.
#[inline(always)]
pub fn node_sock(sk: *mut c_void) -> *mut NodeSock {
    SOCK_CGROUP.get(sk)
}

/// The node path's owner of a full socket in sock_ops: its stamped cgroup (none for a socket
/// older than the run).
#[inline(always)]
pub fn node_owner(n: *const NodeSock) -> Owner {
    if n.is_null() {
        return Owner::NONE;
    }
    // SAFETY: live storage value.
    Owner::cgroup(unsafe { (*n).cgroup_id })
}

/// Whether a `SOCK_CGROUP` value says the process released the socket.
#[inline(always)]
pub fn node_released(n: *const NodeSock) -> bool {
    // SAFETY: live storage value, when non-null.
    !n.is_null() && unsafe { (*n).released } != 0
}

/// `cgroup/sock_create` on the node path: a new TCP socket gets its cgroup, for sock_ops.
/// `current` is the creator: its cgroup is the one the kernel gives the socket. The allocation
/// is the node path's price per TCP socket for health (see the module doc).
#[inline(always)]
pub fn node_stamp(sk: *mut c_void) {
    let init = NodeSock {
        // SAFETY: helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        ..NodeSock::default()
    };
    // On allocation failure the socket's failures and retransmissions are not charged to its
    // workload (its bytes and RTT still are): counted in `HEALTH_LOST`.
    if SOCK_CGROUP.get_or_create(sk, &init).is_null() {
        lost();
    }
}

/// `cgroup/sock_release` of a TCP socket still connecting (SYN_SENT: the only state in which
/// a release matters to health): the process gives up. On the node path the socket has its
/// stamp (`create` false: nothing is allocated for one that has none); the cgroup path makes
/// a value here, the only socket storage it ever allocates for TCP (abandoned connects are
/// rare).
#[inline(always)]
pub fn released_connecting(sk: *mut c_void, create: bool) {
    let n = if create {
        SOCK_CGROUP.get_or_create(sk, &NodeSock::default())
    } else {
        SOCK_CGROUP.get(sk)
    };
    if !n.is_null() {
        // SAFETY: live storage value; a plain store (it only goes from 0 to 1).
        unsafe { (*n).released = 1 };
    }
}

/// Whether `state` (a `bpf_sock` state) is SYN_SENT.
#[inline(always)]
pub fn connecting(state: u32) -> bool {
    state == TCP_SYN_SENT
}

// ---- Listeners and incoming handshakes

/// The port of `sk` when it is a listener (one field load per packet to know), else None.
#[inline(always)]
pub fn listening(sk: *mut bpf_sock) -> Option<u16> {
    // SAFETY: `sk` is non-null (checked by the caller); sock_common fields.
    unsafe {
        if (*sk).state != TCP_LISTEN {
            return None;
        }
        Some((*sk).src_port as u16)
    }
}

/// Ingress of a listener's packet on the socket or cgroup path: hands the listener's owner
/// (`slot`, or `NO_SLOT` for a listener no target owns, which clears a stale entry) to the
/// sock_ops callbacks that follow for it on this CPU.
#[inline(always)]
pub fn hand_off_target(port: u16, slot: u32) {
    hand_off(HANDOFF_TARGET, port, slot, 0);
}

/// The same on the node path, for the listener's cgroup (`bpf_skb_cgroup_id`).
#[inline(always)]
pub fn hand_off_node(port: u16, cgroup_id: u64) {
    hand_off(HANDOFF_NODE, port, NO_SLOT, cgroup_id);
}

#[inline(always)]
fn hand_off(index: u32, port: u16, slot: u32, cgroup_id: u64) {
    if let Some(h) = HANDOFF.get_ptr_mut(index) {
        // SAFETY: this CPU's value; nothing else runs on this CPU between the listener's
        // ingress programs and the request's callbacks (all in one softirq).
        unsafe {
            *h = Handoff {
                cgroup_id,
                slot,
                local_port: port,
                _pad: 0,
            };
        }
    }
}

/// Takes this CPU's `HANDOFF` entry `index` when it is for a listener on `port` (and marks
/// it used: a later callback on this CPU needs its own listener's packet first).
#[inline(always)]
fn take_handoff(index: u32, port: u16) -> Option<Handoff> {
    let h = HANDOFF.get_ptr_mut(index)?;
    // SAFETY: this CPU's value.
    let v = unsafe { *h };
    if v.local_port == 0 || v.local_port != port {
        return None;
    }
    // SAFETY: as above.
    unsafe { (*h).local_port = 0 };
    Some(v)
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
/// listener's ingress programs ran on this CPU): records the incoming handshake for the
/// listener's owners, if the hand-offs are this listener's (same port; not the same family: an
/// IPv6 listener's IPv4 client gets an IPv4 request). `target`: the program is a socket or
/// cgroup path's, which runs before the node path's and takes both entries; the node path's
/// takes its own only (a target's entry may be stale when no target program saw the SYN).
#[inline(always)]
pub fn request_made(ctx: &SockOpsContext, target: bool) {
    let key = handshake_key(ctx);
    let slot = if target {
        take_handoff(HANDOFF_TARGET, key.local_port).map_or(NO_SLOT, |h| h.slot)
    } else {
        NO_SLOT
    };
    let cgroup_id = take_handoff(HANDOFF_NODE, key.local_port).map_or(0, |h| h.cgroup_id);
    if slot == NO_SLOT && cgroup_id == 0 {
        return;
    }
    let v = Handshake {
        cgroup_id,
        started_ns: now_ns(),
        slot,
        _pad: 0,
    };
    // BPF_ANY: a retransmitted SYN reusing the addresses of a request that died starts anew.
    if HANDSHAKES.insert(key, v, 0).is_err() {
        lost();
    }
}

/// Passive-established on the socket or cgroup path: the handshake completed (its request
/// leaves `HANDSHAKES`), and the SYN-ACK retransmissions of its request, which the kernel
/// counted in `RetransSegs` and copied into the new socket's `total_retrans`, are charged.
#[inline(always)]
pub fn accepted(ctx: &SockOpsContext, owner: Owner) {
    let _ = HANDSHAKES.remove(handshake_key(ctx));
    synack_retransmits(ctx, owner);
}

#[inline(always)]
fn synack_retransmits(ctx: &SockOpsContext, owner: Owner) {
    // SAFETY: ctx field read (full socket).
    let synack_rtx = unsafe { (*ctx.ops).total_retrans };
    if synack_rtx != 0 && !owner.is_none() {
        charge(owner, Event::Retransmits(u64::from(synack_rtx)));
    }
}

/// Passive-established on the node path: as [`accepted`], for the socket's cgroup. It has the
/// listener's stamp (cloned); a listener older than the run has none to clone, so the socket
/// gets one here, from the listener's final ACK that the node path's ingress program handed
/// off just before (same CPU, same softirq). Returns its stamp (null when none).
#[inline(always)]
pub fn node_accepted(ctx: &SockOpsContext, sk: *mut c_void) -> *mut NodeSock {
    let key = handshake_key(ctx);
    let _ = HANDSHAKES.remove(key);
    let mut n = node_sock(sk);
    if n.is_null()
        && let Some(h) = take_handoff(HANDOFF_NODE, key.local_port)
    {
        let init = NodeSock {
            cgroup_id: h.cgroup_id,
            ..NodeSock::default()
        };
        n = SOCK_CGROUP.get_or_create(sk, &init);
        if n.is_null() {
            lost();
        }
    }
    synack_retransmits(ctx, node_owner(n));
    n
}
