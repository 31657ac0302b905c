//! Feeds the metrics store each tick from the session: cumulative traffic per workload, the
//! live set, the `-p` targets still running, and self-metrics.
//!
//! A workload (or target) that ends is fed once more, with its final totals, in the first feed
//! after the tick that saw it gone, and marked gone right after; from then on it is no longer
//! fed (an update would revive it), so its series keep those final values until the grace
//! period ends. Without that last feed the bytes of its last interval never reached /metrics.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use super::{Session, Subject};
use crate::{
    host::identity::ContainerIdentity,
    kernel::{Kernel, MAX_TARGET_PIDS},
    metrics::{MapFill, MetricsRegistry, SelfStats, TargetInfo, WorkloadGauges, WorkloadKey},
    model::{Destination, TcpHealth, Traffic},
    sampling::sum_traffic,
};

/// The metrics labels of a workload: namespace/pod/container on Kubernetes (when the
/// runtime's metadata named it), else the cgroup (systemd unit or path).
pub fn metrics_key(container: Option<&ContainerIdentity>, unit: &str) -> WorkloadKey {
    match container {
        Some(c) => match (&c.namespace, &c.pod, &c.name) {
            (Some(ns), Some(pod), Some(name)) => {
                WorkloadKey::kubernetes(ns.clone(), pod.clone(), name.clone())
            }
            _ => WorkloadKey::cgroup(c.workload()),
        },
        None => WorkloadKey::cgroup(if unit.is_empty() { "/" } else { unit }),
    }
}

/// The workload key of a session target.
fn key_of(subject: &Subject) -> WorkloadKey {
    match subject {
        Subject::Process { labels, .. } => metrics_key(labels.container.as_ref(), &labels.unit),
        Subject::Cgroup { info, .. } => metrics_key(info.container.as_ref(), &info.workload),
    }
}

/// Feeds a metrics store across ticks: remembers which ticks it has fed, so that what ended
/// since gets its final feed exactly once.
#[derive(Debug, Default)]
pub struct Feeder {
    /// The session tick of the last feed.
    fed_through: u64,
}

impl Feeder {
    /// Pushes the session's state as of its last tick into `reg`. `named`: the PIDs given
    /// with `-p`.
    pub fn feed(
        &mut self,
        reg: &MetricsRegistry,
        session: &Session,
        kernel: &dyn Kernel,
        named: &[u32],
    ) {
        feed(reg, session, kernel, named, self.fed_through);
        self.fed_through = session.ticks();
    }
}

/// Pushes the session's state into `reg`; what ended after tick `fed_through` gets its final
/// totals fed before it is marked gone.
fn feed(
    reg: &MetricsRegistry,
    session: &Session,
    kernel: &dyn Kernel,
    named: &[u32],
    fed_through: u64,
) {
    feed_targets(reg, session, named);
    feed_health(reg, session, fed_through);
    feed_workloads(reg, session, fed_through);
    feed_gauges(reg, session);
    feed_self_stats(reg, session, kernel, named);
}

/// Each workload's gauges: connections (TCP in ESTABLISHED, UDP bound or connected) and, with
/// `--destinations`, its remote hosts per destination class. Several targets of one workload
/// (two `-p` processes in one cgroup) are summed. Set after the counters, so a workload new
/// this tick has its series to hang them on.
fn feed_gauges(reg: &MetricsRegistry, session: &Session) {
    let mut gauges: HashMap<WorkloadKey, WorkloadGauges> = HashMap::new();
    let mut add =
        |key: WorkloadKey, conns: Option<(u32, u32)>, hosts: Vec<(Option<String>, u64)>| {
            let g = gauges.entry(key).or_default();
            if let Some((tcp, udp)) = conns {
                let (t0, u0) = g.connections.unwrap_or_default();
                g.connections = Some((t0 + u64::from(tcp), u0 + u64::from(udp)));
            }
            for (class, n) in hosts {
                match g.remote_hosts.iter_mut().find(|(c, _)| *c == class) {
                    Some((_, m)) => *m += n,
                    None => g.remote_hosts.push((class, n)),
                }
            }
        };
    match session.node() {
        Some(node) => {
            for w in node.workloads().values() {
                let key = metrics_key(w.info.container.as_ref(), &w.info.workload);
                let conns = node
                    .counts_sockets()
                    .then_some((w.connections.tcp, w.connections.udp));
                let hosts = if node.keeps_destinations() {
                    w.remote_hosts(node.classes())
                } else {
                    Vec::new()
                };
                add(key, conns, hosts);
            }
        }
        None => {
            for t in session.targets() {
                let hosts = session
                    .dest()
                    .and_then(|d| d.destinations(t.slot, false))
                    .map(|rows| hosts_by_class(&rows))
                    .unwrap_or_default();
                add(key_of(&t.subject), Some(t.connections), hosts);
            }
        }
    }
    for (key, g) in gauges {
        reg.set_workload_gauges(&key, g);
    }
}

/// Remote hosts kept apart per destination class, from a target's destination rows (`other`,
/// the hosts past the cap summed, is no host of its own).
fn hosts_by_class(rows: &[Destination]) -> Vec<(Option<String>, u64)> {
    let mut by: std::collections::BTreeMap<Option<String>, u64> = Default::default();
    for d in rows.iter().filter(|d| d.hosts.is_none()) {
        *by.entry(d.class.clone()).or_default() += 1;
    }
    by.into_iter().collect()
}

/// `procnetmon_target_info` for the PIDs named with -p that are still running.
fn feed_targets(reg: &MetricsRegistry, session: &Session, named: &[u32]) {
    reg.set_targets(
        session
            .targets()
            .iter()
            .filter(|t| t.exited.is_none())
            .filter_map(|t| match &t.subject {
                Subject::Process { ident, .. } if named.contains(&ident.pid) => Some(TargetInfo {
                    pid: ident.pid,
                    comm: ident.comm.clone(),
                    labels: key_of(&t.subject).labels().to_vec(),
                }),
                _ => None,
            })
            .collect(),
    );
}

/// Cumulative TCP health per workload (summed over the targets that share its labels), by
/// the same rule as the traffic: live workloads, and those that ended since the last feed
/// (their final values). Fed before the traffic, whose pass marks the gone ones.
fn feed_health(reg: &MetricsRegistry, session: &Session, fed_through: u64) {
    let mut sums: HashMap<WorkloadKey, TcpHealth> = HashMap::new();
    let mut fed: HashSet<WorkloadKey> = HashSet::new();
    let mut add = |k: WorkloadKey, h: TcpHealth, alive: bool, gone_at: Option<u64>| {
        let e = sums.entry(k.clone()).or_default();
        *e = e.plus(&h);
        if alive || gone_at.is_some_and(|g| g > fed_through) {
            fed.insert(k);
        }
    };
    match session.node() {
        Some(node) => {
            for w in node.workloads().values() {
                let key = metrics_key(w.info.container.as_ref(), &w.info.workload);
                add(key, w.tcp_health(), !w.exited, w.gone_at.map(|(t, _)| t));
            }
        }
        None => {
            for t in session.targets() {
                let alive = t.exited.is_none();
                add(key_of(&t.subject), t.tcp_health(), alive, t.exited_tick);
            }
        }
    }
    for (k, h) in sums.iter().filter(|(k, _)| fed.contains(*k)) {
        reg.update_workload_health(k, h);
    }
}

/// Cumulative traffic per workload (per class too with destination classes), then the live
/// set: a workload that ended after tick `fed_through` is fed once more, then marked gone.
fn feed_workloads(reg: &MetricsRegistry, session: &Session, fed_through: u64) {
    let now = Instant::now();
    let mut sums: HashMap<WorkloadKey, Traffic> = HashMap::new();
    let mut live: HashSet<WorkloadKey> = HashSet::new();
    // Live, or ended since the last feed: fed this time.
    let mut fed: HashSet<WorkloadKey> = HashSet::new();
    // With destination classes: the same counters per (workload, class), fed by the same rule.
    let mut by_class: HashMap<(WorkloadKey, String), Traffic> = HashMap::new();
    let mut fed_classed: HashSet<WorkloadKey> = HashSet::new();
    let mut live_classed: HashSet<WorkloadKey> = HashSet::new();
    let mut add = |k: WorkloadKey, t: &Traffic, alive: bool, gone_at: Option<u64>| {
        let e = sums.entry(k.clone()).or_default();
        *e = sum_traffic([&*e, t]);
        if alive || gone_at.is_some_and(|g| g > fed_through) {
            fed.insert(k.clone());
        }
        if alive {
            live.insert(k);
        }
    };
    match session.node() {
        Some(node) => {
            for w in node.workloads().values() {
                let key = metrics_key(w.info.container.as_ref(), &w.info.workload);
                let gone_at = w.gone_at.map(|(tick, _)| tick);
                if let Some(classes) = w.class_traffic(node.classes()) {
                    // Classed, as for targets: the same counters split by destination_class.
                    for (class, traffic) in classes {
                        let e = by_class.entry((key.clone(), class)).or_default();
                        *e = sum_traffic([&*e, &traffic]);
                    }
                    if !w.exited || gone_at.is_some_and(|g| g > fed_through) {
                        fed_classed.insert(key.clone());
                    }
                    if !w.exited {
                        live_classed.insert(key);
                    }
                    continue;
                }
                add(key, &w.series.since_start(), !w.exited, gone_at);
            }
        }
        None => {
            for t in session.targets() {
                if let Some(classes) = session.dest().and_then(|d| d.class_traffic(t.slot)) {
                    // Classed: the same counters, split by destination_class.
                    let key = key_of(&t.subject);
                    for (class, traffic) in classes {
                        let e = by_class.entry((key.clone(), class)).or_default();
                        *e = sum_traffic([&*e, &traffic]);
                    }
                    if t.exited.is_none() || t.exited_tick.is_some_and(|g| g > fed_through) {
                        fed_classed.insert(key.clone());
                    }
                    if t.exited.is_none() {
                        live_classed.insert(key);
                    }
                    continue;
                }
                add(
                    key_of(&t.subject),
                    &t.series.since_start(),
                    t.exited.is_none(),
                    t.exited_tick,
                );
            }
        }
    }
    for (k, t) in sums.iter().filter(|(k, _)| fed.contains(*k)) {
        reg.update_workload(k, t);
    }
    let mut classed: HashMap<WorkloadKey, Vec<(String, Traffic)>> = HashMap::new();
    for ((k, class), t) in by_class {
        classed.entry(k).or_default().push((class, t));
    }
    for (k, classes) in classed.iter().filter(|(k, _)| fed_classed.contains(*k)) {
        reg.update_workload_classes(k, classes);
    }
    live.extend(live_classed);
    reg.mark_gone_unless(|k| live.contains(k), now);
    reg.expire(now);
}

/// Tracked sockets, unattributed bytes and map fill.
fn feed_self_stats(reg: &MetricsRegistry, session: &Session, kernel: &dyn Kernel, named: &[u32]) {
    let tracked: u64 = session
        .targets()
        .iter()
        .map(|t| u64::from(t.connections.0) + u64::from(t.connections.1))
        .sum();
    let untracked = session
        .untracked(kernel)
        .map(|u| u.traffic.bytes_in + u.traffic.bytes_out)
        .unwrap_or(0);
    let mut maps = Vec::new();
    // The target-PID map holds only -p targets and their children: walk it only then.
    if !named.is_empty() {
        maps.push(MapFill {
            map: "TARGET_PIDS".into(),
            entries: kernel.target_pid_count(),
            max_entries: MAX_TARGET_PIDS,
        });
    }
    // The node-wide map was walked once this tick already: reuse its size.
    if let Some(node) = session.node() {
        maps.push(MapFill {
            map: "CGROUP_TOTALS".into(),
            entries: node.keys() as u32,
            max_entries: procnetmon2_common::knobs::cgroup_key_capacity(
                node.classes()
                    .map_or(0, |c| u32::try_from(c.names.len()).unwrap_or(u32::MAX)),
            ),
        });
        if let Some(keys) = node.dest_keys() {
            maps.push(MapFill {
                map: "NODE_DEST_TOTALS".into(),
                entries: u32::try_from(keys).unwrap_or(u32::MAX),
                max_entries: procnetmon2_common::dest::MAX_NODE_DESTS,
            });
        }
    }
    let (dns_unmatched, dns_dropped) = session.dest().map_or((0, 0), |d| {
        session
            .targets()
            .iter()
            .filter_map(|t| d.dns_counts(t.slot, kernel))
            .fold((0, 0), |(u, dr), c| (u + c.unmatched, dr + c.dropped))
    });
    reg.set_self_stats(SelfStats {
        tracked_sockets: tracked,
        untracked_bytes: untracked,
        dns_unmatched,
        dns_dropped,
        maps,
    });
}
