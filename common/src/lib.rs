//! The kernel/user ABI of procnetmon2: map keys, values and constants shared by the eBPF
//! programs (`procnetmon2-ebpf`) and the agent.
//!
//! Every type here is `#[repr(C)]`, has explicit padding and a size assertion, so a layout
//! change fails the build instead of corrupting a map. Richer types live in the agent.
#![no_std]

/// Targets: the processes an operator asked for, each given a small slot number.
pub mod target {
    /// Number of target slots (`TARGET_TOTALS` entries). Slot numbers are `0..MAX_TARGETS`.
    pub const MAX_TARGETS: u32 = 4096;
    /// Capacity of `TARGET_PIDS` (tgid → slot): targets plus the children they fork.
    pub const MAX_TARGET_PIDS: u32 = 65536;
}

/// Per-socket state kept in socket-local storage (`BPF_MAP_TYPE_SK_STORAGE`).
pub mod sock {
    /// Protocol index used in [`SockState::proto`] and [`crate::traffic::TargetTotals`].
    pub const PROTO_TCP: u8 = 0;
    /// UDP (and UDP-Lite) sockets.
    pub const PROTO_UDP: u8 = 1;
    /// Any other inet socket (raw, ICMP "ping" sockets, SCTP, …).
    pub const PROTO_OTHER: u8 = 2;
    /// Number of protocol buckets.
    pub const PROTO_COUNT: usize = 3;

    /// Maps an IP protocol number (`IPPROTO_*`) to a protocol index.
    #[inline(always)]
    pub const fn proto_index(ip_proto: u32) -> u8 {
        match ip_proto {
            6 => PROTO_TCP,
            17 | 136 => PROTO_UDP,
            _ => PROTO_OTHER,
        }
    }

    /// `struct bpf_spin_lock` (include/uapi/linux/bpf.h). The verifier finds the lock in a map
    /// value by this exact BTF type name, so the Rust name must stay the C one.
    #[repr(C)]
    #[allow(non_camel_case_types)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct bpf_spin_lock {
        /// Owned by the kernel; user-space reads and writes skip it.
        pub val: u32,
    }

    /// `SockState::counted`: not (yet) in the target's connection gauge.
    pub const COUNT_NOT_YET: u64 = 0;
    /// `SockState::counted`: included in the gauge now.
    pub const COUNT_ACTIVE: u64 = 1;
    /// `SockState::counted`: was counted or can no longer be (closed); never counted again.
    pub const COUNT_DONE: u64 = 2;

    /// `SockState::flags` bit: TCP socket is established (set by sock_ops, or by the agent
    /// for a connection that predates the run).
    pub const FLAG_ESTABLISHED: u64 = 1;
    /// `SockState::flags` bit: UDP socket is bound or connected.
    pub const FLAG_UDP_ACTIVE: u64 = 1 << 1;
    /// `SockState::flags` bit: traffic of this socket passes the interface filter (always set
    /// when there is no filter; set on its first matching packet otherwise).
    pub const FLAG_IFACE_OK: u64 = 1 << 2;
    /// `SockState::flags` bit: sock_ops state callbacks are armed on this socket. Not set for
    /// connections that predate the run (callbacks cannot be armed on them): the skb programs
    /// then watch their TCP state.
    pub const FLAG_ARMED: u64 = 1 << 3;

    /// Per-socket state of a target's socket: who owns it and where it stands in its target's
    /// connection gauge. Stored in `SOCK_STATE`, one socket storage created with `BPF_F_CLONE`
    /// so that a listener's state is copied to every socket it accepts (the owner follows);
    /// the copy's `flags` and `counted` are reset at passive-established. No per-socket byte
    /// counters: nothing reads them (targets are charged in `TARGET_TOTALS`, connections with
    /// `--details` in `CONNS`), and four atomic adds per packet were most of the hot path.
    ///
    /// Written by `pnm_sock_create` (new sockets of a target) and by the agent through a
    /// `pidfd_getfd` copy (sockets that predate the run). Any socket without it is not a
    /// target's: the packet path pays one storage lookup for every socket.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SockState {
        /// `FLAG_*` bits; set only under `lock`.
        pub flags: u64,
        /// Gauge state `COUNT_*`; changed only under `lock`, so a socket enters and leaves its
        /// target's connection gauge exactly once whichever hooks race. A spin lock rather
        /// than compare-and-swap: BPF cmpxchg and fetch-or arrived in Linux 5.12.
        pub counted: u64,
        /// Cookie of the socket's network namespace (`bpf_get_netns_cookie` at creation, or
        /// `SO_NETNS_COOKIE` from user space); set only with `-i`. Kernels before ~6.15 have
        /// no `bpf_get_netns_cookie` in cgroup_skb: there the interface filter reads this.
        /// Cloned with the rest, so an accepted socket carries its listener's namespace.
        pub netns_cookie: u64,
        /// Destination-class cache (issue 17): the last IPv4 remote address looked up in the
        /// LPM trie (upper 32 bits, network order), its class (bits 0–7) and bit 8 set when
        /// valid. One 64-bit word, so a racing CPU reads an old or a new pair, never a mix.
        /// A connected socket's remote never changes: one trie lookup per socket.
        pub class_v4: u64,
        /// Target slot the socket's traffic is charged to (index into `TARGET_TOTALS`).
        pub slot: u32,
        /// Process (tgid, in the initial pid namespace) that created the socket.
        pub tgid: u32,
        /// TCP: the epoch (the `RTT_EPOCH` map's value) in which the packet path last took this socket's
        /// smoothed RTT (one sample per socket per epoch). A plain store, not under `lock`:
        /// two CPUs racing may both sample once in the same epoch, which only bounds the
        /// rate at two.
        pub rtt_epoch: u32,
        /// Protocol index (`PROTO_*`).
        pub proto: u8,
        /// Address family (`AF_INET` = 2, `AF_INET6` = 10).
        pub family: u8,
        /// 1 once the process released the socket (`cgroup/sock_release`, which runs before
        /// TCP's close): a connect it gives up on is told apart from one the network ends.
        /// A u8 flag; a plain store (it only ever goes from 0 to 1).
        pub released: u8,
        /// Explicit padding; always zero.
        pub _pad: u8,
        /// Guards `flags` and `counted` (taken on state changes only, never per packet).
        /// Programs may not load or store it directly, nor copy a whole `SockState` out of
        /// the map: read fields one by one.
        pub lock: bpf_spin_lock,
        /// Explicit padding; always zero.
        pub _pad2: u32,
    }
    const _: () = assert!(core::mem::size_of::<SockState>() == 56);
}

/// Running totals per target.
pub mod traffic {
    use crate::sock::PROTO_COUNT;

    /// Byte and packet counters in both directions. Bytes are IP bytes (header once per skb).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Counters {
        /// Bytes received.
        pub bytes_in: u64,
        /// Bytes sent.
        pub bytes_out: u64,
        /// skbs received.
        pub pkts_in: u64,
        /// skbs sent.
        pub pkts_out: u64,
    }
    const _: () = assert!(core::mem::size_of::<Counters>() == 32);

    impl Counters {
        /// Field-wise wrapping sum (used to fold per-CPU values).
        #[must_use]
        pub const fn add(self, o: Self) -> Self {
            Self {
                bytes_in: self.bytes_in.wrapping_add(o.bytes_in),
                bytes_out: self.bytes_out.wrapping_add(o.bytes_out),
                pkts_in: self.pkts_in.wrapping_add(o.pkts_in),
                pkts_out: self.pkts_out.wrapping_add(o.pkts_out),
            }
        }
    }

    /// One `TARGET_TOTALS` entry (per CPU): counters per protocol index (`sock::PROTO_*`).
    /// Updated at packet time, so bytes sent after a socket is released still count.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct TargetTotals {
        /// Indexed by `sock::PROTO_*`.
        pub by_proto: [Counters; PROTO_COUNT],
    }
    const _: () = assert!(core::mem::size_of::<TargetTotals>() == 96);
}

/// Live connection gauges and per-connection records.
pub mod conn {
    /// Capacity of `CONNS` (per-connection records, `--details` only).
    pub const MAX_CONNS: u32 = 262_144;

    /// One `TARGET_CONNS` entry: connections of a target open now. Updated with atomic adds
    /// (+1 and wrapping −1); read as `i64` by the agent, which adds the connections that
    /// predate the run (the kernel may see those close before it saw them open).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ConnGauges {
        /// TCP connections established now (wrapping; read as i64).
        pub tcp: u64,
        /// UDP sockets bound or connected now (wrapping; read as i64).
        pub udp: u64,
    }
    const _: () = assert!(core::mem::size_of::<ConnGauges>() == 16);

    /// TCP state numbers (include/net/tcp_states.h).
    pub const TCP_ESTABLISHED: u8 = 1;
    /// `TCP_CLOSE`.
    pub const TCP_CLOSE: u8 = 7;
    /// Pseudo-state for UDP records: open.
    pub const UDP_OPEN: u8 = 0;

    /// A connection record in `CONNS` (cookie → record), kept only with `--details`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ConnRecord {
        /// IP bytes received.
        pub bytes_in: u64,
        /// IP bytes sent.
        pub bytes_out: u64,
        /// skbs received.
        pub pkts_in: u64,
        /// skbs sent.
        pub pkts_out: u64,
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when first seen; 0 = unknown.
        pub open_ns: u64,
        /// CLOCK_MONOTONIC ns when closed (released or TCP_CLOSE); 0 = open.
        pub close_ns: u64,
        /// Local address, network byte order; IPv4 in `[0]`.
        pub local_ip: [u32; 4],
        /// Remote address, network byte order; IPv4 in `[0]`; zero = none (unconnected UDP).
        pub remote_ip: [u32; 4],
        /// Local port, host order; 0 = unbound.
        pub local_port: u16,
        /// Remote port, host order; 0 = none.
        pub remote_port: u16,
        /// Owning process (tgid).
        pub tgid: u32,
        /// Target slot.
        pub slot: u32,
        /// Smoothed RTT, microseconds (TCP; 0 = unknown).
        pub srtt_us: u32,
        /// Retransmitted segments (TCP `total_retrans`).
        pub retrans: u32,
        /// `sock::PROTO_*`.
        pub proto: u8,
        /// Address family (2 or 10).
        pub family: u8,
        /// TCP state (`TCP_*`), or `UDP_OPEN`.
        pub state: u8,
        /// 1 once the record has traffic through the interface filter (or no filter).
        pub iface_ok: u8,
    }
    const _: () = assert!(core::mem::size_of::<ConnRecord>() == 104);
}

/// Read-only knobs set by the agent at load time (`EbpfLoader::override_global`).
pub mod knobs {
    /// Global name: nonzero keeps per-connection records in `CONNS` (`--details`).
    pub const DETAILS: &str = "PNM_DETAILS";
    /// Global name: nonzero counts only packets whose (netns cookie, ifindex) is in `IFACES`.
    pub const IFACE_FILTER: &str = "PNM_IFACE_FILTER";
    /// Global name: nonzero adds processes forked by a target's processes to its target.
    pub const CHILDREN: &str = "PNM_CHILDREN";
    /// Global name (u32): byte offset of `task_struct.pid` in the running kernel (from BTF).
    pub const TASK_PID_OFF: &str = "PNM_TASK_PID_OFF";
    /// Global name (u32): byte offset of `task_struct.tgid`.
    pub const TASK_TGID_OFF: &str = "PNM_TASK_TGID_OFF";
    /// Global name: nonzero when `TARGET_PIDS` has entries (processes as targets).
    pub const PID_TARGETS: &str = "PNM_PID_TARGETS";
    /// Global name: nonzero when `CGROUP_TARGETS` has entries (whole cgroups as targets).
    pub const CGROUP_TARGETS: &str = "PNM_CGROUP_TARGETS";
    /// Global name: nonzero when cgroup_skb programs may call `bpf_get_netns_cookie` (probed
    /// at start; ~6.15). Zero: the interface filter uses the namespace stamped on the socket.
    pub const NETNS_HELPER: &str = "PNM_NETNS_HELPER";
    /// Global name: nonzero counts every socket's traffic by the cgroup the socket was created
    /// in (`--all`, node-wide), into `CGROUP_TOTALS`.
    pub const ALL: &str = "PNM_ALL";
    /// Capacity of `CGROUP_TOTALS` ((cgroup, protocol) pairs) without destination classes.
    pub const MAX_CGROUP_KEYS: u32 = 16384;
    /// Most entries of `CGROUP_TOTALS` with destination classes ((cgroup, protocol, class)
    /// triples): a per-CPU map, so its memory grows with the CPUs; past it, traffic is
    /// untracked (counted), as when the map is full without classes.
    pub const MAX_CGROUP_CLASS_KEYS: u32 = 65_536;

    /// Size of `CGROUP_TOTALS` for `class_count` classes (0: classes off): keys × classes,
    /// bounded by [`MAX_CGROUP_CLASS_KEYS`].
    pub const fn cgroup_key_capacity(class_count: u32) -> u32 {
        if class_count == 0 {
            return MAX_CGROUP_KEYS;
        }
        let n = MAX_CGROUP_KEYS.saturating_mul(class_count);
        if n < MAX_CGROUP_CLASS_KEYS {
            n
        } else {
            MAX_CGROUP_CLASS_KEYS
        }
    }

    /// Key of `CGROUP_TOTALS`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct CgroupKey {
        /// cgroup v2 id (kernfs inode of the cgroup's directory) the socket was created in.
        pub cgroup_id: u64,
        /// `sock::PROTO_*`.
        pub proto: u32,
        /// Destination class of the packet's remote address (`--class`/`--classes` with
        /// `--all`), or `dest::CLASS_NONE` when classes are off or the packet is not IP.
        pub class: u32,
    }
    const _: () = assert!(core::mem::size_of::<CgroupKey>() == 16);

    /// Deepest cgroup level `pnm_sock_create` looks at for whole-cgroup targets.
    pub const MAX_CGROUP_LEVEL: i32 = 32;

    /// Capacity of `IFACES`. With `--all -i` it holds every interface of every network
    /// namespace on the node (chosen ones → [`IFACE_COUNT`], the rest → [`IFACE_SKIP`]).
    pub const MAX_IFACES: u32 = 16384;
    /// `IFACES` value: count traffic through this interface.
    pub const IFACE_COUNT: u8 = 1;
    /// `IFACES` value: a known interface that was not chosen (`--all -i`): not counted. A
    /// key absent from the map is an interface the agent has not resolved yet.
    pub const IFACE_SKIP: u8 = 0;
    /// Capacity of `NEW_IFACES` (interfaces seen before the agent resolved them).
    pub const MAX_NEW_IFACES: u32 = 256;

    /// Key of `IFACES`: an interface, named by its network namespace and index there.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct IfaceKey {
        /// `bpf_get_netns_cookie` / `SO_NETNS_COOKIE` of the namespace.
        pub netns_cookie: u64,
        /// Interface index in that namespace.
        pub ifindex: u32,
        /// Explicit padding; always zero.
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<IfaceKey>() == 16);
}

/// Where the bytes go (`--destinations`, `--class`, DNS names): per-remote-host totals, class
/// totals and the LPM trie of classes. Written by `ebpf/src/dest.rs`, read by the agent.
pub mod dest {
    use crate::traffic::Counters;

    /// Capacity of `DEST_TOTALS` ((target, remote address) pairs of all targets together).
    pub const MAX_DESTS: u32 = 131_072;
    /// Capacity of `CLASS_CIDRS` (the LPM trie: built-in and user prefixes).
    pub const MAX_CIDRS: u32 = 16_384;
    /// Most classes (built-in ones included); class indices are `0..MAX_CLASSES`.
    pub const MAX_CLASSES: u32 = 64;
    /// Class of an address no prefix in `CLASS_CIDRS` matches (the built-in `internet`).
    pub const CLASS_DEFAULT: u8 = 3;
    /// `DestKey::class` when classes are off.
    pub const CLASS_NONE: u8 = 0xff;
    /// Largest DNS packet (IP header included) handed up through `DNS_EVENTS`.
    pub const MAX_DNS_PACKET: u32 = 4096;

    /// Global name: nonzero looks every packet's remote address up in `CLASS_CIDRS`.
    pub const CLASSES: &str = "PNM_CLASSES";
    /// Global name (u32): number of classes (built-in ones included), the stride of
    /// `CLASS_TOTALS`: target `slot`'s class `c` is entry `slot * count + c`.
    pub const CLASS_COUNT: &str = "PNM_CLASS_COUNT";
    /// Global name: nonzero keeps per-remote-host totals in `DEST_TOTALS`.
    pub const DESTS: &str = "PNM_DESTS";
    /// Global name (u64): most remote hosts per target in `DEST_TOTALS`; more go to `other`.
    pub const DEST_CAP: &str = "PNM_DEST_CAP";
    /// Global name: nonzero hands DNS answers received by targets' sockets up (`DNS_EVENTS`).
    pub const DNS: &str = "PNM_DNS";

    /// Key of `DEST_TOTALS`: a target and a remote address.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct DestKey {
        /// Remote address as in the packet (network order); IPv4 in `[0]`, rest zero.
        pub addr: [u32; 4],
        /// Target slot.
        pub slot: u32,
        /// `AF_INET` (2) or `AF_INET6` (10).
        pub family: u8,
        /// Class index, or `CLASS_NONE` when classes are off.
        pub class: u8,
        /// Explicit padding; always zero.
        pub _pad: [u8; 2],
    }
    const _: () = assert!(core::mem::size_of::<DestKey>() == 24);

    /// One `DEST_OTHER` entry (per target): traffic of remote hosts past the cap, and how many
    /// remote hosts the target has in `DEST_TOTALS`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DestOther {
        /// Traffic not kept per host (cap reached or map full).
        pub counters: Counters,
        /// Entries of this target in `DEST_TOTALS` (may pass the cap by a few under races).
        pub hosts: u64,
    }
    const _: () = assert!(core::mem::size_of::<DestOther>() == 40);

    /// Capacity of `NODE_DEST_TOTALS` ((cgroup, remote address) pairs, `--all --destinations`).
    pub const MAX_NODE_DESTS: u32 = 131_072;
    /// Capacity of `NODE_DEST_OTHER` (one per cgroup that carried traffic to a remote host).
    pub const MAX_NODE_DEST_CGROUPS: u32 = 16_384;
    /// Global name: nonzero keeps per-remote-host totals per cgroup in `NODE_DEST_TOTALS`
    /// (`--all --destinations`); the cap is [`DEST_CAP`], per cgroup.
    pub const NODE_DESTS: &str = "PNM_NODE_DESTS";

    /// Key of `NODE_DEST_TOTALS`: the cgroup a socket was created in and a remote address.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct NodeDestKey {
        /// cgroup v2 id (as in `CgroupKey`).
        pub cgroup_id: u64,
        /// Remote address as in the packet (network order); IPv4 in `[0]`, rest zero.
        pub addr: [u32; 4],
        /// `AF_INET` (2) or `AF_INET6` (10).
        pub family: u8,
        /// Class index, or `CLASS_NONE` when classes are off.
        pub class: u8,
        /// Explicit padding; always zero.
        pub _pad: [u8; 6],
    }
    const _: () = assert!(core::mem::size_of::<NodeDestKey>() == 32);

    /// `CLASS_CIDRS` is an LPM trie keyed by (prefix length, 16 address bytes) with a `u32`
    /// class value; IPv4 prefixes are stored IPv4-mapped (`::ffff:a.b.c.d`, length + 96), so
    /// one trie serves both families.
    pub const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

    /// `DnsHeader::kind`: a query a target's socket sent (UDP to port 53).
    pub const DNS_QUERY: u8 = 0;
    /// `DnsHeader::kind`: an answer to a query of that socket (UDP from port 53).
    pub const DNS_ANSWER: u8 = 1;
    /// An answer counts only this long after its query (ns): resolvers give up after 5 s
    /// per try (glibc's default), so a real answer is never later than that.
    pub const DNS_ANSWER_WITHIN_NS: u64 = 10_000_000_000;
    /// Capacity of `DNS_PENDING` (queries waiting for an answer, all targets; LRU).
    pub const MAX_DNS_PENDING: u32 = 16_384;
    /// Most `DNS_EVENTS` records per target, per CPU, per `DNS_WINDOW_NS`; past it they are
    /// dropped and counted (`DnsState::dropped`), so one target's DNS cannot fill the perf
    /// buffers the others' answers need.
    pub const DNS_BUDGET: u64 = 64;
    /// The budget's window (1 s).
    pub const DNS_WINDOW_NS: u64 = 1_000_000_000;

    /// Header of a `DNS_EVENTS` record; the packet (from its IP header) follows it.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DnsHeader {
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the packet passed.
        pub ns: u64,
        /// Cookie of the target's socket that sent the query or received the answer.
        pub cookie: u64,
        /// Target slot of that socket.
        pub slot: u32,
        /// Bytes of packet that follow.
        pub len: u32,
        /// `DNS_QUERY` or `DNS_ANSWER`.
        pub kind: u8,
        /// Explicit padding; always zero.
        pub _pad: [u8; 7],
    }
    const _: () = assert!(core::mem::size_of::<DnsHeader>() == 32);

    /// Key of `DNS_PENDING`: a query in flight, as its answer must match it: the socket that
    /// sent it, the server it was sent to and its transaction ID. Value: until when (ns) an
    /// answer may come.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct DnsPendingKey {
        /// Socket cookie.
        pub cookie: u64,
        /// The server's address (network order; IPv4 in `[0]`).
        pub addr: [u32; 4],
        /// Transaction ID, as on the wire.
        pub txid: u16,
        /// `AF_INET` or `AF_INET6`.
        pub family: u8,
        /// Explicit padding; always zero.
        pub _pad: [u8; 5],
    }
    const _: () = assert!(core::mem::size_of::<DnsPendingKey>() == 32);

    /// One `DNS_STATE` entry (per target, per CPU): the budget's window and what was not
    /// handed up.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct DnsState {
        /// Start of the current budget window (ns).
        pub window_ns: u64,
        /// Records handed up in it.
        pub used: u64,
        /// Answers that matched no query of the receiving socket (socket, server,
        /// transaction ID) within `DNS_ANSWER_WITHIN_NS`: never handed up.
        pub unmatched: u64,
        /// Queries and answers past the budget, or refused by a full perf buffer.
        pub dropped: u64,
    }
    const _: () = assert!(core::mem::size_of::<DnsState>() == 32);
}

/// A target's process moving to another cgroup (raw tracepoint `cgroup_attach_task`).
pub mod moves {
    /// One `MOVES` ring-buffer record.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct MoveEvent {
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) when the move was done.
        pub ns: u64,
        /// The process (tgid) that moved.
        pub tgid: u32,
        /// Its target slot.
        pub slot: u32,
    }
    const _: () = assert!(core::mem::size_of::<MoveEvent>() == 16);

    /// Size of the `MOVES` ring buffer in bytes (a power of two, a multiple of the page):
    /// 16-byte records with an 8-byte header each, about 680 moves between two reads.
    pub const MOVES_RING_BYTES: u32 = 16_384;
}

/// TCP health (issue 29): connection failures, retransmitted segments and a smoothed-RTT
/// histogram, per target slot (`TARGET_HEALTH`) and per `--all` cgroup (`NODE_HEALTH`);
/// written by `ebpf/src/health.rs`, read by the agent.
pub mod health {
    /// Buckets of the RTT histogram. Bucket `i` counts smoothed RTTs `v` (µs) with
    /// `v <= 2^i` (and `v > 2^(i-1)` for `i > 0`): log2 buckets whose upper bounds are powers
    /// of two. The kernel keeps `srtt_us` as a u32 holding the RTT << 3, so no RTT exceeds
    /// 2^29 µs and these 30 buckets hold every value.
    pub const RTT_BUCKETS: usize = 30;

    /// The bucket of an RTT of `us` microseconds: `ceil(log2(us))`, 0 for 0 and 1.
    #[inline(always)]
    pub const fn rtt_bucket(us: u32) -> usize {
        if us <= 1 {
            return 0;
        }
        // Bits of (us - 1), by halving: no loop, no count-leading-zeros instruction (BPF
        // has none), the same on both sides of the ABI.
        let mut x = us - 1;
        let mut b = 0;
        if x >> 16 != 0 {
            x >>= 16;
            b += 16;
        }
        if x >> 8 != 0 {
            x >>= 8;
            b += 8;
        }
        if x >> 4 != 0 {
            x >>= 4;
            b += 4;
        }
        if x >> 2 != 0 {
            x >>= 2;
            b += 2;
        }
        if x >> 1 != 0 {
            x >>= 1;
            b += 1;
        }
        b + x as usize
    }

    /// One `TARGET_HEALTH` / `NODE_HEALTH` value: cumulative since the programs were loaded
    /// (a `NODE_HEALTH` key until the agent drains its removed cgroup). Shared by all CPUs:
    /// events are rare (a failure, a retransmission, one RTT sample per socket per epoch), so
    /// plain atomic adds (XADD, every kernel) cost less than per-CPU copies of 272 bytes.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Health {
        /// Outgoing connects that never reached ESTABLISHED: sock_ops state callback from
        /// SYN_SENT to CLOSE (refused, reset, timed out, unreachable, or abandoned by the
        /// application), one per attempt.
        pub connect_failures: u64,
        /// Incoming handshakes of full sockets that never reached ESTABLISHED (SYN_RECV to
        /// CLOSE: TCP Fast Open children). Handshakes still in a request mini-socket are in
        /// `HANDSHAKES`, resolved by the agent.
        pub handshake_failures: u64,
        /// Retransmitted segments: the `segs` argument of each retransmit callback (what
        /// the kernel adds to `RetransSegs` at the same place), plus the SYN-ACK
        /// retransmissions an accepted socket inherits from its request (`total_retrans`
        /// at passive-established).
        pub retrans_segs: u64,
        /// Sum of the RTT samples, µs (the histogram's `_sum`).
        pub rtt_sum_us: u64,
        /// RTT samples per bucket (see [`RTT_BUCKETS`]).
        pub rtt_buckets: [u64; RTT_BUCKETS],
    }
    const _: () = assert!(core::mem::size_of::<Health>() == 272);

    impl Default for Health {
        fn default() -> Self {
            Self {
                connect_failures: 0,
                handshake_failures: 0,
                retrans_segs: 0,
                rtt_sum_us: 0,
                rtt_buckets: [0; RTT_BUCKETS],
            }
        }
    }

    /// Capacity of `NODE_HEALTH` (cgroups with TCP health under `--all`).
    pub const MAX_NODE_HEALTH: u32 = 16_384;
    /// Capacity of `HANDSHAKES` (incoming handshakes in flight in request mini-sockets).
    pub const MAX_HANDSHAKES: u32 = 16_384;
    /// `Handshake::slot` / `Handoff::slot` when no target owns the listener.
    pub const NO_SLOT: u32 = u32::MAX;
    /// `HANDOFF` entry of the socket and cgroup paths (a target's slot).
    pub const HANDOFF_TARGET: u32 = 0;
    /// `HANDOFF` entry of the node path (`--all`: a cgroup).
    pub const HANDOFF_NODE: u32 = 1;
    /// Slots of each path's share of `RTT_SEEN` (a power of two): the cgroup and node paths,
    /// which look no socket up per packet, keep the epoch of their last RTT sample per slot
    /// of the packet's flow hash instead of per socket. One byte each, eight to a map value:
    /// both shares (8 KiB) stay in one kmalloc'd block, where the random slot of each new
    /// socket misses no TLB entry (a 1 MiB table of 64 Ki four-byte slots per path, vmalloc'd
    /// in 4 KiB pages, cost short connections 15–18 ns more per packet sent: A/B of
    /// 2026-12-05 in docs/bench-experiments.jsonl). Fewer slots than sockets sending in an
    /// interval means some share a slot, hence its one sample, in that interval.
    pub const RTT_SEEN_SLOTS: u32 = 4_096;

    /// One `SOCK_CGROUP` value: what sock_ops, which has no cgroup helper (none on 5.10, and
    /// `current` means nothing in its softirq callbacks), needs to know of a TCP socket that
    /// the socket path does not track. The node path (`--all`) stamps every new TCP socket's
    /// cgroup at `cgroup/sock_create` (cloned to the sockets a listener accepts; an accepted
    /// socket of a listener older than the run gets it at passive-established); the cgroup
    /// path makes one only when a process releases a socket still connecting.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct NodeSock {
        /// cgroup v2 id the socket was created in (0: none known, on the cgroup path).
        pub cgroup_id: u64,
        /// 1 once the process released the socket (see `SockState::released`).
        pub released: u32,
        /// Explicit padding; always zero.
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<NodeSock>() == 16);

    /// `HANDOFF` (per CPU): the listener whose packet an ingress program just passed, read by
    /// the sock_ops callback that follows on the same CPU in the same softirq when the kernel
    /// makes a request mini-socket for it (which has no storage and no listener pointer in
    /// sock_ops), or accepts a connection from it. Two entries: [`HANDOFF_TARGET`], written by
    /// the socket and cgroup paths' programs (the slot), and [`HANDOFF_NODE`], written by the
    /// node path's (the cgroup), each by every listener packet its writers see.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Handoff {
        /// [`HANDOFF_NODE`]: the listener's cgroup id (0: none).
        pub cgroup_id: u64,
        /// [`HANDOFF_TARGET`]: the listener's target slot, or [`NO_SLOT`].
        pub slot: u32,
        /// The listener's port (host order); 0 = nothing handed off.
        pub local_port: u16,
        /// Explicit padding; always zero.
        pub _pad: u16,
    }
    const _: () = assert!(core::mem::size_of::<Handoff>() == 16);

    /// Key of `HANDSHAKES`: a request mini-socket's addresses, as the accepted socket will
    /// have them.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct HandshakeKey {
        /// Local address, network order; IPv4 in `[0]`.
        pub local_ip: [u32; 4],
        /// Remote address, network order; IPv4 in `[0]`.
        pub remote_ip: [u32; 4],
        /// Local port, host order.
        pub local_port: u16,
        /// Remote port, host order.
        pub remote_port: u16,
        /// `AF_INET` or `AF_INET6`.
        pub family: u16,
        /// Explicit padding; always zero.
        pub _pad: u16,
    }
    const _: () = assert!(core::mem::size_of::<HandshakeKey>() == 40);

    /// Value of `HANDSHAKES`: who owns the listener, and when the request was made.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Handshake {
        /// `--all`: the listener's cgroup id (0: none).
        pub cgroup_id: u64,
        /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the request's creation.
        pub started_ns: u64,
        /// The listener's target slot, or [`NO_SLOT`].
        pub slot: u32,
        /// Explicit padding; always zero.
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<Handshake>() == 24);
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, with explicit padding and no pointers.
    unsafe impl aya::Pod for crate::sock::SockState {}
    unsafe impl aya::Pod for crate::traffic::Counters {}
    unsafe impl aya::Pod for crate::traffic::TargetTotals {}
    unsafe impl aya::Pod for crate::conn::ConnGauges {}
    unsafe impl aya::Pod for crate::conn::ConnRecord {}
    unsafe impl aya::Pod for crate::knobs::IfaceKey {}
    unsafe impl aya::Pod for crate::knobs::CgroupKey {}
    unsafe impl aya::Pod for crate::dest::DestKey {}
    unsafe impl aya::Pod for crate::dest::DestOther {}
    unsafe impl aya::Pod for crate::dest::NodeDestKey {}
    unsafe impl aya::Pod for crate::health::Health {}
    unsafe impl aya::Pod for crate::health::NodeSock {}
    unsafe impl aya::Pod for crate::health::HandshakeKey {}
    unsafe impl aya::Pod for crate::health::Handshake {}
    unsafe impl aya::Pod for crate::dest::DnsState {}
    unsafe impl aya::Pod for crate::dest::DnsPendingKey {}
}
