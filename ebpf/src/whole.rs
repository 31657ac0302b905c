//! The cgroup path (issue 28): whole-cgroup targets (spawn mode, `--cgroup`, `--container`)
//! when neither `--details` nor `-i` asks for per-socket state. Every socket whose cgroup is
//! in the target's subtree is the target's, so the programs attached at the target's cgroup
//! need not ask the socket who owns it: their attach point names the target. Its cgroup
//! storage (`CG_SLOT`: one `bpf_get_local_storage` call) holds the target's slot, whose
//! `TARGET_TOTALS` entry takes the packet; no socket gets a storage at creation.
//!
//! Connection gauges (`TARGET_CONNS`) without per-socket state where none is needed:
//! - TCP from sock_ops alone: +1 at the established callbacks, which arm the state callback
//!   (the kernel's per-socket callback flag is the only state), −1 when the state callback
//!   reports the change *out of* ESTABLISHED (its old state), which happens exactly once per
//!   connection whatever other programs do with the flag.
//! - UDP from a socket state created only when the socket becomes bound or connected
//!   (post_bind, connect, sendmsg): it must enter the gauge once however many of those hooks
//!   run, and leave it at release, and only a state under a spin lock can say so on 5.10 (no
//!   compare-and-swap before 5.12).
//! - Connections that predate the run carry a state stamped by the agent (counted now); a
//!   connection established while the agent scans gets one from sock_ops (`CG_SCANNING`), so
//!   the scan, which stamps only sockets without one, does not count it twice. Such states
//!   are looked for (`CG_OLD`) when a TCP socket leaves ESTABLISHED or is released.
//!
//! Used only where the kernel keeps each program's cgroup storage in its run context (5.15+):
//! before that (5.10), `bpf_get_local_storage` read a per-CPU pointer that a program run from
//! a softirq interrupting a process-context cgroup program on the same CPU could find set by
//! that program (stable 5.10.y's fix keys the slots by `current`, which a softirq shares with
//! the task it interrupts). There the agent counts these targets on the socket path. Every
//! helper used here exists for its program type on 5.10 too (docs/kernels.md).
//!
//! TCP health (issue 29, `health.rs`), charged to the same slot: the state and retransmit
//! callbacks armed at `TCP_CONNECT_CB` and at establishment (connect failures, retransmitted
//! segments), listeners' packets handed off to their requests' callbacks (incoming
//! handshakes), and RTT sampled on the packet path per slot of the flow hash (`RTT_SEEN`).
//! Still no socket storage for TCP, but for one case: a socket a process releases while it is
//! connecting gets a `SOCK_CGROUP` value saying so (a connect the process abandons is not the
//! network's failure).
//!
//! One target per attach point: the agent uses this path only for targets whose cgroup is
//! neither inside nor above another target's (nested programs would both count a packet).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock},
    btf_maps::Array,
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, sock_ops},
    programs::{SkBuffContext, SockAddrContext, SockContext, SockOpsContext},
};
use procnetmon2_common::{
    conn::TCP_ESTABLISHED,
    sock::{FLAG_ESTABLISHED, FLAG_UDP_ACTIVE, PROTO_TCP, PROTO_UDP, SockState, proto_index},
    target::MAX_TARGETS,
};

use crate::{
    add_totals, dest,
    health::{self, CB_RETRANS, CB_STATE, Owner, RTT_CG},
    maps::{CG_OLD, CG_SCANNING, CG_SLOT, SOCK_STATE},
    node::packet_proto,
    track::{ALLOW, gauge, initial_flags, mark, state_of, uncount},
    untracked_event,
};

/// sock_ops op codes (include/uapi/linux/bpf.h).
const OP_TIMEOUT_INIT: u32 = 1;
const OP_TCP_CONNECT: u32 = 3;
const OP_ACTIVE_ESTABLISHED: u32 = 4;
const OP_PASSIVE_ESTABLISHED: u32 = 5;
const OP_RETRANS: u32 = 9;
const OP_STATE: u32 = 10;
/// `TCP_SYN_RECV` (include/net/tcp_states.h).
const TCP_SYN_RECV: u32 = 3;
/// Gauge deltas (wrapping: `u64::MAX` is −1).
const PLUS: u64 = 1;
const MINUS: u64 = u64::MAX;

/// The slot of the target whose cgroup the running program is attached at.
#[inline(always)]
fn slot() -> u32 {
    // SAFETY: the storage value of this attach point (never null).
    unsafe { *CG_SLOT.get() }
}

/// Whether `CG_SCANNING` / `CG_OLD` say so for `slot` (array lookups, which the verifier
/// inlines: no call).
#[inline(always)]
fn flag(map: &Array<u32, { MAX_TARGETS as usize }>, slot: u32) -> bool {
    map.get(slot).is_some_and(|v| *v != 0)
}

/// A new state for a socket of target `slot`: it is counted through it from now on.
#[inline(always)]
fn new_state(sk: *mut c_void, slot: u32, proto: u8) -> *mut SockState {
    let init = SockState {
        slot,
        proto,
        flags: initial_flags(),
        ..SockState::default()
    };
    let st = SOCK_STATE.get_or_create(sk, &init);
    if st.is_null() {
        untracked_event(0); // the kernel could not allocate it: said, never silent
    }
    st
}

/// Ingress: every skb delivered to a socket of the target's subtree.
#[cgroup_skb]
pub fn pnm_cg_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, true)
}

/// Egress: every skb a socket of the target's subtree sends.
#[cgroup_skb]
pub fn pnm_cg_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, false)
}

/// Charges the skb to the target by its protocol (with classes, to its class instead; with
/// `--destinations`, to its remote host too), then, for a TCP socket that left ESTABLISHED
/// while some socket of the target may carry a counted state, looks for that state. TCP
/// health: a listener's packet is handed off to its request's callbacks; a TCP packet sent
/// may give its socket's RTT sample.
#[inline(always)]
fn count(ctx: &SkBuffContext, ingress: bool) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: ctx field read the verifier rewrites (`skb->sk`, PTR_TO_SOCK_COMMON_OR_NULL).
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return ALLOW;
    }
    let slot = slot();
    if ingress && let Some(port) = health::listening(sk) {
        health::hand_off_target(port, slot);
    }
    let len = u64::from(ctx.len());
    let proto = packet_proto(ctx, sk);
    if !dest::count(ctx, core::ptr::null_mut(), slot, proto, ingress, len) {
        add_totals(slot, proto, ingress, len);
    }
    if proto == PROTO_TCP {
        if !ingress {
            health::sample_flow_rtt(ctx, sk, RTT_CG, Owner::slot(slot));
        }
        if flag(&CG_OLD, slot) {
            leave_if_counted(sk);
        }
    }
    ALLOW
}

/// A TCP socket with a counted state (stamped, or made while the agent scanned) leaves the
/// gauge once it is no longer ESTABLISHED: its state callback may not be armed (a connection
/// that predates the run), so its packets tell (`bpf_sock.state` is readable from any socket).
#[inline(always)]
fn leave_if_counted(sk: *mut bpf_sock) {
    // SAFETY: `sk` was null-checked by the caller; `state` is in the sock_common part.
    if unsafe { (*sk).state } == u32::from(TCP_ESTABLISHED) {
        return;
    }
    let st = state_of(sk.cast());
    if !st.is_null() {
        uncount(st);
    }
}

/// sock_ops: the TCP gauge and TCP health. `current` is meaningless here and never used.
#[sock_ops]
pub fn pnm_cg_sockops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: ctx field read; null unless the socket is a full socket.
    let sk: *mut c_void = unsafe { (*ops).__bindgen_anon_2.sk }.cast();
    let op = ctx.op();
    if sk.is_null() {
        // A request mini-socket (an incoming handshake of the target's listener).
        if op == OP_TIMEOUT_INIT {
            health::request_made(&ctx, true);
        }
        return 1;
    }
    match op {
        // Before the SYN leaves: the state callback sees the attempt end, either way.
        OP_TCP_CONNECT => health::arm(&ctx, CB_STATE | CB_RETRANS),
        OP_ACTIVE_ESTABLISHED => established(&ctx, sk),
        OP_PASSIVE_ESTABLISHED => {
            health::accepted(&ctx, Owner::slot(slot()));
            established(&ctx, sk);
        }
        OP_STATE => state_changed(&ctx, sk),
        OP_RETRANS => health::retransmitted(&ctx, Owner::slot(slot())),
        _ => {}
    }
    1
}

/// State callback (args: old state, new state). ESTABLISHED is left once per connection;
/// later changes (FIN_WAIT2, TIME_WAIT, CLOSE) come while another program keeps the flag. A
/// handshake that ends in CLOSE failed: a connect (never in the gauge), or a Fast Open child
/// (in it since its passive-established callback, which came at its SYN).
#[inline(always)]
fn state_changed(ctx: &SockOpsContext, sk: *mut c_void) {
    let (old, new) = (ctx.arg(0), ctx.arg(1));
    if old == u32::from(TCP_ESTABLISHED) && new != u32::from(TCP_ESTABLISHED) {
        left(ctx, sk);
        return;
    }
    let Some(ev) = health::handshake_failure(ctx) else {
        return;
    };
    // Only a release while connecting makes a value (`pnm_cg_release`): looked up on
    // failures alone.
    let released = health::node_released(health::node_sock(sk));
    health::charge_failure(ctx, ev, Owner::slot(slot()), released);
    if old == TCP_SYN_RECV {
        left(ctx, sk);
    }
}

/// A connection is established: arm the state callback, which reports its end (and the
/// retransmit callback), and count it. One that cannot be armed (not a full TCP socket: never,
/// in practice) is not counted, since its end could not be seen. An active connect has both
/// armed since `TCP_CONNECT_CB`, unless `--all`'s program disarmed the state callback as the
/// connect completed (it runs after this path's, at the root): armed again here.
#[inline(always)]
fn established(ctx: &SockOpsContext, sk: *mut c_void) {
    let flags = ctx.cb_flags() as i32;
    let want = CB_STATE | CB_RETRANS;
    if flags & want != want && ctx.set_cb_flags(flags | want).is_err() {
        return;
    }
    let slot = slot();
    if flag(&CG_SCANNING, slot) {
        // The agent is scanning the target's sockets and may see this one established: a
        // state counted here makes its stamp (BPF_NOEXIST) fail, so it counts once.
        let st = new_state(sk, slot, PROTO_TCP);
        if !st.is_null() {
            if let Some(old) = CG_OLD.get_ptr_mut(slot) {
                // SAFETY: array value; every writer stores 1.
                unsafe { *old = 1 };
            }
            mark(st, FLAG_ESTABLISHED);
            return;
        }
    }
    gauge(slot, PROTO_TCP, PLUS);
}

/// A connection left ESTABLISHED: out of the gauge. The state callback is disarmed (the two
/// or three later changes of a closing connection would run this program for nothing, ~200 ns
/// each), as the socket path does without `--details`.
#[inline(always)]
fn left(ctx: &SockOpsContext, sk: *mut c_void) {
    let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 & !CB_STATE);
    let slot = slot();
    if flag(&CG_OLD, slot) {
        let st = state_of(sk);
        if !st.is_null() {
            // Counted through its state: leave through it (once, whichever hook is first).
            uncount(st);
            return;
        }
    }
    gauge(slot, PROTO_TCP, MINUS);
}

/// A UDP socket became bound or connected: it enters the gauge once, through a state made
/// now (the first allocation of its life; TCP sockets never get one here).
#[inline(always)]
fn udp_active(sk: *mut c_void, protocol: u32) {
    if proto_index(protocol) != PROTO_UDP {
        return;
    }
    let st = state_of(sk);
    let st = if st.is_null() {
        new_state(sk, slot(), PROTO_UDP)
    } else {
        st
    };
    if !st.is_null() {
        mark(st, FLAG_UDP_ACTIVE);
    }
}

#[cgroup_sock(post_bind4)]
pub fn pnm_cg_bind4(ctx: SockContext) -> i32 {
    // SAFETY: ctx field read.
    udp_active(ctx.sock.cast(), unsafe { (*ctx.sock).protocol });
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn pnm_cg_bind6(ctx: SockContext) -> i32 {
    // SAFETY: ctx field read.
    udp_active(ctx.sock.cast(), unsafe { (*ctx.sock).protocol });
    ALLOW
}

/// connect and sendmsg (an unconnected socket's `sendto` binds it first).
#[inline(always)]
fn sock_addr(ctx: &SockAddrContext) {
    let a = ctx.sock_addr;
    // SAFETY: ctx field reads.
    let (sk, protocol) = unsafe { ((*a).__bindgen_anon_1.sk.cast::<c_void>(), (*a).protocol) };
    if !sk.is_null() {
        udp_active(sk, protocol);
    }
}

#[cgroup_sock_addr(connect4)]
pub fn pnm_cg_connect4(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn pnm_cg_connect6(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn pnm_cg_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn pnm_cg_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr(&ctx);
    ALLOW
}

/// cgroup/sock_release: a UDP socket with a state leaves the gauge; a TCP one only if it
/// carries a counted state (`CG_OLD`): the others leave it through sock_ops. A TCP socket
/// still connecting is marked released (TCP health: see `state_changed`). Also the first
/// program the agent attaches at a target's cgroup: it creates the cgroup storage without
/// counting anything (no socket there has a state yet), so the agent can write the slot in
/// before any program that counts is attached.
#[cgroup_sock(sock_release)]
pub fn pnm_cg_release(ctx: SockContext) -> i32 {
    let sock: *mut bpf_sock = ctx.sock;
    // SAFETY: ctx field read.
    let proto = proto_index(unsafe { (*sock).protocol });
    let look = match proto {
        PROTO_UDP => true,
        PROTO_TCP => {
            // SAFETY: ctx field read.
            if health::connecting(unsafe { (*sock).state }) {
                health::released_connecting(sock.cast(), true);
            }
            flag(&CG_OLD, slot())
        }
        _ => false,
    };
    if look {
        let st = state_of(sock.cast());
        if !st.is_null() {
            uncount(st);
        }
    }
    ALLOW
}
