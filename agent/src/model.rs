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

/// Buckets of an [`RttHistogram`]: bucket `i` holds RTTs of at most 2^i µs (and more than
/// 2^(i-1) µs for `i > 0`). The kernel's histogram (`procnetmon2_common::health`), whose
/// bucket count `kernel` checks against this one at build time.
pub const RTT_BUCKETS: usize = 30;

/// The upper bound of RTT bucket `i`, µs.
pub const fn rtt_bucket_bound_us(i: usize) -> u64 {
    1 << i
}

/// Smoothed-RTT samples in log2 buckets (µs), and their sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket (see [`RTT_BUCKETS`]).
    pub buckets: [u64; RTT_BUCKETS],
    /// Sum of the samples, µs.
    pub sum_us: u64,
}

impl Default for RttHistogram {
    fn default() -> Self {
        Self {
            buckets: [0; RTT_BUCKETS],
            sum_us: 0,
        }
    }
}

impl RttHistogram {
    /// Samples in all buckets.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Bucket-wise sum.
    #[must_use]
    pub fn plus(&self, o: &Self) -> Self {
        let mut r = *self;
        for (a, b) in r.buckets.iter_mut().zip(o.buckets) {
            *a = a.saturating_add(b);
        }
        r.sum_us = r.sum_us.saturating_add(o.sum_us);
        r
    }

    /// Bucket-wise difference, never below zero.
    #[must_use]
    pub fn minus(&self, o: &Self) -> Self {
        let mut r = *self;
        for (a, b) in r.buckets.iter_mut().zip(o.buckets) {
            *a = a.saturating_sub(b);
        }
        r.sum_us = r.sum_us.saturating_sub(o.sum_us);
        r
    }

    /// The `q` quantile (0 < q <= 1), µs: the upper bound of the bucket that holds the
    /// sample of rank ceil(q × count) (the nearest-rank method, on buckets). So a p50 of 512
    /// says the median sample is in (256, 512] µs. None without samples.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (i, c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(rtt_bucket_bound_us(i));
            }
        }
        None
    }

    /// The upper bound of the highest non-empty bucket, µs (None without samples).
    pub fn max_us(&self) -> Option<u64> {
        self.buckets
            .iter()
            .rposition(|c| *c > 0)
            .map(rtt_bucket_bound_us)
    }
}

/// TCP health over a report's period: connections that failed, segments sent again, and the
/// smoothed RTT of the connections (sampled once per socket per interval).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpHealth {
    /// Outgoing connects that never reached ESTABLISHED, and incoming handshakes that never
    /// completed.
    pub connect_failures: u64,
    /// TCP segments retransmitted.
    pub retransmitted_segments: u64,
    /// Smoothed-RTT samples.
    pub rtt: RttHistogram,
}

impl TcpHealth {
    /// Field-wise sum.
    #[must_use]
    pub fn plus(&self, o: &Self) -> Self {
        Self {
            connect_failures: self.connect_failures.saturating_add(o.connect_failures),
            retransmitted_segments: self
                .retransmitted_segments
                .saturating_add(o.retransmitted_segments),
            rtt: self.rtt.plus(&o.rtt),
        }
    }

    /// Field-wise difference, never below zero.
    #[must_use]
    pub fn minus(&self, o: &Self) -> Self {
        Self {
            connect_failures: self.connect_failures.saturating_sub(o.connect_failures),
            retransmitted_segments: self
                .retransmitted_segments
                .saturating_sub(o.retransmitted_segments),
            rtt: self.rtt.minus(&o.rtt),
        }
    }

    /// True when nothing was counted (no failure, no retransmission, no RTT sample).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
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
    /// TCP health over the reported period (since the run or window started).
    pub health: TcpHealth,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(samples: &[(usize, u64)]) -> RttHistogram {
        let mut h = RttHistogram::default();
        for (b, n) in samples {
            h.buckets[*b] += n;
        }
        h
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        // (samples per bucket, q, expected µs)
        type Case = (&'static [(usize, u64)], f64, Option<u64>);
        let cases: [Case; 9] = [
            (&[], 0.5, None),
            (&[(6, 1)], 0.5, Some(64)),
            (&[(6, 1)], 0.99, Some(64)),
            // 10 samples: rank 5 is in bucket 4 (16 µs), rank 9 and 10 in bucket 10.
            (&[(4, 5), (10, 5)], 0.5, Some(16)),
            (&[(4, 5), (10, 5)], 0.51, Some(1024)),
            (&[(4, 5), (10, 5)], 0.9, Some(1024)),
            // 100 samples, one slow: p99 is rank 99 (fast), the max is the slow one.
            (&[(9, 99), (20, 1)], 0.99, Some(512)),
            (&[(9, 99), (20, 1)], 1.0, Some(1 << 20)),
            (&[(0, 3)], 0.5, Some(1)),
        ];
        for (samples, q, want) in cases {
            assert_eq!(hist(samples).quantile_us(q), want, "{samples:?} q={q}");
        }
        assert_eq!(hist(&[(9, 99), (20, 1)]).max_us(), Some(1 << 20));
        assert_eq!(RttHistogram::default().max_us(), None);
    }

    #[test]
    fn health_sums_and_differences() {
        let a = TcpHealth {
            connect_failures: 3,
            retransmitted_segments: 10,
            rtt: RttHistogram {
                sum_us: 100,
                ..hist(&[(5, 2)])
            },
        };
        let b = TcpHealth {
            connect_failures: 1,
            retransmitted_segments: 20,
            rtt: hist(&[(5, 1), (7, 1)]),
        };
        let s = a.plus(&b);
        assert_eq!((s.connect_failures, s.retransmitted_segments), (4, 30));
        assert_eq!(s.rtt.count(), 4);
        let d = a.minus(&b);
        assert_eq!((d.connect_failures, d.retransmitted_segments), (2, 0));
        assert_eq!(d.rtt.buckets[5], 1);
        assert_eq!(d.rtt.buckets[7], 0);
        assert!(TcpHealth::default().is_empty() && !a.is_empty());
    }
}
