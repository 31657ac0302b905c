//! procnetmon2 kernel programs. Entry points only; each is a thin wrapper, and every path
//! returns the permissive verdict: this is a monitor and must never drop a packet or refuse a
//! socket because of its own failure.
//!
//! Three sets of counting programs, each attached where its targets are (the agent attaches
//! only the sets a run needs, and never two at one cgroup):
//! - the socket path (here): `-p` targets, and whole-cgroup targets that need per-socket
//!   state (`--details`, `-i`); a socket's storage names its target;
//! - the cgroup path (`whole.rs`): whole-cgroup targets without that need; the attach
//!   point's cgroup storage is the target;
//! - the node path (`node.rs`): `--all`, at the cgroup2 root, by the socket's cgroup.
//!
//! | program | hook | job |
//! |---|---|---|
//! | `pnm_ingress`, `pnm_egress` | cgroup_skb | count bytes per target, found by the socket's state |
//! | `pnm_sock_create` | cgroup/sock_create | a target's new socket gets its state (owner) |
//! | `pnm_sock_release` | cgroup/sock_release | a socket closes: leave the gauge, close the record |
//! | `pnm_sockops` | sock_ops | TCP connect / established / state changes / RTT, retransmits; TCP health (`health.rs`) |
//! | `pnm_post_bind4/6`, `pnm_connect4/6`, `pnm_sendmsg4/6` | cgroup sock / sock_addr | UDP socket becomes bound or connected |
//! | `pnm_fork`, `pnm_exit` | raw_tp sched_process_fork / exit | children join their target; exited PIDs leave |
//! | `pnm_cgroup_attach` | raw_tp cgroup_attach_task | a target's process moved to another cgroup: tell the agent at once |
//! | `pnm_cg_*` (whole.rs) | the same hooks | the cgroup path: the target named by `CG_SLOT`, no socket lookup; its TCP health |
//! | `pnm_all_*` (node.rs) | cgroup_skb, sock_create, sock_release, sock_ops | `--all` by cgroup; its TCP health; namespace stamps for `--all -i` |
//!
//! Minimum kernel: 5.10, measured (docs/kernels.md): bpf links for cgroups 5.7, socket
//! storage with `BPF_F_CLONE` 5.4, `bpf_spin_lock` in socket storage; only the plain atomic
//! add (no fetch/cmpxchg atomics, 5.12). `-i` uses `bpf_get_netns_cookie` in cgroup_skb where
//! the kernel has it (~6.15) and the namespace stamped on each socket elsewhere (with `--all`,
//! every socket's: `SOCK_NETNS`). The cgroup path is used only from 5.15 (whole.rs says why).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "core::intrinsics atomics: see track::atomic_add"
)]

mod dest;
mod health;
mod maps;
mod node;
mod track;
mod whole;

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::{
        bpf_probe_read_kernel,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id,
            bpf_get_current_pid_tgid, bpf_get_netns_cookie, bpf_get_socket_cookie,
        },
    },
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, raw_tracepoint, sock_ops},
    programs::{RawTracePointContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext},
};
use maps::{CGROUP_TARGETS, IFACES, NEW_IFACES, TARGET_PIDS, TARGET_TOTALS, UNTRACKED};
use procnetmon2_common::{
    conn::{TCP_CLOSE, TCP_ESTABLISHED, UDP_OPEN},
    knobs::{IFACE_COUNT, IfaceKey, MAX_CGROUP_LEVEL},
    sock::{
        FLAG_ARMED, FLAG_ESTABLISHED, FLAG_IFACE_OK, FLAG_UDP_ACTIVE, PROTO_TCP, PROTO_UDP,
        SockState, proto_index,
    },
};
use track::{
    ALLOW, accepted, add_percpu, add_shared, all_on, atomic_add, cgroup_targets_on, children_on,
    copy_ip6, details_on, filter_on, initial_flags, mark, netns_helper_on, now_ns, pid_targets_on,
    record_of, state_of, task_offsets, uncount,
};

/// Packet direction as seen by the socket.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    In,
    Out,
}

#[inline(always)]
fn add_totals(slot: u32, proto: u8, ingress: bool, len: u64) {
    match TARGET_TOTALS.get_ptr_mut(slot) {
        Some(totals) => {
            // Bound the protocol index for the verifier and against bad stamps.
            let p = usize::from(proto).min(2);
            // SAFETY: `totals` is this CPU's value for `slot`; `p` < PROTO_COUNT.
            add_percpu(unsafe { &raw mut (*totals).by_proto[p] }, ingress, len);
        }
        None => {
            if let Some(u) = UNTRACKED.get_ptr_mut(0) {
                add_percpu(u, ingress, len);
            }
        }
    }
}

/// Charges one skb to its socket's target.
///
/// Attribution comes from the socket (its storage), never from `current`: egress runs in
/// softirq for ACKs and retransmits, and ingress runs in whatever context received it. One
/// socket-storage lookup for every socket, a target's or not. `--all` is not counted here
/// (node.rs).
#[inline(always)]
fn count(ctx: &SkBuffContext, dir: Dir) -> i32 {
    let skb: *mut __sk_buff = ctx.skb.skb;
    // SAFETY: ctx field reads the verifier rewrites (`skb->sk`, PTR_TO_SOCK_COMMON_OR_NULL).
    let bpf_sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if bpf_sk.is_null() {
        return ALLOW;
    }
    let ingress = dir == Dir::In;
    if ingress && let Some(port) = health::listening(bpf_sk) {
        // Issue 29: a listener's packet names the owner of the request the kernel makes next
        // (none for a listener no target owns: that clears what another listener left).
        // Whatever the interface: health is not filtered by `-i`. Listeners' packets only
        // (SYNs, final ACKs): one field load per packet to know.
        let st = state_of(bpf_sk.cast());
        let slot = if st.is_null() {
            procnetmon2_common::health::NO_SLOT
        } else {
            // SAFETY: `st` is a live storage value.
            unsafe { (*st).slot }
        };
        health::hand_off_target(port, slot);
    }
    // SAFETY: ctx field read.
    let ifindex = unsafe { (*skb).ifindex };
    // With -i, a packet counts only through a chosen interface. `skb->ifindex` is the device
    // in the socket's own namespace on both directions: pair it with that namespace's cookie,
    // since ifindex values repeat across namespaces. The cookie comes from the helper where
    // cgroup_skb has it (~6.15), else from the socket's stamp (`stamped_filter`).
    let stamped_filter = filter_on() && !netns_helper_on();
    if filter_on() && netns_helper_on() {
        // SAFETY: helper on the program context.
        let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
        if !iface_pass(netns, ifindex, ingress, u64::from(ctx.len())) {
            return ALLOW;
        }
    }
    let sk: *mut c_void = bpf_sk.cast();
    let len = u64::from(ctx.len());
    let st = state_of(sk);
    if st.is_null() {
        return ALLOW; // not a target's socket
    }
    // SAFETY: `st` is a live storage value.
    if stamped_filter && !iface_pass(unsafe { (*st).netns_cookie }, ifindex, ingress, len) {
        return ALLOW;
    }
    // SAFETY: `st` is a live storage value (fields one by one: it holds a spin lock).
    let (slot, proto, flags) = unsafe { ((*st).slot, (*st).proto, (*st).flags) };
    // Issue 17: remote hosts, classes, DNS (no-op unless asked for). With classes the class
    // array holds the target's totals: `TARGET_TOTALS` only takes what it did not.
    if !dest::count(ctx, st, slot, proto, ingress, len) {
        add_totals(slot, proto, ingress, len);
    }
    // Issue 29: the socket's smoothed RTT, once per epoch (a compare per packet otherwise).
    health::sample_target_rtt(bpf_sk, st, proto);

    let mut want = 0;
    if flags & FLAG_IFACE_OK == 0 {
        want |= FLAG_IFACE_OK; // first packet through a chosen interface
    }
    if proto == PROTO_UDP && dir == Dir::Out && flags & FLAG_UDP_ACTIVE == 0 {
        want |= FLAG_UDP_ACTIVE; // a sending UDP socket is bound (autobind)
    }
    if want != 0 {
        mark(st, want);
    }
    if proto == PROTO_TCP && flags & FLAG_ARMED == 0 && flags & FLAG_ESTABLISHED != 0 {
        // A connection that predates the run: sock_ops callbacks cannot be armed on it, so
        // watch its state here (readable from any socket, `bpf_sock.state`).
        // SAFETY: `state` is in the sock_common part of `struct bpf_sock`; `bpf_sk` was
        // null-checked above (reading `skb->sk` again would give a new unchecked pointer).
        let state = unsafe { (*bpf_sk).state };
        if state != u32::from(TCP_ESTABLISHED) {
            uncount(st);
        }
    }
    if details_on() {
        record_packet(ctx, skb, st, ingress, len);
    }
    ALLOW
}

/// Whether (namespace, ifindex) is a chosen interface (`IFACES`). With `--all`, the agent also
/// puts in every other interface of each namespace it resolved (as `IFACE_SKIP`), so a key
/// that is absent is one it has not resolved yet (a pod's namespace or its `eth0` appeared
/// mid-run): its bytes are charged to `UNTRACKED`, never dropped silently, and the key is
/// handed to the agent (`NEW_IFACES`) to resolve.
#[inline(always)]
fn iface_pass(netns_cookie: u64, ifindex: u32, ingress: bool, len: u64) -> bool {
    let key = IfaceKey {
        netns_cookie,
        ifindex,
        _pad: 0,
    };
    // SAFETY: read-only lookup; the value is copied out at once.
    match unsafe { IFACES.get(key) } {
        Some(&v) => v == IFACE_COUNT,
        None => {
            if all_on() {
                if let Some(u) = UNTRACKED.get_ptr_mut(0) {
                    add_percpu(u, ingress, len);
                }
                // SAFETY: read-only lookup. Insert once (BPF_NOEXIST): the agent clears it.
                if unsafe { NEW_IFACES.get(key) }.is_none() {
                    let _ = NEW_IFACES.insert(key, 1, 1);
                }
            }
            false
        }
    }
}

/// `--details`: per-connection bytes, and the local address once the socket has one.
#[inline(always)]
fn record_packet(
    ctx: &SkBuffContext,
    skb: *mut __sk_buff,
    st: *mut procnetmon2_common::sock::SockState,
    ingress: bool,
    len: u64,
) {
    // SAFETY: helper on the program context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: `st` is live.
    let state = if unsafe { (*st).proto } == PROTO_TCP {
        TCP_ESTABLISHED
    } else {
        UDP_OPEN
    };
    let r = record_of(cookie, st, state);
    if r.is_null() {
        return;
    }
    // SAFETY: `r` is a live map value shared by all CPUs (atomic adds); its first four
    // fields are a `Counters`.
    unsafe {
        add_shared(r.cast(), ingress, len);
        (*r).iface_ok = 1;
        if (*r).local_port == 0 {
            let s = &*skb;
            (*r).local_port = s.local_port as u16;
            (*r).remote_port = u16::from_be((s.remote_port >> 16) as u16 | s.remote_port as u16);
            if (*r).family == 2 {
                (*r).local_ip[0] = s.local_ip4;
                (*r).remote_ip[0] = s.remote_ip4;
            } else {
                copy_ip6(&mut (*r).local_ip, &raw const s.local_ip6);
                copy_ip6(&mut (*r).remote_ip, &raw const s.remote_ip6);
            }
        }
    }
}

/// Ingress: every skb delivered to a socket in the attached cgroup subtree.
#[cgroup_skb]
pub fn pnm_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, Dir::In)
}

/// Egress: every skb a socket in the attached cgroup subtree sends (before GSO segmentation
/// and IP fragmentation).
#[cgroup_skb]
pub fn pnm_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, Dir::Out)
}

/// cgroup/sock_create: stamp the owner of each new inet socket a target creates.
///
/// Here, and only here among the hooks, `current` is reliably the creating process.
/// Accepted sockets never pass here: they inherit the listener's stamp (BPF_F_CLONE).
#[cgroup_sock(sock_create)]
pub fn pnm_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: helper without arguments.
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let Some(slot) = target_slot(tgid) else {
        return ALLOW;
    };
    // SAFETY: `ctx.sock` is the program context (a `struct bpf_sock`).
    let (protocol, family) = unsafe { ((*ctx.sock).protocol, (*ctx.sock).family) };
    // The namespace, for the interface filter on kernels whose cgroup_skb lacks the helper
    // (cgroup/sock has it from 5.8). An accepted socket inherits it with the stamp.
    let netns_cookie = if filter_on() {
        // SAFETY: helper on the program context (the socket).
        unsafe { bpf_get_netns_cookie(ctx.sock.cast()) }
    } else {
        0
    };
    let init = SockState {
        tgid,
        slot,
        proto: proto_index(protocol),
        family: family as u8,
        netns_cookie,
        flags: initial_flags(),
        ..SockState::default()
    };
    // cgroup/sock passes its context as the socket (bpf_sk_storage_get_cg_sock_proto).
    // The one allocation of a socket's life, for targets only. On failure this socket goes
    // uncounted: say so.
    if maps::SOCK_STATE
        .get_or_create(ctx.sock.cast(), &init)
        .is_null()
    {
        untracked_event(0);
    }
    ALLOW
}

/// The target slot of the current process: by its tgid (named targets and their children),
/// else by the deepest of its cgroup ancestors that is a whole-cgroup target.
///
/// One lookup in the common cases: `-p` looks at `TARGET_PIDS` only; spawn mode, `--cgroup`
/// and `--container` skip it (no process targets) and find the process in the target cgroup
/// itself (its own cgroup is the deepest candidate). Only a process in a descendant of a
/// target cgroup, or in no target at all, walks its ancestors.
#[inline(always)]
fn target_slot(tgid: u32) -> Option<u32> {
    if pid_targets_on() {
        // SAFETY: read-only lookup; the value is copied out at once.
        if let Some(&slot) = unsafe { TARGET_PIDS.get(tgid) } {
            return Some(slot);
        }
    }
    if !cgroup_targets_on() {
        return None;
    }
    // SAFETY: helper without arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only lookup.
    if let Some(&slot) = unsafe { CGROUP_TARGETS.get(own) } {
        return Some(slot);
    }
    let mut found = None;
    // Bounded loop (verifier): ancestors from the root down to MAX_CGROUP_LEVEL.
    for level in 0..MAX_CGROUP_LEVEL {
        // SAFETY: helper with a plain integer argument; 0 past the current cgroup's level.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 {
            break;
        }
        // SAFETY: read-only lookup.
        if let Some(&slot) = unsafe { CGROUP_TARGETS.get(id) } {
            found = Some(slot);
        }
    }
    found
}

/// raw_tp/sched_process_fork: a process forked by a member of a target joins that target
/// (nginx workers, a shell's commands, however briefly they live). Runs in the parent
/// (`current`); a new thread shares its tgid and is already covered. Needs no kprobes and no
/// tracefs. Arguments: (struct task_struct *parent, struct task_struct *child).
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn pnm_fork(ctx: RawTracePointContext) -> i32 {
    if !children_on() {
        return 0;
    }
    // SAFETY: helper without arguments.
    let parent = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    // SAFETY: read-only lookup.
    let Some(&slot) = (unsafe { TARGET_PIDS.get(parent) }) else {
        return 0;
    };
    let child: *const u8 = ctx.arg(1);
    let (pid_off, tgid_off) = task_offsets();
    // SAFETY: probe reads of two int fields of the child task at offsets taken from the
    // running kernel's BTF; a failed read returns an error, never faults.
    let (pid, tgid) = unsafe {
        (
            bpf_probe_read_kernel(child.add(pid_off as usize).cast::<i32>()),
            bpf_probe_read_kernel(child.add(tgid_off as usize).cast::<i32>()),
        )
    };
    if let (Ok(pid), Ok(tgid)) = (pid, tgid)
        && pid == tgid
        && tgid > 0
        && TARGET_PIDS.insert(tgid as u32, slot, 0).is_err()
    {
        untracked_event(1);
    }
    0
}

/// Counts an event that leaves traffic unattributable (see `UNTRACKED_EVENTS`).
#[inline(always)]
fn untracked_event(index: u32) {
    if let Some(c) = maps::UNTRACKED_EVENTS.get_ptr_mut(index) {
        atomic_add(c, 1);
    }
}

/// raw_tp/cgroup_attach_task: a process was moved to another cgroup (a write to
/// `cgroup.procs` or `cgroup.threads`, by itself or anyone; also on cgroup v1 hierarchies).
/// When it is a target's, the agent is told at once through `MOVES` (its loop wakes on the
/// ring buffer), so it attaches at the new cgroup and stamps the process's sockets in that
/// same turn: the sockets the process makes there are invisible to every program until then.
///
/// Arguments, the same from 5.0 to 6.18 (include/trace/events/cgroup.h, `cgroup_migrate`
/// class; `btf_trace_cgroup_attach_task` in the running kernel's BTF): (struct cgroup
/// *dst_cgrp, const char *path, struct task_struct *task, bool threadgroup). It fires after
/// the migration succeeded, once per call (for the group leader when a whole process moves).
/// The task's tgid is read at the offset taken from the kernel's BTF, as for forks.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn pnm_cgroup_attach(ctx: RawTracePointContext) -> i32 {
    let task: *const u8 = ctx.arg(2);
    let (_, tgid_off) = task_offsets();
    // SAFETY: a probe read of an int field of the task at the BTF offset; a failed read
    // returns an error, never faults.
    let Ok(tgid) = (unsafe { bpf_probe_read_kernel(task.add(tgid_off as usize).cast::<i32>()) })
    else {
        return 0;
    };
    let tgid = tgid as u32;
    // SAFETY: read-only lookup.
    let Some(&slot) = (unsafe { TARGET_PIDS.get(tgid) }) else {
        return 0;
    };
    let ev = procnetmon2_common::moves::MoveEvent {
        ns: now_ns(),
        tgid,
        slot,
    };
    // Force the wake-up: the agent clears its readiness before it reads the ring, and a move
    // is rare enough that a notification each costs nothing.
    if maps::MOVES.output(ev, BPF_RB_FORCE_WAKEUP).is_err() {
        untracked_event(2);
    }
    0
}

/// `BPF_RB_FORCE_WAKEUP` (include/uapi/linux/bpf.h).
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// raw_tp/sched_process_exit: forget an exiting process (when its group leader exits), so a
/// later process reusing the PID is never taken for a target member.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn pnm_exit(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: helper without arguments.
    let pid_tgid = unsafe { bpf_get_current_pid_tgid() };
    let (tgid, pid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if pid == tgid {
        let _ = TARGET_PIDS.remove(tgid);
    }
    0
}

/// cgroup/sock_release: the process closed the socket (it runs in inet_release, before the
/// protocol's close, so queued data and the FIN still leave afterwards and still count).
#[cgroup_sock(sock_release)]
pub fn pnm_sock_release(ctx: SockContext) -> i32 {
    let st = state_of(ctx.sock.cast());
    if st.is_null() {
        return ALLOW;
    }
    // Issue 29: a connect the process abandons from here on is not the network's failure.
    health::target_release(st);
    uncount(st);
    if details_on() {
        // SAFETY: helper on the program context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        if let Some(r) = maps::CONNS.get_ptr_mut(cookie) {
            // SAFETY: live map value.
            unsafe {
                (*r).close_ns = now_ns();
                if (*r).proto != PROTO_TCP {
                    (*r).state = TCP_CLOSE;
                }
            }
        }
    }
    ALLOW
}

/// sock_ops op codes (include/uapi/linux/bpf.h).
const OP_TIMEOUT_INIT: u32 = 1;
const OP_TCP_CONNECT: u32 = 3;
const OP_ACTIVE_ESTABLISHED: u32 = 4;
const OP_PASSIVE_ESTABLISHED: u32 = 5;
const OP_RETRANS: u32 = 9;
const OP_STATE: u32 = 10;
const OP_LISTEN: u32 = 11;
const OP_RTT: u32 = 12;
/// `TCP_LISTEN`, `TCP_SYN_SENT` (include/net/tcp_states.h).
const TCP_LISTEN: u8 = 10;
const TCP_SYN_SENT: u32 = 2;

/// sock_ops: TCP lifetimes and health of targets' sockets. `TCP_CONNECT_CB` arms the state
/// and retransmit callbacks on a target's connecting socket (connect failures, issue 29);
/// established callbacks arm them on each new connection (and, with `--details`, the RTT
/// callback). Sockets that are no target's are left alone (`--all` has programs of its own,
/// node.rs). `current` here is meaningless (passive-established reports the client): never
/// used.
#[sock_ops]
pub fn pnm_sockops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    // SAFETY: ctx field read; null unless the socket is a full socket.
    let sk: *mut c_void = unsafe { (*ops).__bindgen_anon_2.sk }.cast();
    let op = ctx.op();
    if sk.is_null() {
        // A request mini-socket (an incoming handshake): no storage, no callback flags.
        if op == OP_TIMEOUT_INIT {
            health::request_made(&ctx, true);
        }
        return 1;
    }
    let rtt_details = if details_on() { health::CB_RTT } else { 0 };
    match op {
        OP_TCP_CONNECT => {
            if !state_of(sk).is_null() {
                health::arm(&ctx, health::CB_STATE | health::CB_RETRANS | rtt_details);
            }
        }
        OP_ACTIVE_ESTABLISHED | OP_PASSIVE_ESTABLISHED | OP_LISTEN => {
            let st = state_of(sk);
            if st.is_null() {
                return 1;
            }
            if op == OP_PASSIVE_ESTABLISHED {
                health::accepted(&ctx, health::target_owner(st));
            }
            established(&ctx, st, op, rtt_details);
        }
        OP_STATE => {
            // Into ESTABLISHED (an active connect armed at TCP_CONNECT_CB, whose established
            // callback comes next; an accepted socket leaving SYN_RECV, whose came just
            // before): neither the gauge nor health has anything to do here, and the storage
            // lookup is skipped; `--details` records the state.
            if ctx.arg(1) == u32::from(TCP_ESTABLISHED) && !details_on() {
                return 1;
            }
            let st = state_of(sk);
            if st.is_null() {
                return 1;
            }
            if let Some(ev) = health::handshake_failure(&ctx) {
                let owner = health::target_owner(st);
                health::charge_failure(&ctx, ev, owner, health::target_released(st));
            }
            state_changed(&ctx, st);
        }
        OP_RETRANS => {
            let st = state_of(sk);
            if !st.is_null() {
                health::retransmitted(&ctx, health::target_owner(st));
                if details_on() {
                    record_state(&ctx, st);
                }
            }
        }
        // Armed only with `--details`: the record's RTT (health samples on the packet path).
        OP_RTT if details_on() => {
            let st = state_of(sk);
            if !st.is_null() {
                record_state(&ctx, st);
            }
        }
        _ => {}
    }
    1
}

/// A target's socket is established (or listening): its gauge state, the callbacks its
/// connection needs, and with `--details` its record.
#[inline(always)]
fn established(
    ctx: &SockOpsContext,
    st: *mut procnetmon2_common::sock::SockState,
    op: u32,
    rtt_details: i32,
) {
    if op == OP_LISTEN {
        if details_on() {
            sockops_record(ctx, st, TCP_LISTEN);
        }
        return;
    }
    let want = health::CB_STATE | health::CB_RETRANS | rtt_details;
    let flags = ctx.cb_flags() as i32;
    // Armed already at TCP_CONNECT_CB on the active side: no helper call then.
    let armed = flags & want == want || ctx.set_cb_flags(flags | want).is_ok();
    let bits = if armed {
        FLAG_ESTABLISHED | FLAG_ARMED
    } else {
        FLAG_ESTABLISHED
    };
    if op == OP_PASSIVE_ESTABLISHED {
        accepted(st, bits);
    } else {
        mark(st, bits);
    }
    if details_on() {
        sockops_record(ctx, st, TCP_ESTABLISHED);
    }
}

/// State callback on a target's socket: the gauge, and with `--details` its record.
#[inline(always)]
fn state_changed(ctx: &SockOpsContext, st: *mut procnetmon2_common::sock::SockState) {
    let (old_state, new_state) = (ctx.arg(0), ctx.arg(1));
    // A connect that failed (SYN_SENT → CLOSE) was never in the gauge: leaving its state as
    // it is lets the process connect the same socket again and be counted then.
    let never_established = old_state == TCP_SYN_SENT && new_state == u32::from(TCP_CLOSE);
    if new_state != u32::from(TCP_ESTABLISHED) && !never_established {
        uncount(st);
    }
    if new_state != u32::from(TCP_ESTABLISHED) && !details_on() {
        // Only the first change out of ESTABLISHED (or out of the handshake) matters here:
        // disarm, so the two or three later changes of a closing connection (FIN_WAIT2,
        // TIME_WAIT, CLOSE) do not run this program (~200 ns each per connection). The
        // retransmit callback stays. `--details` keeps them: its record takes the close
        // time at TCP_CLOSE. A socket connected again is armed again at its connect.
        let _ = ctx.set_cb_flags(ctx.cb_flags() as i32 & !health::CB_STATE);
    }
    if details_on() {
        let r = sockops_record(ctx, st, new_state as u8);
        if !r.is_null() && new_state == u32::from(TCP_CLOSE) {
            // SAFETY: live map value.
            unsafe { (*r).close_ns = now_ns() };
        }
    }
}

/// `--details`: refreshes a target's record on an RTT or retransmit callback.
#[inline(always)]
fn record_state(ctx: &SockOpsContext, st: *mut procnetmon2_common::sock::SockState) {
    // SAFETY: ctx field read.
    let state = unsafe { (*ctx.ops).state } as u8;
    sockops_record(ctx, st, state);
}

/// Creates or refreshes the `--details` record from a sock_ops context.
#[inline(always)]
fn sockops_record(
    ctx: &SockOpsContext,
    st: *mut procnetmon2_common::sock::SockState,
    state: u8,
) -> *mut procnetmon2_common::conn::ConnRecord {
    // SAFETY: helper on the program context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let r = record_of(cookie, st, state);
    if r.is_null() {
        return r;
    }
    let ops = ctx.ops;
    // SAFETY: `r` is a live map value; ctx field reads.
    unsafe {
        (*r).state = state;
        (*r).srtt_us = (*ops).srtt_us >> 3; // tp->srtt_us is stored << 3
        (*r).retrans = (*ops).total_retrans;
        (*r).local_port = (*ops).local_port as u16;
        // remote_port: network order, in the upper 16 bits on this kernel.
        let rp = (*ops).remote_port;
        (*r).remote_port = u16::from_be(if rp > 0xffff {
            (rp >> 16) as u16
        } else {
            rp as u16
        });
        if (*ops).family == 2 {
            (*r).local_ip[0] = (*ops).local_ip4;
            (*r).remote_ip[0] = (*ops).remote_ip4;
        } else {
            copy_ip6(&mut (*r).local_ip, &raw const (*ops).local_ip6);
            copy_ip6(&mut (*r).remote_ip, &raw const (*ops).remote_ip6);
        }
    }
    r
}

/// A UDP socket became bound (post_bind) or connected/used (connect, sendmsg).
#[inline(always)]
fn udp_active(sk: *mut c_void, protocol: u32) {
    if proto_index(protocol) != PROTO_UDP {
        return;
    }
    let st = state_of(sk);
    if !st.is_null() {
        mark(st, FLAG_UDP_ACTIVE);
    }
}

#[cgroup_sock(post_bind4)]
pub fn pnm_post_bind4(ctx: SockContext) -> i32 {
    // SAFETY: ctx field read.
    udp_active(ctx.sock.cast(), unsafe { (*ctx.sock).protocol });
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn pnm_post_bind6(ctx: SockContext) -> i32 {
    // SAFETY: ctx field read.
    udp_active(ctx.sock.cast(), unsafe { (*ctx.sock).protocol });
    ALLOW
}

/// `v6` must be a constant per program: a connect4 program may not even read `user_ip6`
/// ("invalid bpf_context access off=8 size=4"), so each family gets its own copy.
#[inline(always)]
fn sock_addr_udp(ctx: &SockAddrContext, connect: bool, v6: bool) {
    let a = ctx.sock_addr;
    // SAFETY: ctx field reads.
    let (sk, protocol) = unsafe { ((*a).__bindgen_anon_1.sk.cast::<c_void>(), (*a).protocol) };
    if sk.is_null() {
        return;
    }
    udp_active(sk, protocol);
    if connect && details_on() && proto_index(protocol) == PROTO_UDP {
        let st = state_of(sk);
        if st.is_null() {
            return;
        }
        // SAFETY: helper on the program context.
        let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
        let r = record_of(cookie, st, UDP_OPEN);
        if !r.is_null() {
            // SAFETY: live map value; ctx field reads.
            unsafe {
                (*r).remote_port = u16::from_be((*a).user_port as u16);
                if v6 {
                    copy_ip6(&mut (*r).remote_ip, &raw const (*a).user_ip6);
                } else {
                    (*r).remote_ip[0] = (*a).user_ip4;
                }
            }
        }
    }
}

#[cgroup_sock_addr(connect4)]
pub fn pnm_connect4(ctx: SockAddrContext) -> i32 {
    sock_addr_udp(&ctx, true, false);
    ALLOW
}

#[cgroup_sock_addr(connect6)]
pub fn pnm_connect6(ctx: SockAddrContext) -> i32 {
    sock_addr_udp(&ctx, true, true);
    ALLOW
}

#[cgroup_sock_addr(sendmsg4)]
pub fn pnm_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock_addr_udp(&ctx, false, false);
    ALLOW
}

#[cgroup_sock_addr(sendmsg6)]
pub fn pnm_sendmsg6(ctx: SockAddrContext) -> i32 {
    sock_addr_udp(&ctx, false, true);
    ALLOW
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
