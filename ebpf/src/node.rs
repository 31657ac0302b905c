//! The node path (`--all`): every skb of every socket on the host, charged to the cgroup the
//! socket was created in, by protocol and destination class, into `CGROUP_TOTALS`; and the TCP
//! health of every workload, by the same cgroup, into `NODE_HEALTH` (`health.rs`).
//!
//! Its own programs, attached once at the cgroup2 root: no socket storage is looked up per
//! packet (a target's socket is counted for its target by the socket or cgroup path's
//! programs, attached at the target's own cgroup, into other maps). Per packet:
//! `bpf_skb_cgroup_id`, the protocol from the IP header, one per-CPU hash lookup; for TCP,
//! a listener check on ingress and the RTT sampler's compare on egress. With `-i` on kernels
//! whose cgroup_skb lacks `bpf_get_netns_cookie`, the namespace stamped on each socket
//! (`SOCK_NETNS`, by `pnm_all_sock_create` and by the agent) costs a storage lookup more, in
//! that combination only.
//!
//! TCP health needs sock_ops, which has no cgroup helper: each new TCP socket gets its cgroup
//! at `pnm_all_sock_create` (`SOCK_CGROUP`, one allocation per TCP socket, cloned to accepted
//! sockets); `pnm_all_release` marks a socket its process gives up while connecting;
//! `pnm_all_sockops` arms and takes the callbacks.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock},
    helpers::generated::{bpf_get_netns_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock, sock_ops},
    programs::{SkBuffContext, SockContext, SockOpsContext},
};
use procnetmon2_common::{
    knobs::CgroupKey,
    sock::{PROTO_OTHER, PROTO_TCP, proto_index},
    traffic::Counters,
};

use crate::{
    dest,
    health::{self, CB_RETRANS, CB_STATE, Owner, RTT_NODE},
    iface_pass,
    maps::{CGROUP_TOTALS, SOCK_NETNS, UNTRACKED},
    track::{ALLOW, add_percpu, filter_on, netns_helper_on},
};

/// sock_ops op codes (include/uapi/linux/bpf.h) and TCP states (include/net/tcp_states.h).
const OP_TIMEOUT_INIT: u32 = 1;
const OP_TCP_CONNECT: u32 = 3;
const OP_PASSIVE_ESTABLISHED: u32 = 5;
const OP_RETRANS: u32 = 9;
const OP_STATE: u32 = 10;
const TCP_ESTABLISHED: u32 = 1;
const TCP_SYN_SENT: u32 = 2;

/// Ingress: every skb delivered to a socket anywhere on the host.
#[cgroup_skb]
pub fn pnm_all_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, true)
}

/// Egress: every skb a socket anywhere on the host sends.
#[cgroup_skb]
pub fn pnm_all_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, false)
}

/// Every new inet socket: a TCP one gets its cgroup (`SOCK_CGROUP`, for TCP health); with
/// `--all -i` without `bpf_get_netns_cookie` in cgroup_skb, every one gets its network
/// namespace (`SOCK_NETNS`; cgroup/sock has the helper from 5.8), so the skb programs can
/// filter its packets by interface. On allocation failure its bytes are charged to
/// `UNTRACKED` (`netns_pass`), its health events to `HEALTH_LOST`.
#[cgroup_sock(sock_create)]
pub fn pnm_all_sock_create(ctx: SockContext) -> i32 {
    let sk: *mut c_void = ctx.sock.cast();
    if filter_on() && !netns_helper_on() {
        // SAFETY: helper on the program context (the socket).
        let cookie = unsafe { bpf_get_netns_cookie(sk) };
        let _ = SOCK_NETNS.get_or_create(sk, &cookie);
    }
    // SAFETY: ctx field read.
    if proto_index(unsafe { (*ctx.sock).protocol }) == PROTO_TCP {
        health::node_stamp(sk);
    }
    ALLOW
}

/// cgroup/sock_release (before TCP's close): a TCP socket given up while connecting is
/// marked, so its SYN_SENT → CLOSE is not taken for the network's failure. One field load for
/// every other socket.
#[cgroup_sock(sock_release)]
pub fn pnm_all_release(ctx: SockContext) -> i32 {
    // SAFETY: ctx field reads.
    let (protocol, state) = unsafe { ((*ctx.sock).protocol, (*ctx.sock).state) };
    if state == TCP_SYN_SENT && proto_index(protocol) == PROTO_TCP {
        health::released_connecting(ctx.sock.cast(), false);
    }
    ALLOW
}

/// sock_ops: TCP health of every workload, by the cgroup stamped on each socket. Runs after
/// the programs of any target's cgroup (the kernel runs a cgroup's own programs before its
/// ancestors'), which share the socket's callback flags: this program arms what it needs and
/// disarms only the state callback as a connect completes, which a target's program, if the
/// socket is one's, arms again at the established callback that follows. `current` is
/// meaningless here and never used.
#[sock_ops]
pub fn pnm_all_sockops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: ctx field read; null unless the socket is a full socket.
    let sk: *mut c_void = unsafe { (*ops).__bindgen_anon_2.sk }.cast();
    let op = ctx.op();
    if sk.is_null() {
        // A request mini-socket: its listener's incoming handshake, unless a target's program
        // recorded it already.
        if op == OP_TIMEOUT_INIT {
            health::request_made(&ctx, false);
        }
        return 1;
    }
    match op {
        // Before the SYN leaves. A socket without a stamp (older than the run) is armed too:
        // one storage lookup spared per connect, against callbacks without effect on those.
        OP_TCP_CONNECT => health::arm(&ctx, CB_STATE | CB_RETRANS),
        OP_PASSIVE_ESTABLISHED => {
            if !health::node_accepted(&ctx, sk).is_null() {
                health::arm(&ctx, CB_RETRANS);
            }
        }
        OP_STATE => {
            let (old, new) = (ctx.arg(0), ctx.arg(1));
            if old == TCP_SYN_SENT && new == TCP_ESTABLISHED {
                // Nothing fails once established: the closing connection's three or four
                // state changes would each run this program for nothing.
                let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 & !CB_STATE);
            } else if let Some(ev) = health::handshake_failure(&ctx) {
                let n = health::node_sock(sk);
                health::charge_failure(&ctx, ev, health::node_owner(n), health::node_released(n));
            }
        }
        OP_RETRANS => {
            let owner = health::node_owner(health::node_sock(sk));
            health::retransmitted(&ctx, owner);
        }
        _ => {}
    }
    1
}

/// Charges the skb to (the socket's cgroup, protocol, class). `bpf_skb_cgroup_id` reads the
/// cgroup the socket was created in, not `current`'s.
#[inline(always)]
fn count(ctx: &SkBuffContext, ingress: bool) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: ctx field read the verifier rewrites (`skb->sk`, PTR_TO_SOCK_COMMON_OR_NULL).
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return ALLOW;
    }
    if ingress && let Some(port) = health::listening(sk) {
        // A listener's packet (SYNs, final ACKs), whatever the interface (health is not
        // filtered by `-i`): its cgroup for the request's or the accepted socket's callback.
        // SAFETY: helper on the program context.
        health::hand_off_node(port, unsafe { bpf_skb_cgroup_id(skb) });
    }
    let len = u64::from(ctx.len());
    if filter_on() && !passes_filter(ctx, sk, ingress, len) {
        return ALLOW;
    }
    // SAFETY: helper on the program context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let proto = packet_proto(ctx, sk);
    let key = CgroupKey {
        cgroup_id,
        proto: u32::from(proto),
        class: u32::from(dest::node(ctx, cgroup_id, ingress, len)),
    };
    charge(key, ingress, len);
    if proto == PROTO_TCP && !ingress {
        health::sample_flow_rtt(ctx, sk, RTT_NODE, Owner::cgroup(cgroup_id));
    }
    ALLOW
}

/// `-i`: whether the packet went through a chosen interface of its socket's namespace, asked
/// of the packet where the kernel can (~6.15), else read from the socket's stamp.
#[inline(always)]
fn passes_filter(ctx: &SkBuffContext, sk: *mut bpf_sock, ingress: bool, len: u64) -> bool {
    // SAFETY: ctx field read.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if netns_helper_on() {
        // SAFETY: helper on the program context.
        let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
        return iface_pass(netns, ifindex, ingress, len);
    }
    netns_pass(sk.cast(), ifindex, ingress, len)
}

/// `-i` without `bpf_get_netns_cookie` in cgroup_skb: whether the socket's stamped namespace
/// has `ifindex` among the chosen interfaces. A socket without a stamp (made by the kernel
/// itself, or one the agent could not reach at start) has no known namespace: its bytes are
/// charged to `UNTRACKED`.
#[inline(always)]
fn netns_pass(sk: *mut c_void, ifindex: u32, ingress: bool, len: u64) -> bool {
    let netns = SOCK_NETNS.get(sk);
    if netns.is_null() {
        if let Some(u) = UNTRACKED.get_ptr_mut(0) {
            add_percpu(u, ingress, len);
        }
        return false;
    }
    // SAFETY: non-null storage pointer.
    iface_pass(unsafe { *netns }, ifindex, ingress, len)
}

/// Adds the packet to its `CGROUP_TOTALS` entry, created on the cgroup's first packet.
#[inline(always)]
fn charge(key: CgroupKey, ingress: bool, len: u64) {
    let c = match CGROUP_TOTALS.get_ptr_mut(key) {
        Some(c) => c,
        None => {
            // BPF_NOEXIST: a racing CPU may have created it; then use theirs.
            let _ = CGROUP_TOTALS.insert(key, Counters::default(), 1);
            match CGROUP_TOTALS.get_ptr_mut(key) {
                Some(c) => c,
                None => {
                    // Map full: reported as untracked, never silent.
                    if let Some(u) = UNTRACKED.get_ptr_mut(0) {
                        add_percpu(u, ingress, len);
                    }
                    return;
                }
            }
        }
    };
    add_percpu(c, ingress, len);
}

/// The packet's transport protocol (`PROTO_*`), from its IP header: IPv4's protocol field,
/// IPv6's next header when it names TCP or UDP. Read straight from the skb's linear data (the
/// program sees the skb from its IP header, and the header is always in the linear part): no
/// helper call. Only an IPv6 packet whose next header is neither (an extension header, or
/// ICMPv6), or a header out of the linear data, asks the socket (`bpf_sk_fullsock`, a helper
/// call; request and time-wait sockets, which are not full, are TCP's). An IPv4 raw socket
/// that writes its own TCP or UDP header is counted under that protocol.
#[inline(always)]
pub fn packet_proto(ctx: &SkBuffContext, sk: *mut bpf_sock) -> u8 {
    let skb = ctx.skb.skb;
    // SAFETY: ctx field reads (rewritten by the verifier into packet pointers).
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + 10 <= end {
        // SAFETY: the 10 bytes read are inside the packet (checked just above).
        let (first, v6_next, v4_proto) = unsafe {
            (
                *(data as *const u8),
                *((data + 6) as *const u8),
                *((data + 9) as *const u8),
            )
        };
        match first >> 4 {
            4 => return proto_index(u32::from(v4_proto)),
            6 => {
                let p = proto_index(u32::from(v6_next));
                if p != PROTO_OTHER {
                    return p;
                }
            }
            _ => {}
        }
    }
    // SAFETY: `sk` was null-checked by the caller.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        PROTO_TCP
    } else {
        // SAFETY: a full socket.
        proto_index(unsafe { (*full).protocol })
    }
}
