//! Domain types shared by the session, sampling and rendering. No kernel ABI types: those are
//! converted at the loader boundary (`kernel::probes`).

use std::time::Duration;

/// Bytes and packets in both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// IP bytes received.
    pub bytes_in: u64,
    /// IP bytes sent.
    pub bytes_out: u64,
    /// Packets (skbs) received.
    pub packets_in: u64,
    /// Packets (skbs) sent.
    pub packets_out: u64,
}

impl Counters {
    /// Field-wise sum.
    #[must_use]
    pub fn plus(self, o: Self) -> Self {
        Self {
            bytes_in: self.bytes_in.saturating_add(o.bytes_in),
            bytes_out: self.bytes_out.saturating_add(o.bytes_out),
            packets_in: self.packets_in.saturating_add(o.packets_in),
            packets_out: self.packets_out.saturating_add(o.packets_out),
        }
    }

    /// Field-wise difference, never below zero.
    #[must_use]
    pub fn minus(self, o: Self) -> Self {
        Self {
            bytes_in: self.bytes_in.saturating_sub(o.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(o.bytes_out),
            packets_in: self.packets_in.saturating_sub(o.packets_in),
            packets_out: self.packets_out.saturating_sub(o.packets_out),
        }
    }
}

/// A target's traffic split by protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// TCP sockets.
    pub tcp: Counters,
    /// UDP sockets.
    pub udp: Counters,
    /// Other inet sockets (raw, ICMP).
    pub other: Counters,
}

impl Traffic {
    /// All protocols together.
    pub fn total(&self) -> Counters {
        self.tcp.plus(self.udp).plus(self.other)
    }

    /// Protocol-wise difference, never below zero.
    #[must_use]
    pub fn minus(&self, o: &Self) -> Self {
        Self {
            tcp: self.tcp.minus(o.tcp),
            udp: self.udp.minus(o.udp),
            other: self.other.minus(o.other),
        }
    }
}

/// One row of a report: a process or the aggregate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Row {
    /// Bytes and packets over the reported period (since the run or window started).
    pub counters: Counters,
    /// Receive rate, bits per second (last interval, or the window's average in a final report).
    pub rate_in: f64,
    /// Send rate, bits per second.
    pub rate_out: f64,
    /// Highest per-interval receive rate seen, bits per second.
    pub peak_rate_in: f64,
    /// Highest per-interval send rate seen, bits per second.
    pub peak_rate_out: f64,
    /// TCP connections established now.
    pub tcp_connections: u32,
    /// UDP sockets open now.
    pub udp_connections: u32,
}

/// A process in a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessReport {
    /// PID.
    pub pid: u32,
    /// Command name (`comm`).
    pub name: String,
    /// How long the process has run (frozen at its exit).
    pub runtime: Duration,
    /// True once the process has exited; its totals are final.
    pub exited: bool,
    /// Counters, rates and connection counts.
    pub row: Row,
    /// The reported period's traffic by protocol.
    pub traffic: Traffic,
    /// Per-connection details (`--details` only).
    pub connections: Option<Vec<ConnDetail>>,
    /// Container / pod identity (None outside containers).
    pub container: Option<crate::host::identity::ContainerIdentity>,
    /// The PID inside the process's own pid namespace (`NSpid`).
    pub nspid: Option<u32>,
    /// Per remote host (`--destinations` only).
    pub destinations: Option<Vec<Destination>>,
    /// Per destination class (`--class`/`--classes` only).
    pub classes: Option<Vec<ClassTraffic>>,
    /// DNS that named nothing (`--destinations` only).
    pub dns: Option<DnsCounts>,
    /// Times its traffic could not be seen (a move to another cgroup); empty: none.
    pub gaps: Vec<Gap>,
}

/// What of a target's DNS named nothing (`--destinations`): JSON `dns_unmatched`,
/// `dns_dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsCounts {
    /// Answers that matched no query the target's receiving socket sent (same socket,
    /// server, transaction ID, question name and type, within 10 s).
    pub unmatched: u64,
    /// Queries and answers the kernel did not hand up: past the target's budget, or a full
    /// perf buffer.
    pub dropped: u64,
}

/// A time a target's traffic could not be seen: it moved to a cgroup the programs did not
/// cover yet (or cannot cover), and sockets it made there were invisible until then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The cgroup it moved to.
    pub cgroup: String,
    /// CLOCK_MONOTONIC ns of the move (or, when the move was found at a tick, of the tick
    /// before: the earliest it can have happened).
    pub from_ns: u64,
    /// CLOCK_MONOTONIC ns when counting there began (or, while `ongoing`, of the report).
    pub to_ns: u64,
    /// The cgroup cannot be covered (an ancestor of an attach point, or it refused the
    /// programs): the gap lasts.
    pub ongoing: bool,
}

impl Gap {
    /// How long the gap lasted (so far).
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.to_ns.saturating_sub(self.from_ns))
    }
}

/// A workload: a whole cgroup (`--cgroup`, `--container`) or a node-wide group (`--all`).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadReport {
    /// `namespace/pod/container`, a systemd unit, or a cgroup path.
    pub name: String,
    /// Its cgroup path (the first, when a group spans several).
    pub cgroup: String,
    /// Container / pod identity, if any.
    pub container: Option<crate::host::identity::ContainerIdentity>,
    /// True once its cgroup is gone; totals are final.
    pub exited: bool,
    /// Counters and rates.
    pub row: Row,
    /// The reported period's traffic by protocol.
    pub traffic: Traffic,
    /// Per-connection details of a whole-cgroup target, for the interactive view (with
    /// connection records on; never for `--all`'s workloads, which have no records). The
    /// table and JSON do not print them: their contract lists connections per process only.
    pub connections: Option<Vec<ConnDetail>>,
    /// Per remote host (`--destinations`, whole-cgroup targets only).
    pub destinations: Option<Vec<Destination>>,
    /// Per destination class (classes on, whole-cgroup targets only).
    pub classes: Option<Vec<ClassTraffic>>,
    /// DNS that named nothing (`--destinations`, whole-cgroup targets only).
    pub dns: Option<DnsCounts>,
}

/// A target's traffic with one remote host, or with all hosts past the cap (`other`).
#[derive(Debug, Clone, PartialEq)]
pub struct Destination {
    /// The remote address (`10.0.0.2`, `fd00::2`), or `other`.
    pub remote: String,
    /// The name the target resolved it from (a DNS answer it received), if seen.
    pub name: Option<String>,
    /// Its destination class (classes on).
    pub class: Option<String>,
    /// Bytes and packets over the reported period.
    pub counters: Counters,
    /// Receive rate, bits per second (last interval, or the window's average when final).
    pub rate_in: f64,
    /// Send rate, bits per second.
    pub rate_out: f64,
    /// `other` only: remote hosts kept apart (the cap reached, the rest summed here).
    pub hosts: Option<u64>,
    /// Connections open to it now (`--details` only: counted from the connection records).
    pub connections: Option<u32>,
}

/// A target's traffic with one destination class.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassTraffic {
    /// The class (`private`, `pod-network`, …).
    pub class: String,
    /// Bytes and packets over the reported period.
    pub counters: Counters,
    /// Receive rate, bits per second (last interval, or the window's average when final).
    pub rate_in: f64,
    /// Send rate, bits per second.
    pub rate_out: f64,
    /// The same traffic by protocol: what `/metrics` serves per `destination_class` (kept
    /// by recordings; the table and JSON do not print it).
    pub by_protocol: Traffic,
}

/// One connection of a process (`--details`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnDetail {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// Local address and port (`10.0.0.1:5000`, `[::1]:80`, `*` when unbound).
    pub local: String,
    /// Remote address and port (`*` for an unconnected UDP socket).
    pub remote: String,
    /// `ESTABLISHED`, `LISTEN`, `CLOSE_WAIT`, …, `UNCONN` (UDP), `CLOSED` (shown once).
    pub state: &'static str,
    /// Bytes received since the run started (or since the connection opened).
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Receive rate over the last interval, bits per second.
    pub rate_in: f64,
    /// Send rate over the last interval, bits per second.
    pub rate_out: f64,
    /// Time since the connection was first seen.
    pub age: Duration,
    /// Smoothed RTT, microseconds (TCP).
    pub rtt_us: Option<u32>,
    /// Retransmitted segments (TCP).
    pub retransmits: Option<u32>,
}

/// One report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Wall-clock time of the report (display only; rates use a monotonic clock).
    pub timestamp: chrono::DateTime<chrono::FixedOffset>,
    /// Processes in the order they were named.
    pub processes: Vec<ProcessReport>,
    /// Sums over processes (present with `-a`).
    pub aggregated: Option<Row>,
    /// Whole-cgroup targets and node-wide workloads.
    pub workloads: Vec<WorkloadReport>,
    /// Traffic of target sockets that could not be charged to a target.
    pub untracked: Counters,
    /// Target sockets whose owner could not be recorded (their traffic is not counted).
    pub untracked_sockets: u64,
    /// Processes a target forked that could not join it (their sockets are not counted).
    pub untracked_processes: u64,
    /// True for the final report of a `-t` window.
    pub is_final: bool,
}
