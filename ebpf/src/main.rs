//! procnetmon2 kernel programs. Entry points only; each is a thin wrapper around a `try_`
//! function, and every path returns the permissive verdict: this is a monitor and must never
//! drop a packet or refuse a socket because of its own failure.
//!
//! Minimum kernel: 5.7 (bpf links for cgroup programs; socket storage in cgroup_skb needs 5.2,
//! `BPF_F_CLONE` 5.4, `bpf_sk_storage_get` from cgroup/sock 5.11).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics::atomic_xadd: see `atomic_add`"
)]

mod maps;

use core::{ffi::c_void, intrinsics::AtomicOrdering};

use aya_ebpf::{
    helpers::generated::bpf_get_current_pid_tgid,
    macros::{cgroup_skb, cgroup_sock},
    programs::{SkBuffContext, SockContext},
};
use maps::{SOCK_OWNER, SOCK_STATS, TARGET_PIDS, TARGET_TOTALS, UNTRACKED};
use procnetmon2_common::{
    sock::{SockOwner, SockStats, proto_index},
    traffic::Counters,
};

/// cgroup_skb and cgroup/sock verdict: let the packet through / allow the socket.
const ALLOW: i32 = 1;

/// Lock-free add that cannot lose an update to another CPU, or to a softirq that interrupts
/// this program on the same CPU (a per-CPU `+=` is a load and a store, and ingress softirqs
/// can preempt an egress program running in process context).
///
/// `AtomicU64::fetch_add` does not exist for bpfel-unknown-none; the intrinsic with its
/// result unused compiles to `BPF_ATOMIC | BPF_ADD` (lock xadd).
#[inline(always)]
fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: callers pass pointers to map values the verifier proved valid and aligned.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(dst, v) };
}

/// Packet direction as seen by the socket.
#[derive(Clone, Copy)]
enum Dir {
    In,
    Out,
}

#[inline(always)]
fn add_counters(c: *mut Counters, dir: Dir, len: u64) {
    // SAFETY: `c` points into a map value (checked non-null by the caller).
    unsafe {
        match dir {
            Dir::In => {
                atomic_add(&raw mut (*c).bytes_in, len);
                atomic_add(&raw mut (*c).pkts_in, 1);
            }
            Dir::Out => {
                atomic_add(&raw mut (*c).bytes_out, len);
                atomic_add(&raw mut (*c).pkts_out, 1);
            }
        }
    }
}

/// Charges one skb to its socket and to the socket's target.
///
/// Attribution comes from the socket (its storage), never from `current`: egress runs in
/// softirq for ACKs and retransmits, and ingress runs in whatever context received it.
#[inline(always)]
fn count(ctx: &SkBuffContext, dir: Dir) -> Result<i32, i32> {
    // SAFETY: `ctx.skb` is the program context; reading `__sk_buff.sk` is a ctx access the
    // verifier rewrites to `skb->sk` (PTR_TO_SOCK_COMMON_OR_NULL).
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return Ok(ALLOW);
    }
    let sk: *mut c_void = sk.cast();
    // One lookup on the hot path: the stats storage carries the slot and protocol.
    let mut stats = SOCK_STATS.get(sk);
    let (slot, proto) = if stats.is_null() {
        // First packet of this socket, or not a target's socket at all.
        let owner = SOCK_OWNER.get(sk);
        if owner.is_null() {
            return Ok(ALLOW);
        }
        // SAFETY: non-null storage pointer returned by the helper.
        let SockOwner { slot, proto, .. } = unsafe { *owner };
        let init = SockStats {
            slot,
            proto,
            ..SockStats::default()
        };
        stats = SOCK_STATS.get_or_create(sk, &init);
        (slot, proto)
    } else {
        // SAFETY: non-null storage pointer returned by the helper.
        unsafe { ((*stats).slot, (*stats).proto) }
    };
    let len = u64::from(ctx.len());
    if !stats.is_null() {
        // SAFETY: `stats` is a live storage value; its first four fields are a `Counters`.
        add_counters(stats.cast(), dir, len);
    }
    match TARGET_TOTALS.get_ptr_mut(slot) {
        Some(totals) => {
            // Bounds-check the protocol index for the verifier and for bad user-space stamps.
            let p = usize::from(proto).min(2);
            // SAFETY: `totals` is this CPU's value for `slot`; `p` < PROTO_COUNT.
            add_counters(unsafe { &raw mut (*totals).by_proto[p] }, dir, len);
        }
        None => {
            if let Some(u) = UNTRACKED.get_ptr_mut(0) {
                add_counters(u, dir, len);
            }
        }
    }
    Ok(ALLOW)
}

/// Ingress: every skb delivered to a socket in the attached cgroup subtree.
/// Minimum kernel 4.10 (program type); socket storage lookups need 5.2.
#[cgroup_skb]
pub fn pnm_ingress(ctx: SkBuffContext) -> i32 {
    match count(&ctx, Dir::In) {
        Ok(v) | Err(v) => v,
    }
}

/// Egress: every skb a socket in the attached cgroup subtree sends (before GSO
/// segmentation and IP fragmentation).
#[cgroup_skb]
pub fn pnm_egress(ctx: SkBuffContext) -> i32 {
    match count(&ctx, Dir::Out) {
        Ok(v) | Err(v) => v,
    }
}

/// cgroup/sock_create: stamp the owner of each new inet socket a target creates.
///
/// Here, and only here among the hooks, `current` is reliably the creating process.
/// Accepted sockets never pass here: they inherit the listener's stamp (BPF_F_CLONE).
#[cgroup_sock(sock_create)]
pub fn pnm_sock_create(ctx: SockContext) -> i32 {
    match try_sock_create(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_sock_create(ctx: &SockContext) -> Result<i32, i32> {
    // SAFETY: helper without arguments.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    // SAFETY: read-only lookup; the value is copied out at once.
    let Some(&slot) = (unsafe { TARGET_PIDS.get(tgid) }) else {
        return Ok(ALLOW);
    };
    // SAFETY: `ctx.sock` is the program context (a `struct bpf_sock`).
    let (protocol, family) = unsafe { ((*ctx.sock).protocol, (*ctx.sock).family) };
    let owner = SockOwner {
        tgid,
        slot,
        proto: proto_index(protocol),
        family: family as u8,
        _pad: [0; 6],
    };
    // cgroup/sock passes its context as the socket (bpf_sk_storage_get_cg_sock_proto).
    let stored = SOCK_OWNER.get_or_create(ctx.sock.cast(), &owner);
    if stored.is_null() {
        // Out of memory: this socket's traffic will be missed; nothing else to do here.
        return Err(ALLOW);
    }
    Ok(ALLOW)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any program that could reach this loop.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
