//! `OpenMetrics` exposition for `--metrics-addr`: a per-workload store of monotonic counters, a
//! scrape-time collector that encodes it with `prometheus-client`, and a small HTTP/1.1 server
//! (`/metrics`, `/healthz`).
//!
//! The sampling loop pushes plain values ([`Counters`] per workload and protocol, target
//! identities, self-statistics) into a [`MetricsRegistry`]; nothing here reads eBPF maps or
//! `/proc`, and nothing here decides what a workload is (cgroup path, or Kubernetes namespace,
//! pod and container): callers build the [`WorkloadKey`].
//!
//! Guarantees the store gives the scraper:
//! - counters never go down: a cumulative input that falls (a closed socket's bytes leaving a
//!   sum, a kernel map reset) is absorbed, so the exposed value holds and grows again from there;
//! - a workload's series stay for a grace period after it is marked gone, then disappear;
//! - at most `max_series` (workload, protocol) label sets exist; refusals are counted in
//!   `procnetmon_series_dropped_total`;
//! - PIDs never label a counter (cardinality); they appear only in `procnetmon_target_info`.
//!
//! Label values are escaped by `prometheus-client` itself since 0.26 (`prometheus/client_rust`
//! PR 347: `\` → `\\`, `"` → `\"`, newline → `\n`), so values are passed through unchanged:
//! escaping here as well would double-escape. `tests::label_values_are_escaped_once` pins that.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use crate::model::{Counters, Traffic};

/// The `Content-Type` of `/metrics`: `OpenMetrics` text 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Default cap on (workload, protocol) label sets; each one is four exposed series.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Default time a gone workload's series stay exposed: long enough for a few scrapes to see
/// the final values.
pub const DEFAULT_GRACE: Duration = Duration::from_mins(5);

/// Longest request head (request line plus headers) the server reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Time a client gets to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

/// Time in-flight responses get to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

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
    labels: Vec<(&'static str, String)>,
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
    /// Fill of each eBPF map.
    pub maps: Vec<MapFill>,
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
struct Monotonic {
    /// The value exposed.
    value: u64,
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
struct SeriesCounters {
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

    fn exposed(&self) -> Counters {
        Counters {
            bytes_in: self.rx_bytes.value,
            bytes_out: self.tx_bytes.value,
            packets_in: self.rx_packets.value,
            packets_out: self.tx_packets.value,
        }
    }
}

/// A workload's series and, once its cgroup is gone, since when.
#[derive(Debug, Default)]
struct Workload {
    by_proto: BTreeMap<Protocol, SeriesCounters>,
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
struct State {
    limits: Limits,
    workloads: BTreeMap<WorkloadKey, Workload>,
    /// (workload, protocol) label sets in `workloads`.
    series: usize,
    series_dropped: u64,
    targets: Vec<TargetInfo>,
    tracked_sockets: u64,
    untracked_bytes: Monotonic,
    maps: Vec<MapFill>,
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

    fn expire(&mut self, now: Instant) -> usize {
        let grace = self.limits.grace;
        let mut removed = 0;
        self.workloads.retain(|_, w| {
            let keep = w
                .gone_since
                .is_none_or(|since| now.saturating_duration_since(since) < grace);
            if !keep {
                removed += w.by_proto.len();
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
    state: Arc<Mutex<State>>,
    registry: Arc<Registry>,
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
            maps: Vec::new(),
        }));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StateCollector {
            state: Arc::clone(&state),
        }));
        Self {
            state,
            registry: Arc::new(registry),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind: still worth serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a workload's cumulative traffic (since its first socket, including closed
    /// sockets' bytes where the caller keeps them). A value lower than the last one is absorbed
    /// (see the module docs); a protocol with no traffic yet gets no series. Clears a
    /// [`mark_gone`](Self::mark_gone): do not feed workloads whose cgroup is gone.
    pub fn update_workload(&self, key: &WorkloadKey, cumulative: &Traffic) {
        self.lock().feed(key, cumulative, Feed::Cumulative);
    }

    /// Adds traffic since the last call (e.g. per-socket deltas computed with
    /// `saturating_sub`). Exact even when sockets close between samples, which the cumulative
    /// form cannot be. Clears a [`mark_gone`](Self::mark_gone).
    pub fn add_workload(&self, key: &WorkloadKey, delta: &Traffic) {
        self.lock().feed(key, delta, Feed::Delta);
    }

    /// Notes that a workload's cgroup is gone at `now`; [`expire`](Self::expire) removes its
    /// series once the grace period has passed. Marking again keeps the first time.
    pub fn mark_gone(&self, key: &WorkloadKey, now: Instant) {
        if let Some(w) = self.lock().workloads.get_mut(key) {
            w.gone_since.get_or_insert(now);
        }
    }

    /// Marks every workload for which `is_live` is false as gone (see
    /// [`mark_gone`](Self::mark_gone)).
    pub fn mark_gone_unless(&self, mut is_live: impl FnMut(&WorkloadKey) -> bool, now: Instant) {
        for (key, w) in &mut self.lock().workloads {
            if !is_live(key) {
                w.gone_since.get_or_insert(now);
            }
        }
    }

    /// Removes the series of workloads gone for at least the grace period; returns how many
    /// (workload, protocol) label sets went. Call once per sampling tick.
    pub fn expire(&self, now: Instant) -> usize {
        self.lock().expire(now)
    }

    /// Replaces the set of `-p` targets exposed in `procnetmon_target_info`.
    pub fn set_targets(&self, targets: Vec<TargetInfo>) {
        self.lock().targets = targets;
    }

    /// Replaces the self-statistics.
    pub fn set_self_stats(&self, stats: SelfStats) {
        let SelfStats {
            tracked_sockets,
            untracked_bytes,
            maps,
        } = stats;
        let mut st = self.lock();
        st.tracked_sockets = tracked_sockets;
        st.untracked_bytes.observe(untracked_bytes);
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

    /// Encodes everything in the `OpenMetrics` text format, `# EOF` included.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Reads [`State`] at scrape time.
#[derive(Debug)]
struct StateCollector {
    state: Arc<Mutex<State>>,
}

/// One of the four traffic counter families.
struct TrafficFamily {
    /// Name without `_total` (the encoder appends it) and without the unit suffix.
    name: &'static str,
    help: &'static str,
    /// Counts bytes (unit `bytes`, which the encoder appends to the name) rather than packets.
    bytes: bool,
    pick: fn(&Counters) -> u64,
}

const TRAFFIC_FAMILIES: [TrafficFamily; 4] = [
    TrafficFamily {
        name: "procnetmon_network_receive",
        help: "IP bytes received by the workload's sockets",
        bytes: true,
        pick: |c| c.bytes_in,
    },
    TrafficFamily {
        name: "procnetmon_network_transmit",
        help: "IP bytes sent by the workload's sockets",
        bytes: true,
        pick: |c| c.bytes_out,
    },
    TrafficFamily {
        name: "procnetmon_network_receive_packets",
        help: "Packets received by the workload's sockets",
        bytes: false,
        pick: |c| c.packets_in,
    },
    TrafficFamily {
        name: "procnetmon_network_transmit_packets",
        help: "Packets sent by the workload's sockets",
        bytes: false,
        pick: |c| c.packets_out,
    },
];

/// Encodes one counter family over every (workload, protocol).
fn encode_traffic(
    encoder: &mut DescriptorEncoder<'_>,
    st: &State,
    family: &TrafficFamily,
) -> Result<(), std::fmt::Error> {
    let TrafficFamily {
        name,
        help,
        bytes,
        pick,
    } = family;
    let unit = bytes.then_some(Unit::Bytes);
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (key, w) in &st.workloads {
        for (proto, series) in &w.by_proto {
            let mut labels: Vec<(&str, &str)> =
                key.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            labels.push(("protocol", proto.as_str()));
            ConstCounter::new(pick(&series.exposed())).encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);

        for family in &TRAFFIC_FAMILIES {
            encode_traffic(&mut encoder, &st, family)?;
        }

        // `*_info` as gauges of value 1 (the classic convention): `promtool check metrics`,
        // which speaks the Prometheus text format, refuses the OpenMetrics `info` type.
        let mut targets = encoder.encode_descriptor(
            "procnetmon_target_info",
            "A process named with -p; join on pid",
            None,
            MetricType::Gauge,
        )?;
        for t in &st.targets {
            let pid = t.pid.to_string();
            let mut labels: Vec<(&str, &str)> = vec![("pid", &pid), ("comm", &t.comm)];
            // A repeated label name would make the exposition invalid.
            labels.extend(
                t.labels
                    .iter()
                    .filter(|(k, _)| !matches!(*k, "pid" | "comm"))
                    .map(|(k, v)| (*k, v.as_str())),
            );
            targets.encode_family(&labels)?.encode_gauge(&1_i64)?;
        }

        encoder
            .encode_descriptor(
                "procnetmon_build_info",
                "procnetmon2 build",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
            .encode_gauge(&1_i64)?;

        let gauge = ConstGauge::new(i64::try_from(st.tracked_sockets).unwrap_or(i64::MAX));
        gauge.encode(encoder.encode_descriptor(
            "procnetmon_tracked_sockets",
            "Sockets the agent tracks now",
            None,
            gauge.metric_type(),
        )?)?;

        let untracked = ConstCounter::new(st.untracked_bytes.value);
        untracked.encode(encoder.encode_descriptor(
            "procnetmon_untracked",
            "Bytes that could not be charged to any workload",
            Some(&Unit::Bytes),
            untracked.metric_type(),
        )?)?;

        let mut fill = encoder.encode_descriptor(
            "procnetmon_map_fill_ratio",
            "Entries in use over max_entries, per eBPF map",
            None,
            MetricType::Gauge,
        )?;
        for m in &st.maps {
            let ratio = if m.max_entries == 0 {
                0.0
            } else {
                f64::from(m.entries) / f64::from(m.max_entries)
            };
            ConstGauge::new(ratio).encode(fill.encode_family(&[("map", m.map.as_str())])?)?;
        }

        let series = ConstGauge::new(i64::try_from(st.series).unwrap_or(i64::MAX));
        series.encode(encoder.encode_descriptor(
            "procnetmon_series",
            "(workload, protocol) label sets held now; each is four traffic series",
            None,
            series.metric_type(),
        )?)?;

        let dropped = ConstCounter::new(st.series_dropped);
        dropped.encode(encoder.encode_descriptor(
            "procnetmon_series_dropped",
            "Updates refused because the series cap was reached, one per (workload, protocol)",
            None,
            dropped.metric_type(),
        )?)?;
        Ok(())
    }
}

/// Parses `--metrics-addr`: a bare port (`9809`) binds loopback, `127.0.0.1:9809`; an
/// `IP:PORT` (`0.0.0.0:9809`, `[::]:9809`) or `localhost:PORT` is taken as given.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|e| format!("invalid port in {s:?}: {e}"));
    }
    if let Some(port) = s.strip_prefix(':') {
        return Err(format!(
            "{s:?}: give the address to bind, e.g. 0.0.0.0:{port} (all interfaces) or {port} (loopback)"
        ));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?}: expected PORT, IP:PORT or [IPv6]:PORT (e.g. 9809, 0.0.0.0:9809, [::]:9809)")
    })
}

/// A bound metrics listener; [`run`](Self::run) serves it.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind metrics listener {addr}"))?;
        Ok(Self { listener })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("metrics listener local_addr")
    }

    /// Serves `/metrics` and `/healthz` until `shutdown` completes, then gives in-flight
    /// responses a moment to finish.
    pub async fn run(
        self,
        registry: MetricsRegistry,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Self { listener } = self;
        if let Ok(addr) = listener.local_addr() {
            log::info!("serving metrics on http://{addr}/metrics");
        }
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if conns.len() >= MAX_CONNECTIONS {
                            log::debug!("metrics: {peer}: too many connections, closing");
                            continue;
                        }
                        let registry = registry.clone();
                        conns.spawn(async move {
                            if let Err(e) = handle(stream, &registry).await {
                                log::debug!("metrics: {peer}: {e:#}");
                            }
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("metrics: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            log::debug!("metrics: aborting {} slow connections", conns.len());
        }
        log::info!("metrics server stopped");
        Ok(())
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    registry: MetricsRegistry,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    MetricsServer::bind(addr)
        .await?
        .run(registry, shutdown)
        .await
}

/// Reads one request head, answers it and closes the connection.
async fn handle(mut stream: TcpStream, registry: &MetricsRegistry) -> anyhow::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .context("request timed out")??;
    let (status, content_type, body, head_only) = respond(&head, registry);
    let mut out = String::new();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    )?;
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    stream
        .write_all(out.as_bytes())
        .await
        .context("write response")?;
    stream.shutdown().await.context("shutdown")?;
    Ok(())
}

/// Reads until the blank line that ends the head. Reading the headers rather than only the
/// request line matters: closing a socket with unread data sends a RST, which can destroy the
/// response before the client reads it.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.context("read request")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n")
            || buf.windows(2).any(|w| w == b"\n\n")
            || buf.len() >= MAX_REQUEST_HEAD
        {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Status line, content type, body, and whether to omit the body (HEAD).
/// Content type of the classic Prometheus text format (version 0.0.4).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// True when the request's `Accept` header names `text/plain` and not OpenMetrics.
fn wants_classic_text(head: &str) -> bool {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .any(|(_, v)| v.contains("text/plain") && !v.contains("application/openmetrics-text"))
}

/// Rewrites an OpenMetrics exposition into the classic text format: counter families are
/// named with their `_total` suffix in `# HELP`/`# TYPE`, and `# UNIT`/`# EOF` go.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn respond(head: &str, registry: &MetricsRegistry) -> (&'static str, &'static str, String, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", TEXT, "bad request\n".into(), false);
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", TEXT, "bad request\n".into(), false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return (
                "405 Method Not Allowed",
                TEXT,
                "method not allowed\n".into(),
                false,
            );
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match path {
        "/metrics" => match registry.encode() {
            // OpenMetrics unless the client asks for the classic text format only (what
            // `curl -H 'Accept: text/plain' … | promtool check metrics` reads).
            Ok(body) if wants_classic_text(head) => (
                "200 OK",
                CLASSIC_CONTENT_TYPE,
                to_classic_text(&body),
                head_only,
            ),
            Ok(body) => ("200 OK", CONTENT_TYPE, body, head_only),
            Err(_) => (
                "500 Internal Server Error",
                TEXT,
                "encoding failed\n".into(),
                head_only,
            ),
        },
        "/healthz" => ("200 OK", TEXT, "ok\n".into(), head_only),
        _ => ("404 Not Found", TEXT, "not found\n".into(), head_only),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP x_bytes X.\n# TYPE x_bytes counter\n# UNIT x_bytes bytes\nx_bytes_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP x_bytes_total X.\n# TYPE x_bytes_total counter\nx_bytes_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
        assert!(wants_classic_text(
            "GET /metrics HTTP/1.1\r\nAccept: text/plain\r\n"
        ));
        assert!(!wants_classic_text(
            "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n"
        ));
        assert!(!wants_classic_text("GET /metrics HTTP/1.1\r\n"));
    }

    fn tcp(bytes_in: u64, bytes_out: u64) -> Traffic {
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

    /// A comm with a quote, a backslash and a newline, as a process can set with prctl.
    const NASTY: &str = "evil\"na\\me\nx";
    /// `NASTY` escaped per `OpenMetrics` (`\\`, `\"`, `\n`).
    const NASTY_ESCAPED: &str = r#"evil\"na\\me\nx"#;

    fn nasty_registry() -> MetricsRegistry {
        let reg = MetricsRegistry::default();
        reg.update_workload(
            &WorkloadKey::cgroup(format!("system.slice/{NASTY}.service")),
            &tcp(1000, 2000),
        );
        reg.set_targets(vec![TargetInfo {
            pid: 42,
            comm: NASTY.into(),
            labels: vec![("cgroup", "/user.slice".into())],
        }]);
        reg.set_self_stats(SelfStats {
            tracked_sockets: 3,
            untracked_bytes: 7,
            maps: vec![MapFill {
                map: "SOCK_TRAFFIC".into(),
                entries: 1,
                max_entries: 4,
            }],
        });
        reg
    }

    #[test]
    fn label_values_are_escaped_once() {
        let out = nasty_registry().encode().expect("encode");
        assert!(
            out.contains(&format!(
                "procnetmon_target_info{{pid=\"42\",comm=\"{NASTY_ESCAPED}\",cgroup=\"/user.slice\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "procnetmon_network_receive_bytes_total{{cgroup=\"system.slice/{NASTY_ESCAPED}.service\",protocol=\"tcp\"}} 1000\n"
            )),
            "{out}"
        );
        // Every sample stays on one line: no raw newline inside a label value.
        for line in out.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("procnetmon_"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn encoding_has_every_series() {
        let out = nasty_registry().encode().expect("encode");
        for name in [
            "procnetmon_network_receive_bytes_total{",
            "procnetmon_network_transmit_bytes_total{",
            "procnetmon_network_receive_packets_total{",
            "procnetmon_network_transmit_packets_total{",
            "procnetmon_target_info{",
            "procnetmon_build_info{version=\"",
            "procnetmon_tracked_sockets 3\n",
            "procnetmon_untracked_bytes_total 7\n",
            "procnetmon_map_fill_ratio{map=\"SOCK_TRAFFIC\"} 0.25\n",
            "procnetmon_series 1\n",
            "procnetmon_series_dropped_total 0\n",
            "# TYPE procnetmon_network_receive_bytes counter\n",
            "# TYPE procnetmon_target_info gauge\n",
        ] {
            assert!(out.contains(name), "missing {name:?} in\n{out}");
        }
        assert!(out.ends_with("# EOF\n"));
        // No PID on a counter.
        for line in out.lines().filter(|l| l.contains("_total{")) {
            assert!(!line.contains("pid="), "{line}");
        }
    }

    /// Validates the exposition with Prometheus' own `OpenMetrics` parser and reads the label
    /// values back. `promtool check metrics` only knows the older text format (it rejects the
    /// `info` type), so this goes through `promtool tsdb create-blocks-from openmetrics`, which
    /// needs a timestamp on every sample, and `promtool tsdb dump`, which prints the stored
    /// labels Go-quoted (the same escapes as `OpenMetrics`). Skipped without `promtool`
    /// (Debian package `prometheus`).
    #[test]
    fn promtool_parses_exposition() {
        use std::process::Command;
        if Command::new("promtool").arg("--version").output().is_err() {
            eprintln!("skipping test - promtool not installed (apt-get install prometheus)");
            return;
        }
        let out = nasty_registry().encode().expect("encode");
        let stamped: String = out
            .lines()
            .map(|l| {
                if l.starts_with('#') {
                    format!("{l}\n")
                } else {
                    format!("{l} 1700000000\n")
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("procnetmon2-promtool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let input = dir.join("exposition.txt");
        std::fs::write(&input, stamped).expect("write");
        let blocks = dir.join("blocks");
        let created = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&blocks)
            .output()
            .expect("run promtool");
        assert!(
            created.status.success(),
            "promtool rejected:\n{out}\n{}",
            String::from_utf8_lossy(&created.stderr)
        );
        // `tsdb dump` insists on a WAL directory.
        std::fs::create_dir_all(blocks.join("wal")).expect("mkdir wal");
        let dumped = Command::new("promtool")
            .args(["tsdb", "dump"])
            .arg(&blocks)
            .output()
            .expect("run promtool dump");
        let _ = std::fs::remove_dir_all(&dir);
        let dump = String::from_utf8_lossy(&dumped.stdout);
        assert!(dumped.status.success(), "{dump}");
        assert!(
            dump.contains(&format!("comm=\"{NASTY_ESCAPED}\"")),
            "label value did not round-trip:\n{dump}"
        );
        assert!(dump.contains("__name__=\"procnetmon_network_transmit_packets_total\""));
    }

    #[test]
    fn metrics_addr_forms() {
        let ok = |s: &str| parse_metrics_addr(s).expect(s).to_string();
        assert_eq!(ok("9809"), "127.0.0.1:9809");
        assert_eq!(ok("localhost:9809"), "127.0.0.1:9809");
        assert_eq!(ok("0.0.0.0:9809"), "0.0.0.0:9809");
        assert_eq!(ok("[::]:9809"), "[::]:9809");
        assert_eq!(ok("[::1]:1"), "[::1]:1");
        assert_eq!(ok("10.0.0.1:80"), "10.0.0.1:80");
        for bad in [":9809", "", "65536", "host:9809", "0.0.0.0", "::", "9809x"] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        resp
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz() {
        let reg = nasty_registry();
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(reg, async {
            let _ = stopped.await;
        }));

        let resp = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(
            resp.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
            "{resp}"
        );
        let (head, body) = resp.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(body.contains("procnetmon_network_receive_bytes_total{"));
        assert!(body.ends_with("# EOF\n"));

        let resp = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nok\n"), "{resp}");

        let resp = get(addr, "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\n"), "{resp}");

        let resp = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
        let resp = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
        assert!(resp.contains("\r\nAllow: GET, HEAD\r\n"), "{resp}");
        let resp = get(addr, "garbage\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");

        stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .expect("join")
            .expect("run");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
