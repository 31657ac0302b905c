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
    /// Protocol index used in [`SockOwner::proto`] and [`crate::traffic::TargetTotals`].
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

    /// Who owns a socket. Stored in `SOCK_OWNER`, a socket storage created with `BPF_F_CLONE`,
    /// so a listener's owner is copied to every socket it accepts.
    ///
    /// Written by `pnm_sock_create` (new sockets of a target) and by the agent through a
    /// `pidfd_getfd` copy (sockets that predate the run).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SockOwner {
        /// Process (tgid, in the initial pid namespace) that created the socket.
        pub tgid: u32,
        /// Target slot the socket's traffic is charged to (index into `TARGET_TOTALS`).
        pub slot: u32,
        /// Protocol index (`PROTO_*`).
        pub proto: u8,
        /// Address family (`AF_INET` = 2, `AF_INET6` = 10).
        pub family: u8,
        /// Explicit padding; always zero.
        pub _pad: [u8; 6],
    }
    const _: () = assert!(core::mem::size_of::<SockOwner>() == 16);

    /// Per-socket counters. Stored in `SOCK_STATS`, a socket storage *without* the clone flag:
    /// an accepted socket must start from zero, not from its listener's counts.
    /// Created by the cgroup_skb programs on a socket's first packet; updated atomically.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SockStats {
        /// IP bytes received (IP header included once per skb).
        pub bytes_in: u64,
        /// IP bytes sent.
        pub bytes_out: u64,
        /// skbs received (one GRO skb may be many wire packets).
        pub pkts_in: u64,
        /// skbs sent (one GSO skb may be many wire packets).
        pub pkts_out: u64,
        /// Copy of [`SockOwner::slot`], so the hot path needs one storage lookup.
        pub slot: u32,
        /// Copy of [`SockOwner::proto`].
        pub proto: u8,
        /// Explicit padding; always zero.
        pub _pad: [u8; 3],
    }
    const _: () = assert!(core::mem::size_of::<SockStats>() == 40);
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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `#[repr(C)]`, `Copy`, with explicit padding and no pointers.
    unsafe impl aya::Pod for crate::sock::SockOwner {}
    unsafe impl aya::Pod for crate::sock::SockStats {}
    unsafe impl aya::Pod for crate::traffic::Counters {}
    unsafe impl aya::Pod for crate::traffic::TargetTotals {}
}
