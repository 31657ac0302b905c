//! Reports of a made-up node, interval by interval, shaped like what `--all --destinations`
//! with classes reports: for the recorder's tests and its benchmark (`recording_cost`).
//! Rates, peaks and orders are computed the way the session computes them, so the encoder
//! sees what it would see in a live run.

use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use crate::{
    model::{ClassTraffic, Counters, Destination, Report, Row, TcpHealth, Traffic, WorkloadReport},
    sampling::rate_bps,
};

/// The node: how many workloads, how many of them busy, and with how many remote hosts each.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Workloads in all.
    pub workloads: usize,
    /// Those sending continuously (the rest hold idle connections).
    pub busy: usize,
    /// Remote hosts each busy workload sends to.
    pub hosts: usize,
    /// Per remote host figures (`--destinations`).
    pub destinations: bool,
    /// Destination classes.
    pub classes: bool,
    /// The interval.
    pub interval: Duration,
    /// Seeds the traffic's noise.
    pub seed: u64,
}

impl Scenario {
    /// The benchmark: 100 workloads, 10 busy to 10 hosts each, classes and
    /// destinations, every second.
    pub fn bench(busy: usize) -> Self {
        Self {
            workloads: 100,
            busy,
            hosts: 10,
            destinations: true,
            classes: true,
            interval: Duration::from_secs(1),
            seed: 0x5eed,
        }
    }
}

/// A small xorshift generator (no dependency for noise).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded with `seed` (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `[0, n)`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.bits() % n }
    }
}

#[derive(Debug, Clone, Default)]
struct Flow {
    total: Counters,
    rate: (f64, f64),
}

#[derive(Debug, Clone)]
struct Node {
    name: String,
    cgroup: String,
    /// Bits per second each host gets, when busy.
    base_bps: Vec<u64>,
    traffic: Traffic,
    hosts: Vec<(String, Flow)>,
    classes: Vec<(String, Flow)>,
    rate: (f64, f64),
    peak: (f64, f64),
    health: TcpHealth,
}

/// Reports of a [`Scenario`], one per [`Synth::next_report`].
#[derive(Debug, Clone)]
pub struct Synth {
    sc: Scenario,
    rng: Rng,
    nodes: Vec<Node>,
    now_ns: i64,
    /// TCP health's own noise (the traffic's sequence stays as it was without it).
    health_rng: Rng,
}

impl Synth {
    /// Starts the node at `start`.
    pub fn new(sc: Scenario, start: DateTime<FixedOffset>) -> Self {
        let mut rng = Rng::new(sc.seed);
        let mut nodes: Vec<Node> = (0..sc.workloads)
            .map(|i| {
                let ns = ["default", "kube-system", "payments", "web"][i % 4];
                let name = format!("{ns}/app-{i:03}-7d9f8b6c5d-x{:04x}/main", i * 7919 % 65_536);
                let busy = i < sc.busy;
                let hosts = if busy { sc.hosts } else { 1 };
                Node {
                    cgroup: format!(
                        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{:08x}_1a2b_4c3d_8e9f_{:012x}.slice/cri-containerd-{:064x}.scope",
                        i * 2_654_435_761 % (1 << 32),
                        i,
                        (i as u128) * 0x9e37_79b9_7f4a_7c15
                    ),
                    name,
                    base_bps: (0..hosts)
                        .map(|_| if busy { 2_000_000 + rng.below(18_000_000) } else { 0 })
                        .collect(),
                    traffic: Traffic::default(),
                    hosts: (0..hosts)
                        .map(|h| {
                            let addr = if h % 3 == 0 {
                                format!("203.0.{}.{}", i % 250, h + 1)
                            } else {
                                format!("10.{}.{}.{}", i % 250, h / 250, h % 250 + 1)
                            };
                            (addr, Flow::default())
                        })
                        .collect(),
                    classes: Vec::new(),
                    rate: (0.0, 0.0),
                    peak: (0.0, 0.0),
                    health: TcpHealth::default(),
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Self {
            sc,
            rng,
            nodes,
            now_ns: start.timestamp_nanos_opt().unwrap_or(0),
            health_rng: Rng::new(sc.seed ^ 0x7c9),
        }
    }

    /// The report after one more interval.
    pub fn next_report(&mut self) -> Report {
        // The loop wakes a little late, by a varying amount.
        let dt = self.sc.interval + Duration::from_nanos(self.rng.below(2_000_000));
        self.now_ns += i64::try_from(dt.as_nanos()).unwrap_or(0);
        let mut workloads = Vec::with_capacity(self.nodes.len());
        for n in &mut self.nodes {
            advance(n, dt, &mut self.rng);
            sample_health(n, &mut self.health_rng);
            workloads.push(report_row(n, &self.sc));
        }
        let snapshot_delay = i64::try_from(self.rng.below(300_000)).unwrap_or(0);
        Report {
            timestamp: crate::record::convert::timestamp(self.now_ns + snapshot_delay, 0),
            processes: Vec::new(),
            aggregated: None,
            workloads,
            untracked: Counters::default(),
            untracked_sockets: 0,
            untracked_processes: 0,
            is_final: false,
        }
    }
}

/// One interval of a workload's TCP health: an RTT sample per connection that moved data
/// (as the kernel samples, at most once per interval), near 300 µs to private addresses and
/// 20 ms to the internet; now and then a retransmission, rarely a failed connect.
fn sample_health(n: &mut Node, rng: &mut Rng) {
    for (i, (addr, _)) in n.hosts.iter().enumerate() {
        if n.base_bps[i] == 0 {
            continue;
        }
        let base_us = if addr.starts_with("10.") { 300 } else { 20_000 };
        let us = base_us * (80 + rng.below(41)) / 100;
        let bucket = procnetmon2_common::health::rtt_bucket(u32::try_from(us).unwrap_or(u32::MAX));
        n.health.rtt.buckets[bucket] += 1;
        n.health.rtt.sum_us += us;
        if rng.below(20) == 0 {
            n.health.retransmitted_segments += 1 + rng.below(3);
        }
        if rng.below(500) == 0 {
            n.health.connect_failures += 1;
        }
    }
}

/// One interval of a workload's traffic.
fn advance(n: &mut Node, dt: Duration, rng: &mut Rng) {
    let before = n.traffic.total();
    let mut by_class: Vec<(String, Counters)> = Vec::new();
    for (i, (addr, flow)) in n.hosts.iter_mut().enumerate() {
        let before = flow.total;
        let base = n.base_bps[i];
        if base > 0 {
            // ±30 % around the host's rate.
            let bps = base * (70 + rng.below(61)) / 100;
            let bytes = bps * u64::try_from(dt.as_millis()).unwrap_or(0) / 8000;
            let pk = bytes.div_ceil(1448);
            flow.total.bytes_out += bytes + pk * 52;
            flow.total.packets_out += pk;
            flow.total.packets_in += pk / 2;
            flow.total.bytes_in += pk / 2 * 52;
        }
        let d = flow.total.minus(before);
        flow.rate = (rate_bps(d.bytes_in, dt), rate_bps(d.bytes_out, dt));
        let class = if addr.starts_with("10.") {
            "private"
        } else {
            "internet"
        };
        match by_class.iter_mut().find(|(c, _)| c == class) {
            Some((_, c)) => *c = c.plus(d),
            None => by_class.push((class.to_string(), d)),
        }
    }
    by_class.sort_by(|a, b| b.0.cmp(&a.0));
    for (class, d) in by_class {
        let f = match n.classes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, f)) => f,
            None => {
                n.classes.push((class.clone(), Flow::default()));
                n.classes.sort_by(|a, b| b.0.cmp(&a.0));
                let ix = n.classes.iter().position(|(c, _)| *c == class).unwrap_or(0);
                &mut n.classes[ix].1
            }
        };
        f.total = f.total.plus(d);
        f.rate = (rate_bps(d.bytes_in, dt), rate_bps(d.bytes_out, dt));
        n.traffic.tcp = n.traffic.tcp.plus(d);
    }
    let total = n.traffic.total().minus(before);
    n.rate = (rate_bps(total.bytes_in, dt), rate_bps(total.bytes_out, dt));
    n.peak = (n.peak.0.max(n.rate.0), n.peak.1.max(n.rate.1));
}

fn report_row(n: &Node, sc: &Scenario) -> WorkloadReport {
    let mut dests: Vec<Destination> = n
        .hosts
        .iter()
        .filter(|(_, f)| f.total != Counters::default())
        .map(|(addr, f)| Destination {
            remote: addr.clone(),
            name: None,
            class: sc.classes.then(|| {
                if addr.starts_with("10.") {
                    "private"
                } else {
                    "internet"
                }
                .to_string()
            }),
            counters: f.total,
            rate_in: f.rate.0,
            rate_out: f.rate.1,
            hosts: None,
            connections: None,
        })
        .collect();
    let volume = |d: &Destination| d.counters.bytes_in + d.counters.bytes_out;
    dests.sort_by(|a, b| volume(b).cmp(&volume(a)).then(a.remote.cmp(&b.remote)));
    let total = n.traffic.total();
    WorkloadReport {
        name: n.name.clone(),
        cgroup: n.cgroup.clone(),
        container: None,
        exited: false,
        row: Row {
            counters: total,
            rate_in: n.rate.0,
            rate_out: n.rate.1,
            peak_rate_in: n.peak.0,
            peak_rate_out: n.peak.1,
            tcp_connections: u32::try_from(n.hosts.len()).unwrap_or(0),
            udp_connections: 0,
            health: n.health,
        },
        traffic: n.traffic,
        dns: None,
        connections: None,
        destinations: sc.destinations.then_some(dests),
        classes: sc.classes.then(|| {
            n.classes
                .iter()
                .filter(|(_, f)| f.total != Counters::default())
                .map(|(class, f)| ClassTraffic {
                    class: class.clone(),
                    counters: f.total,
                    rate_in: f.rate.0,
                    rate_out: f.rate.1,
                    by_protocol: Traffic {
                        tcp: f.total,
                        ..Traffic::default()
                    },
                })
                .collect()
        }),
    }
}
