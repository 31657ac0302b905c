//! Where the bytes go (issue 17): per-remote-host totals, destination classes and DNS answers,
//! called once per counted skb from `count` in main.rs after the target is known.
//!
//! The remote address is read from the packet's own IP header (source on ingress,
//! destination on egress), not from `skb->remote_ip*`: those come from the socket and are zero
//! for an unconnected UDP socket, whose peers must be counted too. cgroup_skb sees the skb
//! from its IP header on both directions.
//!
//! Every knob is off by default; with all three off this is one branch per packet. Only plain
//! atomic adds (XADD) and per-CPU maps: nothing here needs the newer atomics (5.12).

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_F_CURRENT_CPU,
    btf_maps::{HashMap, lpm_trie::Key},
    helpers::generated::{bpf_get_socket_cookie, bpf_perf_event_output},
    programs::SkBuffContext,
};
use procnetmon2_common::{
    dest::{
        CLASS_DEFAULT, CLASS_NONE, DNS_ANSWER, DNS_ANSWER_WITHIN_NS, DNS_BUDGET, DNS_QUERY,
        DNS_WINDOW_NS, DestKey, DestOther, DnsHeader, DnsPendingKey, DnsState, MAX_DNS_PACKET,
        NodeDestKey, V4_MAPPED_PREFIX,
    },
    sock::{PROTO_UDP, SockState},
    traffic::Counters,
};

use crate::{
    maps::{
        CLASS_CACHE, CLASS_CACHE_SLOTS, CLASS_CIDRS, CLASS_LOST, CLASS_TOTALS, DEST_OTHER,
        DEST_TOTALS, DNS_EVENTS, DNS_PENDING, DNS_STATE, NODE_DEST_LOST, NODE_DEST_OTHER,
        NODE_DEST_TOTALS,
    },
    track::{add_percpu, add_shared, atomic_add, now_ns},
};

/// Knob: look each packet's remote address up in `CLASS_CIDRS` (`--class`, `--classes`).
#[unsafe(no_mangle)]
static PNM_CLASSES: u8 = 0;
/// Knob: classes configured (the stride of `CLASS_TOTALS`).
#[unsafe(no_mangle)]
static PNM_CLASS_COUNT: u32 = 0;
/// Knob: keep per-remote-host totals (`--destinations`).
#[unsafe(no_mangle)]
static PNM_DESTS: u8 = 0;
/// Knob: most remote hosts per target kept apart; the rest go to the target's `other`.
#[unsafe(no_mangle)]
static PNM_DEST_CAP: u64 = 0;
/// Knob: keep per-remote-host totals per cgroup on `--all` (`--all --destinations`).
#[unsafe(no_mangle)]
static PNM_NODE_DESTS: u8 = 0;
/// Knob: hand targets' DNS queries, and the answers that match them, up to the agent.
#[unsafe(no_mangle)]
static PNM_DNS: u8 = 0;

/// `BPF_NOEXIST`: create only (a racing CPU may have created the entry first).
const BPF_NOEXIST: u64 = 1;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const DNS_PORT: u16 = 53;

#[inline(always)]
fn knob_u8(k: *const u8) -> bool {
    // SAFETY: a read-only global the loader patches; volatile keeps the load.
    unsafe { core::ptr::read_volatile(k) != 0 }
}

/// Charges one skb of target `slot` (socket state `st`, or null on the cgroup path, which has
/// none: then the class comes from the per-CPU cache) to its remote host and class, and
/// hands DNS queries and their answers up. Returns whether the packet went into `CLASS_TOTALS`: with classes on,
/// the class array *is* the target's totals (the agent sums a target's classes and adds its
/// `TARGET_TOTALS` entry), so the caller charges `TARGET_TOTALS` only when this returns false
/// (classes off, not an IP packet, or a slot past the array). One per-CPU add per packet
/// instead of two: that second add was most of what classes cost.
#[inline(always)]
pub fn count(
    ctx: &SkBuffContext,
    st: *mut SockState,
    slot: u32,
    proto: u8,
    ingress: bool,
    len: u64,
) -> bool {
    let classes = knob_u8(&raw const PNM_CLASSES);
    let dests = knob_u8(&raw const PNM_DESTS);
    let dns = knob_u8(&raw const PNM_DNS) && proto == PROTO_UDP;
    if !classes && !dests && !dns {
        return false;
    }
    let Some((family, addr)) = remote_of(ctx, ingress) else {
        return false;
    };
    let mut charged = false;
    let class = if classes {
        let class = if st.is_null() {
            class_node_cached(family, &addr)
        } else {
            class_cached(st, family, &addr)
        };
        charged = add_class(slot, proto, class, ingress, len);
        class
    } else {
        CLASS_NONE
    };
    if dests {
        add_dest(slot, family, addr, class, ingress, len);
    }
    if dns {
        dns_packet(ctx, slot, family, addr, ingress, len);
    }
    charged
}

/// `--all`: the class of the packet's remote address for `CGROUP_TOTALS`, or `CLASS_NONE`
/// (classes off, or not an IP packet); with `--destinations`, charges the packet to
/// (`cgroup_id`, remote address). The node path looks no socket up, so the class comes from
/// the per-CPU cache of recent lookups (`class_node_cached`), else the trie. With both knobs
/// off this is two branches the verifier prunes.
#[inline(always)]
pub fn node(ctx: &SkBuffContext, cgroup_id: u64, ingress: bool, len: u64) -> u8 {
    let classes = knob_u8(&raw const PNM_CLASSES);
    let dests = knob_u8(&raw const PNM_NODE_DESTS);
    if !classes && !dests {
        return CLASS_NONE;
    }
    let Some((family, addr)) = remote_of(ctx, ingress) else {
        return CLASS_NONE;
    };
    let class = if classes {
        class_node_cached(family, &addr)
    } else {
        CLASS_NONE
    };
    if dests {
        add_node_dest(cgroup_id, family, addr, class, ingress, len);
    }
    class
}

/// Per-(cgroup, remote host) totals, at most `PNM_DEST_CAP` hosts per cgroup: past its cap
/// (or with the map full) a cgroup's traffic goes to its own `other`, so a chatty workload
/// fills its own room only. Only the plain atomic add: the cap is checked racily, as for
/// targets (a few over under races, never more than the CPU count).
#[inline(always)]
fn add_node_dest(cgroup_id: u64, family: u8, addr: [u32; 4], class: u8, ingress: bool, len: u64) {
    let key = NodeDestKey {
        cgroup_id,
        addr,
        family,
        class,
        _pad: [0; 6],
    };
    if let Some(c) = NODE_DEST_TOTALS.get_ptr_mut(key) {
        add_shared(c, ingress, len);
        return;
    }
    let other = match NODE_DEST_OTHER.get_ptr_mut(cgroup_id) {
        Some(o) => o,
        None => {
            // BPF_NOEXIST: a racing CPU may have created it; then use theirs.
            let _ = NODE_DEST_OTHER.insert(cgroup_id, DestOther::default(), BPF_NOEXIST);
            match NODE_DEST_OTHER.get_ptr_mut(cgroup_id) {
                Some(o) => o,
                None => {
                    // More cgroups than the map holds: counted, never silent.
                    if let Some(l) = NODE_DEST_LOST.get_ptr_mut(0) {
                        add_percpu(l, ingress, len);
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: `other` is a live map value.
    unsafe { charge_new_host(&NODE_DEST_TOTALS, key, other, ingress, len) };
}

/// (family, remote address) from the IP header: IPv4 in `[0]`, network order. Read directly
/// from the skb's linear data (headers always are), with `bpf_skb_load_bytes` as the fallback:
/// two helper calls per packet were most of this module's cost.
#[inline(always)]
fn remote_of(ctx: &SkBuffContext, ingress: bool) -> Option<(u8, [u32; 4])> {
    let skb = ctx.skb.skb;
    // SAFETY: ctx field reads (rewritten by the verifier into packet pointers).
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    if data + 40 <= end {
        // SAFETY: 40 bytes (an IPv6 header, more than an IPv4 one) are inside the packet.
        unsafe {
            let first = *(data as *const u8);
            return match first >> 4 {
                4 => {
                    let off = if ingress { 12 } else { 16 };
                    let a = core::ptr::read_unaligned((data + off) as *const u32);
                    Some((AF_INET, [a, 0, 0, 0]))
                }
                6 => {
                    let off = if ingress { 8 } else { 24 };
                    let a = core::ptr::read_unaligned((data + off) as *const [u32; 4]);
                    Some((AF_INET6, a))
                }
                _ => None,
            };
        }
    }
    let first: u8 = ctx.load(0).ok()?;
    match first >> 4 {
        4 => {
            let a: u32 = ctx.load(if ingress { 12 } else { 16 }).ok()?;
            Some((AF_INET, [a, 0, 0, 0]))
        }
        6 => {
            let a: [u32; 4] = ctx.load(if ingress { 8 } else { 24 }).ok()?;
            Some((AF_INET6, a))
        }
        _ => None,
    }
}

/// The most specific class whose prefix holds `addr`; `CLASS_DEFAULT` (internet) otherwise.
#[inline(always)]
fn class_of(family: u8, addr: &[u32; 4]) -> u8 {
    let mut data = [0u8; 16];
    if family == AF_INET {
        data[..12].copy_from_slice(&V4_MAPPED_PREFIX);
        data[12..].copy_from_slice(&addr[0].to_ne_bytes());
    } else {
        for (i, w) in addr.iter().enumerate() {
            data[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
    }
    match CLASS_CIDRS.get(&Key::new(128, data)) {
        Some(&c) => c as u8,
        None => CLASS_DEFAULT,
    }
}

/// The class of `addr` for a socket without storage (`--all`, whole-cgroup targets on the
/// cgroup path): from this CPU's small
/// direct-mapped cache of IPv4 lookups (`CLASS_CACHE`), else from the trie, then cached. The
/// classes never change during a run, so a cached class never goes stale; a busy node talking
/// to more than `CLASS_CACHE_SLOTS` hosts at once only misses more often. IPv6: the trie.
#[inline(always)]
fn class_node_cached(family: u8, addr: &[u32; 4]) -> u8 {
    if family != AF_INET {
        return class_of(family, addr);
    }
    // Fibonacci hashing: the top bits of the product spread neighbouring addresses.
    let slot = addr[0].wrapping_mul(0x9e37_79b9) >> (32 - CLASS_CACHE_SLOTS.trailing_zeros());
    let Some(e) = CLASS_CACHE.get_ptr_mut(slot) else {
        return class_of(family, addr);
    };
    let want = (u64::from(addr[0]) << 32) | CLASS_CACHED;
    // SAFETY: this CPU's array value; one aligned 64-bit load and store, so a program
    // interrupting this one on the same CPU sees an old or a new pair, never half of each.
    unsafe {
        let c = core::ptr::read_volatile(e);
        if c & !0xff == want {
            return c as u8;
        }
        let class = class_of(family, addr);
        core::ptr::write_volatile(e, want | u64::from(class));
        class
    }
}

/// `SockState::class_v4` bit 8: the cache holds a lookup.
const CLASS_CACHED: u64 = 1 << 8;

/// The class of `addr` for this socket: from the socket's cache when its last IPv4 lookup was
/// for the same address (always, for a connected socket), else from the trie, then cached.
/// IPv6 is looked up every time: 16 bytes cannot be swapped in one store, and a torn cache
/// could charge the wrong class.
#[inline(always)]
fn class_cached(st: *mut SockState, family: u8, addr: &[u32; 4]) -> u8 {
    if family != AF_INET {
        return class_of(family, addr);
    }
    let want = (u64::from(addr[0]) << 32) | CLASS_CACHED;
    // SAFETY: `st` is a live storage value; one aligned 64-bit load and store, so a racing
    // CPU sees an old or a new (address, class) pair, never half of each.
    unsafe {
        let field = &raw mut (*st).class_v4;
        let c = core::ptr::read_volatile(field);
        if c & !0xff == want {
            return c as u8;
        }
        let class = class_of(family, addr);
        core::ptr::write_volatile(field, want | u64::from(class));
        class
    }
}

/// Adds the packet to (slot, class); false when the array has no such entry (then the caller
/// charges `TARGET_TOTALS`, so the target's total still holds).
#[inline(always)]
fn add_class(slot: u32, proto: u8, class: u8, ingress: bool, len: u64) -> bool {
    // SAFETY: read-only global.
    let count = unsafe { core::ptr::read_volatile(&raw const PNM_CLASS_COUNT) };
    let entry = if u32::from(class) < count {
        CLASS_TOTALS.get_ptr_mut(slot.wrapping_mul(count).wrapping_add(u32::from(class)))
    } else {
        None
    };
    match entry {
        Some(t) => {
            add_percpu(
                // SAFETY: this CPU's value; the protocol index bounded for the verifier.
                unsafe { &raw mut (*t).by_proto[usize::from(proto).min(2)] },
                ingress,
                len,
            );
            true
        }
        // A slot or class past the array the agent sized: reported, never silent.
        None => {
            if let Some(l) = CLASS_LOST.get_ptr_mut(0) {
                add_percpu(l, ingress, len);
            }
            false
        }
    }
}

/// Per-remote-host totals, at most `PNM_DEST_CAP` hosts per target; past the cap (or with the
/// map full) the traffic goes to the target's `other` bucket, so the sum always holds.
#[inline(always)]
fn add_dest(slot: u32, family: u8, addr: [u32; 4], class: u8, ingress: bool, len: u64) {
    let key = DestKey {
        addr,
        slot,
        family,
        class,
        _pad: [0; 2],
    };
    if let Some(c) = DEST_TOTALS.get_ptr_mut(key) {
        add_shared(c, ingress, len);
        return;
    }
    let Some(other) = DEST_OTHER.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: `other` is a live array value.
    unsafe { charge_new_host(&DEST_TOTALS, key, other, ingress, len) };
}

/// A packet to a host without an entry in `totals` yet: the entry is made while `other`'s
/// host count is under the cap (`--destinations-max`), else the packet goes to `other`. The
/// count is read racily: CPUs adding new hosts at the same instant may pass the cap by a few,
/// never by more than the CPU count (a fetching atomic would need 5.12).
///
/// # Safety
/// `other` points to a live map value.
#[inline(always)]
unsafe fn charge_new_host<K, const M: usize, const F: usize>(
    totals: &HashMap<K, Counters, M, F>,
    key: K,
    other: *mut DestOther,
    ingress: bool,
    len: u64,
) {
    // SAFETY: read-only global.
    let cap = unsafe { core::ptr::read_volatile(&raw const PNM_DEST_CAP) };
    // SAFETY: `other` is live (the caller's contract).
    if unsafe { (*other).hosts } < cap
        && totals
            .insert(&key, Counters::default(), BPF_NOEXIST)
            .is_ok()
    {
        // SAFETY: as above.
        atomic_add(unsafe { &raw mut (*other).hosts }, 1);
    }
    match totals.get_ptr_mut(&key) {
        Some(c) => add_shared(c, ingress, len),
        // SAFETY: as above; the first field is the counters.
        None => add_shared(unsafe { &raw mut (*other).counters }, ingress, len),
    }
}

/// A target's UDP datagram to port 53 (a query) or from port 53 (an answer): hands it (from
/// its IP header, at most `MAX_DNS_PACKET` bytes) to the agent, which parses and matches them.
/// Nothing is sent. Two bounds keep a flood from port 53 off the perf buffers:
/// - an answer is handed up only when the receiving socket sent a query to that server with
///   that transaction ID in the last `DNS_ANSWER_WITHIN_NS` (`DNS_PENDING`); any other
///   answer is counted as unmatched and dropped here, so its cost is one hash lookup;
/// - each target hands up at most `DNS_BUDGET` records per CPU per second; more are counted
///   as dropped, as are records a full perf buffer refused.
///
/// A query whose record was not handed up is not put in `DNS_PENDING`: its answer then
/// counts as unmatched, never as a name. IPv6 extension headers are not followed (the
/// verifier wants fixed offsets; resolvers send none): such a datagram is not DNS here.
#[inline(always)]
fn dns_packet(ctx: &SkBuffContext, slot: u32, family: u8, addr: [u32; 4], ingress: bool, len: u64) {
    let (proto_off, l4_off) = if family == AF_INET {
        let Ok(first) = ctx.load::<u8>(0) else {
            return;
        };
        (9, usize::from(first & 0x0f) * 4)
    } else {
        (6, 40)
    };
    if ctx.load::<u8>(proto_off) != Ok(17) {
        return;
    }
    // Source port of an answer, destination port of a query.
    match ctx.load::<u16>(if ingress { l4_off } else { l4_off + 2 }) {
        Ok(p) if u16::from_be(p) == DNS_PORT => {}
        _ => return,
    }
    let Ok(txid) = ctx.load::<u16>(l4_off + 8) else {
        return;
    };
    let Some(state) = DNS_STATE.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: helper on the program context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = DnsPendingKey {
        cookie,
        addr,
        txid,
        family,
        _pad: [0; 5],
    };
    let now = now_ns();
    if ingress {
        // SAFETY: read-only lookup; the value is copied out at once.
        match unsafe { DNS_PENDING.get(key) } {
            Some(&until) if now <= until => {}
            // SAFETY: `state` is this CPU's live array value.
            _ => return atomic_add(unsafe { &raw mut (*state).unmatched }, 1),
        }
    }
    // SAFETY: as above.
    if !take_budget(state, now) || !output(ctx, slot, cookie, now, ingress, len) {
        // SAFETY: as above.
        return atomic_add(unsafe { &raw mut (*state).dropped }, 1);
    }
    if !ingress {
        let _ = DNS_PENDING.insert(key, now + DNS_ANSWER_WITHIN_NS, 0);
    }
}

/// Takes one record from the target's budget on this CPU; false when it is spent.
#[inline(always)]
fn take_budget(state: *mut DnsState, now: u64) -> bool {
    // SAFETY: this CPU's live array value. A program interrupting this one on the same CPU
    // may race on the window: at worst a record more or less passes, the counts stay right.
    unsafe {
        if now.wrapping_sub((*state).window_ns) > DNS_WINDOW_NS {
            (*state).window_ns = now;
            (*state).used = 0;
        }
        if (*state).used >= DNS_BUDGET {
            return false;
        }
        (*state).used += 1;
    }
    true
}

/// Hands the packet up with its header; false when the perf buffer refused it (full).
/// The helper is called directly: aya-ebpf's `output` drops its result.
#[inline(always)]
fn output(ctx: &SkBuffContext, slot: u32, cookie: u64, now: u64, ingress: bool, len: u64) -> bool {
    let n = (len as u32).min(MAX_DNS_PACKET);
    let hdr = DnsHeader {
        ns: now,
        cookie,
        slot,
        len: n,
        kind: if ingress { DNS_ANSWER } else { DNS_QUERY },
        _pad: [0; 7],
    };
    // The upper 32 bits of the flags (BPF_F_CTXLEN_MASK) ask the helper to append `n` bytes
    // of the skb after `hdr`.
    let flags = (u64::from(n) << 32) | BPF_F_CURRENT_CPU;
    // SAFETY: the map is a perf event array in `.maps`; `hdr` lives across the call.
    let ret = unsafe {
        bpf_perf_event_output(
            ctx.as_ptr(),
            core::ptr::from_ref(&DNS_EVENTS).cast_mut().cast(),
            flags,
            core::ptr::from_ref(&hdr).cast_mut().cast(),
            core::mem::size_of::<DnsHeader>() as u64,
        )
    };
    ret == 0
}
