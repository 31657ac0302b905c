//! The per-workload store behind `/metrics`: monotonic counters per (workload, protocol),
//! target identities and self-statistics, with a cap on label sets and a grace period for gone
//! workloads. The sampling loop writes it; the collector ([`super::collector`]) reads it at
//! scrape time.
//!
//! Guarantees the store gives the scraper:
//! - counters never go down: a cumulative input that falls (a closed socket's bytes leaving a
//!   sum, a kernel map reset) is absorbed, so the exposed value holds and grows again from there;
//! - a workload's series stay for a grace period after it is marked gone, then disappear;
//! - at most `max_series` label sets exist — each (workload, protocol) of traffic, and each
//!   workload's TCP health — ; refusals are counted in `procnetmon_series_dropped_total`;
//! - PIDs never label a counter (cardinality); they appear only in `procnetmon_target_info`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use crate::model::{Counters, RTT_BUCKETS, RttHistogram, TcpHealth, Traffic};

/// Default cap on label sets: (workload, protocol) of traffic, four exposed series each, and
/// a workload's TCP health, [`HEALTH_SERIES`] series.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Upper bounds of the exposed RTT histogram's buckets (`le`), in µs: 16 µs × 4^k up to
/// 4.194304 s, then `+Inf`. Every one is a bound of the kernel's log2 buckets, so each exposed
/// count is exact.
pub const RTT_LE_US: [u64; 10] = [
    16, 64, 256, 1_024, 4_096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304,
];

/// Series of one workload's TCP health: the two counters, the histogram's buckets (with
/// `+Inf`), its `_sum` and `_count`.
pub const HEALTH_SERIES: usize = 2 + RTT_LE_US.len() + 1 + 2;

/// The exposed histogram from kernel buckets: (upper bound in seconds, samples in that bucket
/// and none below), the last one `+Inf`.
pub(super) fn rtt_buckets(h: &RttHistogram) -> Vec<(f64, u64)> {
    let mut out = Vec::with_capacity(RTT_LE_US.len() + 1);
    let mut i = 0;
    for le in RTT_LE_US {
        let mut n = 0;
        while i < RTT_BUCKETS && crate::model::rtt_bucket_bound_us(i) <= le {
            n += h.buckets[i];
            i += 1;
        }
        out.push((le as f64 / 1e6, n));
    }
    out.push((f64::INFINITY, h.buckets[i..].iter().sum()));
    out
}

/// Default time a gone workload's series stay exposed: long enough for a few scrapes to see
/// the final values.
pub const DEFAULT_GRACE: Duration = Duration::from_mins(5);

/// The `protocol` label of a traffic series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP sockets.
    Tcp,
    /// UDP sockets.
    Udp,
    /// Other inet sockets (raw, ICMP).
    Other,
}

impl Protocol {
    /// The label value: `tcp`, `udp` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Other => "other",
        }
    }
}

/// What a set of series is about: its label names and values, in exposition order. Two keys
/// with the same labels are the same workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadKey {
    pub(super) labels: Vec<(&'static str, String)>,
}

impl WorkloadKey {
    /// A Kubernetes container: labels `namespace`, `pod`, `container`.
    pub fn kubernetes(
        namespace: impl Into<String>,
        pod: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        Self {
            labels: vec![
                ("namespace", namespace.into()),
                ("pod", pod.into()),
                ("container", container.into()),
            ],
        }
    }

    /// A cgroup outside Kubernetes, e.g. a systemd unit (`system.slice/nginx.service`):
    /// label `cgroup`.
    pub fn cgroup(path: impl Into<String>) -> Self {
        Self {
            labels: vec![("cgroup", path.into())],
        }
    }

    /// The labels, in exposition order.
    pub fn labels(&self) -> &[(&'static str, String)] {
        &self.labels
    }
}

/// A process named with `-p`, exposed as `procnetmon_target_info{pid,comm,…} 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    /// PID (thread-group id).
    pub pid: u32,
    /// Command name (`comm`); any bytes are fine, the encoder escapes them.
    pub comm: String,
    /// Further labels, e.g. `("cgroup", …)` or the workload's labels, to join on. Names must be
    /// valid label names; `pid` and `comm` here are ignored.
    pub labels: Vec<(&'static str, String)>,
}

/// Fill of one eBPF map, exposed as `procnetmon_map_fill_ratio{map}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFill {
    /// Map name, e.g. `SOCK_TRAFFIC`.
    pub map: String,
    /// Entries in use.
    pub entries: u32,
    /// The map's `max_entries` (0 = unknown; the ratio is then 0).
    pub max_entries: u32,
}

/// The agent's own health, pushed by the sampling loop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfStats {
    /// Sockets the agent tracks now.
    pub tracked_sockets: u64,
    /// Bytes, cumulative since start, that could not be charged to any workload. A lower value
    /// than last time is absorbed, like every counter here.
    pub untracked_bytes: u64,
    /// DNS answers to targets that matched none of their queries, cumulative
    /// (`--destinations`; the sum of every target's `dns_unmatched`).
    pub dns_unmatched: u64,
    /// Targets' DNS records the kernel did not hand up (budget, full buffer), cumulative.
    pub dns_dropped: u64,
    /// Fill of each eBPF map.
    pub maps: Vec<MapFill>,
}

/// A workload's gauges: values now, not counters. Kept only beside a workload that has traffic
/// series, so they add no label sets of their own to what the series cap bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadGauges {
    /// `procnetmon_network_connections{protocol}`: TCP connections in ESTABLISHED and UDP
    /// sockets bound or connected; None where they are not counted (`--all -i`).
    pub connections: Option<(u64, u64)>,
    /// `procnetmon_remote_hosts{destination_class}`: remote hosts kept apart with
    /// `--destinations`, per destination class (None: classes off); empty without it.
    pub remote_hosts: Vec<(Option<String>, u64)>,
}

/// Limits of a [`MetricsRegistry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most (workload, protocol) label sets kept; further ones are dropped and counted.
    pub max_series: usize,
    /// How long a gone workload's series stay before [`MetricsRegistry::expire`] removes them.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_series: DEFAULT_MAX_SERIES,
            grace: DEFAULT_GRACE,
        }
    }
}

/// One exposed counter fed with cumulative readings or with deltas; it never goes down.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Monotonic {
    /// The value exposed.
    pub(super) value: u64,
    /// The last cumulative reading, `None` before the first.
    last: Option<u64>,
}

impl Monotonic {
    /// Takes a cumulative reading. Growth since the last reading is added; a drop (the source
    /// lost part of its sum, or was reset) adds nothing and becomes the new base. So the value
    /// never overcounts; growth that coincides with a drop is lost, which deltas avoid.
    fn observe(&mut self, cumulative: u64) {
        let grown = match self.last {
            Some(prev) => cumulative.saturating_sub(prev),
            None => cumulative,
        };
        self.value = self.value.saturating_add(grown);
        self.last = Some(cumulative);
    }

    /// Adds a delta.
    fn add(&mut self, delta: u64) {
        self.value = self.value.saturating_add(delta);
    }
}

/// The four counters of one (workload, protocol).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SeriesCounters {
    rx_bytes: Monotonic,
    tx_bytes: Monotonic,
    rx_packets: Monotonic,
    tx_packets: Monotonic,
}

impl SeriesCounters {
    /// Applies `f` to each of the four counters with its value from `c`.
    fn apply(&mut self, c: Counters, f: fn(&mut Monotonic, u64)) {
        let Counters {
            bytes_in,
            bytes_out,
            packets_in,
            packets_out,
        } = c;
        f(&mut self.rx_bytes, bytes_in);
        f(&mut self.tx_bytes, bytes_out);
        f(&mut self.rx_packets, packets_in);
        f(&mut self.tx_packets, packets_out);
    }

    fn observe(&mut self, c: Counters) {
        self.apply(c, Monotonic::observe);
    }

    fn add(&mut self, c: Counters) {
        self.apply(c, Monotonic::add);
    }

    pub(super) fn exposed(&self) -> Counters {
        Counters {
            bytes_in: self.rx_bytes.value,
            bytes_out: self.tx_bytes.value,
            packets_in: self.rx_packets.value,
            packets_out: self.tx_packets.value,
        }
    }
}

/// A workload's TCP health as exposed: two counters and the RTT histogram, each never going
/// down. Fed with cumulative readings: a histogram reading with any bucket below the last one
/// (its source was reset) is absorbed whole, so the buckets stay cumulative and consistent
/// with their count.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HealthSeries {
    pub(super) connect_failures: Monotonic,
    pub(super) retransmitted_segments: Monotonic,
    /// Samples per kernel bucket (`model::RTT_BUCKETS`), as exposed.
    pub(super) rtt: RttHistogram,
    last_rtt: Option<RttHistogram>,
}

impl HealthSeries {
    fn observe(&mut self, h: &TcpHealth) {
        self.connect_failures.observe(h.connect_failures);
        self.retransmitted_segments
            .observe(h.retransmitted_segments);
        let grew = match self.last_rtt {
            None => Some(h.rtt),
            Some(last) => {
                let dropped = h
                    .rtt
                    .buckets
                    .iter()
                    .zip(last.buckets)
                    .any(|(now, before)| *now < before)
                    || h.rtt.sum_us < last.sum_us;
                (!dropped).then(|| h.rtt.minus(&last))
            }
        };
        if let Some(d) = grew {
            self.rtt = self.rtt.plus(&d);
        }
        self.last_rtt = Some(h.rtt);
    }
}

/// A workload's series and, once its cgroup is gone, since when.
#[derive(Debug, Default)]
pub(super) struct Workload {
    pub(super) by_proto: BTreeMap<Protocol, SeriesCounters>,
    /// TCP health (one label set, [`HEALTH_SERIES`] series).
    pub(super) health: Option<HealthSeries>,
    /// With destination classes: the same counters split by (protocol, destination_class)
    /// instead of by protocol alone (a workload has one form or the other, never both, so a
    /// `sum` over a family never counts a byte twice).
    pub(super) by_class: BTreeMap<(Protocol, String), SeriesCounters>,
    /// Its gauges, as last set.
    pub(super) gauges: WorkloadGauges,
    gone_since: Option<Instant>,
}

/// How an update feeds a series.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Cumulative,
    Delta,
}

/// Everything a scrape reads.
#[derive(Debug)]
pub(super) struct State {
    limits: Limits,
    pub(super) workloads: BTreeMap<WorkloadKey, Workload>,
    /// (workload, protocol) label sets in `workloads`.
    pub(super) series: usize,
    pub(super) series_dropped: u64,
    pub(super) targets: Vec<TargetInfo>,
    pub(super) tracked_sockets: u64,
    pub(super) untracked_bytes: Monotonic,
    pub(super) dns_unmatched: Monotonic,
    pub(super) dns_dropped: Monotonic,
    pub(super) maps: Vec<MapFill>,
    /// Bumped by every write, so that an encoded exposition can be reused until it changes.
    generation: u64,
}

impl State {
    fn feed(&mut self, key: &WorkloadKey, traffic: &Traffic, how: Feed) {
        let Traffic { tcp, udp, other } = *traffic;
        for (proto, c) in [
            (Protocol::Tcp, tcp),
            (Protocol::Udp, udp),
            (Protocol::Other, other),
        ] {
            self.feed_one(key, proto, c, how);
        }
    }

    fn feed_one(&mut self, key: &WorkloadKey, proto: Protocol, c: Counters, how: Feed) {
        let exists = self
            .workloads
            .get(key)
            .is_some_and(|w| w.by_proto.contains_key(&proto));
        if !exists {
            // A protocol that never carried traffic gets no series: most workloads are TCP only.
            if c == Counters::default() {
                return;
            }
            if self.series >= self.limits.max_series {
                self.series_dropped = self.series_dropped.saturating_add(1);
                return;
            }
            self.series += 1;
        }
        let workload = self.workloads.entry(key.clone()).or_default();
        // Traffic shows the workload is alive again (or never was gone).
        workload.gone_since = None;
        let series = workload.by_proto.entry(proto).or_default();
        match how {
            Feed::Cumulative => series.observe(c),
            Feed::Delta => series.add(c),
        }
    }

    /// Cumulative traffic of one (workload, destination class), by protocol.
    fn feed_class(&mut self, key: &WorkloadKey, class: &str, traffic: &Traffic) {
        let Traffic { tcp, udp, other } = *traffic;
        for (proto, c) in [
            (Protocol::Tcp, tcp),
            (Protocol::Udp, udp),
            (Protocol::Other, other),
        ] {
            let id = (proto, class.to_string());
            let exists = self
                .workloads
                .get(key)
                .is_some_and(|w| w.by_class.contains_key(&id));
            if !exists {
                if c == Counters::default() {
                    continue;
                }
                if self.series >= self.limits.max_series {
                    self.series_dropped = self.series_dropped.saturating_add(1);
                    continue;
                }
                self.series += 1;
            }
            let workload = self.workloads.entry(key.clone()).or_default();
            workload.gone_since = None;
            workload.by_class.entry(id).or_default().observe(c);
        }
    }

    /// Cumulative TCP health of one workload: its one label set, made when it first has
    /// something to show (a failure, a retransmission, an RTT sample).
    fn feed_health(&mut self, key: &WorkloadKey, h: &TcpHealth) {
        let exists = self.workloads.get(key).is_some_and(|w| w.health.is_some());
        if !exists {
            if h.is_empty() {
                return;
            }
            if self.series >= self.limits.max_series {
                self.series_dropped = self.series_dropped.saturating_add(1);
                return;
            }
            self.series += 1;
        }
        let workload = self.workloads.entry(key.clone()).or_default();
        workload.gone_since = None;
        workload.health.get_or_insert_default().observe(h);
    }

    fn expire(&mut self, now: Instant) -> usize {
        let grace = self.limits.grace;
        let mut removed = 0;
        self.workloads.retain(|_, w| {
            let keep = w
                .gone_since
                .is_none_or(|since| now.saturating_duration_since(since) < grace);
            if !keep {
                removed += w.by_proto.len() + w.by_class.len() + usize::from(w.health.is_some());
            }
            keep
        });
        self.series -= removed;
        removed
    }
}

/// The metrics store: a cheap, clonable handle shared by the sampling loop (writer) and the
/// HTTP server (reader). Each scrape reads it through a [`Collector`], so values are as of the
/// scrape.
#[derive(Debug, Clone)]
pub struct MetricsRegistry {
    pub(super) state: Arc<Mutex<State>>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl MetricsRegistry {
    /// An empty store with the given limits.
    pub fn new(limits: Limits) -> Self {
        let state = Arc::new(Mutex::new(State {
            limits,
            workloads: BTreeMap::new(),
            series: 0,
            series_dropped: 0,
            targets: Vec::new(),
            tracked_sockets: 0,
            untracked_bytes: Monotonic::default(),
            dns_unmatched: Monotonic::default(),
            dns_dropped: Monotonic::default(),
            maps: Vec::new(),
            generation: 0,
        }));
        Self { state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still worth serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The lock, for a write: what a scrape would see changes.
    fn lock_mut(&self) -> MutexGuard<'_, State> {
        let mut st = self.lock();
        st.generation = st.generation.wrapping_add(1);
        st
    }

    /// Changes with every write since [`new`](Self::new): equal generations expose the same
    /// values, so an encoding can be reused (the HTTP server does, when scrapes pile up).
    pub fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Records a workload's cumulative traffic (since its first socket, including closed
    /// sockets' bytes where the caller keeps them). A value lower than the last one is absorbed
    /// (see the module docs); a protocol with no traffic yet gets no series. Clears a
    /// [`mark_gone`](Self::mark_gone): do not feed workloads whose cgroup is gone.
    pub fn update_workload(&self, key: &WorkloadKey, cumulative: &Traffic) {
        self.lock_mut().feed(key, cumulative, Feed::Cumulative);
    }

    /// Records a workload's cumulative traffic per destination class (`class`, traffic by
    /// protocol): its series carry a `destination_class` label. Use instead of
    /// [`update_workload`](Self::update_workload) for workloads whose traffic is classed.
    pub fn update_workload_classes(&self, key: &WorkloadKey, classes: &[(String, Traffic)]) {
        let mut st = self.lock_mut();
        for (class, t) in classes {
            st.feed_class(key, class, t);
        }
    }

    /// Records a workload's cumulative TCP health (failures, retransmissions, RTT samples
    /// since its first socket). Clears a [`mark_gone`](Self::mark_gone), like the traffic.
    pub fn update_workload_health(&self, key: &WorkloadKey, cumulative: &TcpHealth) {
        self.lock_mut().feed_health(key, cumulative);
    }

    /// The exposed TCP health of one workload, if it has its label set.
    pub fn health(&self, key: &WorkloadKey) -> Option<TcpHealth> {
        self.lock()
            .workloads
            .get(key)
            .and_then(|w| w.health)
            .map(|h| TcpHealth {
                connect_failures: h.connect_failures.value,
                retransmitted_segments: h.retransmitted_segments.value,
                rtt: h.rtt,
            })
    }

    /// The exposed counters of one (workload, protocol, destination class), if it has a series.
    pub fn class_counters(
        &self,
        key: &WorkloadKey,
        proto: Protocol,
        class: &str,
    ) -> Option<Counters> {
        self.lock()
            .workloads
            .get(key)
            .and_then(|w| w.by_class.get(&(proto, class.to_string())))
            .map(SeriesCounters::exposed)
    }

    /// Sets a workload's gauges. A workload without traffic series (none yet, or refused by the
    /// series cap) gets none: its gauges are dropped.
    pub fn set_workload_gauges(&self, key: &WorkloadKey, gauges: WorkloadGauges) {
        if let Some(w) = self.lock_mut().workloads.get_mut(key) {
            w.gauges = gauges;
        }
    }

    /// Adds traffic since the last call (e.g. per-socket deltas computed with
    /// `saturating_sub`). Exact even when sockets close between samples, which the cumulative
    /// form cannot be. Clears a [`mark_gone`](Self::mark_gone).
    pub fn add_workload(&self, key: &WorkloadKey, delta: &Traffic) {
        self.lock_mut().feed(key, delta, Feed::Delta);
    }

    /// Notes that a workload's cgroup is gone at `now`; [`expire`](Self::expire) removes its
    /// series once the grace period has passed. Marking again keeps the first time.
    pub fn mark_gone(&self, key: &WorkloadKey, now: Instant) {
        if let Some(w) = self.lock_mut().workloads.get_mut(key) {
            w.gone_since.get_or_insert(now);
        }
    }

    /// Marks every workload for which `is_live` is false as gone (see
    /// [`mark_gone`](Self::mark_gone)).
    pub fn mark_gone_unless(&self, mut is_live: impl FnMut(&WorkloadKey) -> bool, now: Instant) {
        for (key, w) in &mut self.lock_mut().workloads {
            if !is_live(key) {
                w.gone_since.get_or_insert(now);
            }
        }
    }

    /// Removes the series of workloads gone for at least the grace period; returns how many
    /// (workload, protocol) label sets went. Call once per sampling tick.
    pub fn expire(&self, now: Instant) -> usize {
        self.lock_mut().expire(now)
    }

    /// Replaces the set of `-p` targets exposed in `procnetmon_target_info`.
    pub fn set_targets(&self, targets: Vec<TargetInfo>) {
        self.lock_mut().targets = targets;
    }

    /// Replaces the self-statistics.
    pub fn set_self_stats(&self, stats: SelfStats) {
        let SelfStats {
            tracked_sockets,
            untracked_bytes,
            dns_unmatched,
            dns_dropped,
            maps,
        } = stats;
        let mut st = self.lock_mut();
        st.tracked_sockets = tracked_sockets;
        st.untracked_bytes.observe(untracked_bytes);
        st.dns_unmatched.observe(dns_unmatched);
        st.dns_dropped.observe(dns_dropped);
        st.maps = maps;
    }

    /// (workload, protocol) label sets held now.
    pub fn series(&self) -> usize {
        self.lock().series
    }

    /// The exposed counters of one (workload, protocol), if it has a series.
    pub fn counters(&self, key: &WorkloadKey, proto: Protocol) -> Option<Counters> {
        self.lock()
            .workloads
            .get(key)
            .and_then(|w| w.by_proto.get(&proto))
            .map(SeriesCounters::exposed)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::metrics) fn tcp(bytes_in: u64, bytes_out: u64) -> Traffic {
        Traffic {
            tcp: Counters {
                bytes_in,
                bytes_out,
                packets_in: bytes_in / 100,
                packets_out: bytes_out / 100,
            },
            ..Traffic::default()
        }
    }

    fn limits(max_series: usize, grace_s: u64) -> Limits {
        Limits {
            max_series,
            grace: Duration::from_secs(grace_s),
        }
    }

    #[test]
    fn counters_never_go_down() {
        let reg = MetricsRegistry::default();
        let key = WorkloadKey::cgroup("system.slice/nginx.service");
        reg.update_workload(&key, &tcp(1000, 500));
        // A socket closed and took 700 bytes out of the sum: exposed value holds.
        reg.update_workload(&key, &tcp(300, 100));
        let c = reg.counters(&key, Protocol::Tcp).expect("series");
        assert_eq!((c.bytes_in, c.bytes_out), (1000, 500));
        // Growth after the drop counts again.
        reg.update_workload(&key, &tcp(400, 150));
        let c = reg.counters(&key, Protocol::Tcp).expect("series");
        assert_eq!((c.bytes_in, c.bytes_out), (1100, 550));
        // Reset to zero (kernel state lost), then growth.
        reg.update_workload(&key, &tcp(0, 0));
        reg.update_workload(&key, &tcp(10, 0));
        let c = reg.counters(&key, Protocol::Tcp).expect("series");
        assert_eq!(c.bytes_in, 1110);
        // Deltas add.
        reg.add_workload(&key, &tcp(5, 5));
        let c = reg.counters(&key, Protocol::Tcp).expect("series");
        assert_eq!((c.bytes_in, c.bytes_out), (1115, 555));
        // No traffic on UDP: no series.
        assert_eq!(reg.counters(&key, Protocol::Udp), None);
        assert_eq!(reg.series(), 1);
    }

    #[test]
    fn untracked_bytes_never_go_down() {
        let reg = MetricsRegistry::default();
        for v in [100, 40, 60] {
            reg.set_self_stats(SelfStats {
                untracked_bytes: v,
                ..SelfStats::default()
            });
        }
        let out = reg.encode().expect("encode");
        assert!(
            out.contains("procnetmon_untracked_bytes_total 120\n"),
            "{out}"
        );
    }

    #[test]
    fn gone_workloads_expire_after_grace() {
        let reg = MetricsRegistry::new(limits(100, 60));
        let a = WorkloadKey::kubernetes("default", "web-1", "nginx");
        let b = WorkloadKey::kubernetes("default", "web-2", "nginx");
        let t0 = Instant::now();
        reg.update_workload(&a, &tcp(10, 10));
        reg.update_workload(&b, &tcp(10, 10));
        reg.mark_gone(&a, t0 + Duration::from_secs(10));
        // Marking again keeps the first time.
        reg.mark_gone(&a, t0 + Duration::from_secs(50));
        assert_eq!(reg.expire(t0 + Duration::from_secs(69)), 0);
        assert!(reg.counters(&a, Protocol::Tcp).is_some());
        assert_eq!(reg.expire(t0 + Duration::from_secs(70)), 1);
        assert_eq!(reg.counters(&a, Protocol::Tcp), None);
        assert!(reg.counters(&b, Protocol::Tcp).is_some());
        assert_eq!(reg.series(), 1);
        // Traffic revives a workload marked gone.
        reg.mark_gone_unless(|k| k != &b, t0 + Duration::from_secs(70));
        reg.update_workload(&b, &tcp(20, 10));
        assert_eq!(reg.expire(t0 + Duration::from_secs(1000)), 0);
        assert!(!reg.encode().expect("encode").contains("web-1"));
    }

    fn health(failures: u64, buckets: &[(usize, u64)]) -> TcpHealth {
        let mut h = TcpHealth {
            connect_failures: failures,
            ..TcpHealth::default()
        };
        for (b, n) in buckets {
            h.rtt.buckets[*b] += n;
            h.rtt.sum_us += n * (1 << b);
        }
        h
    }

    #[test]
    fn health_is_one_label_set_that_never_goes_down() {
        let reg = MetricsRegistry::new(limits(2, 60));
        let a = WorkloadKey::cgroup("a.service");
        let b = WorkloadKey::cgroup("b.service");
        // Nothing to show yet: no label set.
        reg.update_workload_health(&a, &TcpHealth::default());
        assert_eq!((reg.series(), reg.health(&a)), (0, None));
        reg.update_workload(&a, &tcp(1, 1));
        reg.update_workload_health(&a, &health(2, &[(6, 3)]));
        assert_eq!(reg.series(), 2);
        // The cap counts it: b's health is refused and counted.
        reg.update_workload_health(&b, &health(1, &[]));
        assert_eq!(reg.health(&b), None);
        // Growth adds; a reading below the last (a reset) is absorbed whole.
        reg.update_workload_health(&a, &health(5, &[(6, 4), (9, 1)]));
        reg.update_workload_health(&a, &health(0, &[(6, 1)]));
        reg.update_workload_health(&a, &health(1, &[(6, 2)]));
        let h = reg.health(&a).expect("health");
        assert_eq!(h.connect_failures, 6);
        assert_eq!(
            (h.rtt.buckets[6], h.rtt.buckets[9], h.rtt.count()),
            (5, 1, 6)
        );
        let out = reg.encode().expect("encode");
        assert!(out.contains("procnetmon_series_dropped_total 1\n"), "{out}");
    }

    #[test]
    fn rtt_buckets_are_exact_cumulative_bounds() {
        let mut h = RttHistogram::default();
        // 1 µs, 16 µs, 17 µs (→ 32), 4.2 s, 10 s (→ 2^24 µs).
        for b in [0, 4, 5, 22, 24] {
            h.buckets[b] += 1;
        }
        let got = rtt_buckets(&h);
        assert_eq!(got.len(), RTT_LE_US.len() + 1);
        assert_eq!(got[0], (0.000016, 2)); // 1 µs and 16 µs
        assert_eq!(got[1], (0.000064, 1)); // 32 µs
        assert_eq!(got[9], (4.194304, 1)); // 2^22 µs
        assert_eq!(got[10], (f64::INFINITY, 1)); // 2^24 µs
        assert_eq!(got.iter().map(|(_, n)| n).sum::<u64>(), h.count());
    }

    #[test]
    fn series_cap_drops_and_counts() {
        let reg = MetricsRegistry::new(limits(2, 60));
        let t0 = Instant::now();
        let keys: Vec<_> = (0..4)
            .map(|i| WorkloadKey::cgroup(format!("unit-{i}.service")))
            .collect();
        for k in &keys {
            reg.update_workload(k, &tcp(1, 1));
        }
        assert_eq!(reg.series(), 2);
        assert!(reg.counters(&keys[2], Protocol::Tcp).is_none());
        // Existing series still update while the cap holds.
        reg.update_workload(&keys[0], &tcp(5, 1));
        assert_eq!(
            reg.counters(&keys[0], Protocol::Tcp).map(|c| c.bytes_in),
            Some(5)
        );
        let out = reg.encode().expect("encode");
        assert!(out.contains("procnetmon_series_dropped_total 2\n"), "{out}");
        assert!(out.contains("procnetmon_series 2\n"), "{out}");
        // Expiry frees room.
        reg.mark_gone(&keys[0], t0);
        reg.expire(t0 + Duration::from_mins(1));
        reg.update_workload(&keys[3], &tcp(1, 1));
        assert!(reg.counters(&keys[3], Protocol::Tcp).is_some());
    }
}
