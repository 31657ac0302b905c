//! The node path (`--all`): every skb of every socket on the host, charged to the cgroup the
//! socket was created in, by protocol and destination class, into `CGROUP_TOTALS`.
//!
//! Its own programs, attached once at the cgroup2 root, with one job: no socket storage is
//! looked up (a target's socket is counted for its target by the socket or cgroup path's
//! programs, attached at the target's own cgroup, into other maps). Per packet:
//! `bpf_skb_cgroup_id`, the protocol from the IP header, one per-CPU hash lookup. With `-i`
//! on kernels whose cgroup_skb lacks `bpf_get_netns_cookie`, the namespace stamped on each
//! socket (`SOCK_NETNS`, by `pnm_all_sock_create` and by the agent) costs a storage lookup
//! more, in that combination only.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, bpf_sock},
    helpers::generated::{bpf_get_netns_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id},
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};
use procnetmon2_common::{
    knobs::CgroupKey,
    sock::{PROTO_OTHER, PROTO_TCP, proto_index},
    traffic::Counters,
};

use crate::{
    dest, iface_pass,
    maps::{CGROUP_TOTALS, SOCK_NETNS, UNTRACKED},
    track::{ALLOW, add_percpu, filter_on, netns_helper_on},
};

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

/// `--all -i` without `bpf_get_netns_cookie` in cgroup_skb only: stamps every new socket with
/// its network namespace (`SOCK_NETNS`; cgroup/sock has the helper from 5.8), so the skb
/// programs can filter its packets by interface. On allocation failure its bytes are charged
/// to `UNTRACKED` (`netns_pass`).
#[cgroup_sock(sock_create)]
pub fn pnm_all_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: helper on the program context (the socket).
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock.cast()) };
    let _ = SOCK_NETNS.get_or_create(ctx.sock.cast(), &cookie);
    ALLOW
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
    let len = u64::from(ctx.len());
    if filter_on() && !passes_filter(ctx, sk, ingress, len) {
        return ALLOW;
    }
    // SAFETY: helper on the program context.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb) };
    let key = CgroupKey {
        cgroup_id,
        proto: u32::from(packet_proto(ctx, sk)),
        class: u32::from(dest::node(ctx, cgroup_id, ingress, len)),
    };
    charge(key, ingress, len);
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
