//! `--all`: node-wide accounting. The kernel counts every skb on the host per (cgroup,
//! protocol), and per destination class too when classes are configured; each tick this charges the growth of those counters to workloads (pod/container,
//! systemd unit or cgroup path, named by the host) and advances each workload's rate series.
//!
//! Built to survive pod churn: a cgroup id is named once, when it first carries traffic (by the
//! host, which opens it by id, or where it cannot, looks it up in an index whose walks of the
//! tree are rate-limited: until the next walk the id's counters wait, uncharged). An id the host
//! can no longer name (its cgroup was removed first) is charged to the [`UNRESOLVED`] workload. When a cgroup is
//! removed, its last counters are charged and its keys deleted from the kernel's map (so the
//! map holds live cgroups only) and the totals stay in user space, so they never go down. Late
//! packets of a removed cgroup's lingering sockets re-create its keys: they are charged to the
//! same workload (a bounded memory of retired ids) and drained again. A workload whose cgroups
//! are all gone is marked exited, reported for the grace period (`--series-grace`), then
//! forgotten. Every map here is bounded by the live cgroups, the kernel map's size or
//! [`RETIRED_IDS`].

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{
    HostView,
    node_dests::{NodeDests, WorkloadDests},
    row_of,
};
use crate::{
    classes::ClassSet,
    host::{
        sockdiag::SocketCounts,
        workloads::{CgroupInfo, Lookup},
    },
    kernel::{CgroupCountKey, Health, Kernel, Proto},
    model::{ClassTraffic, Counters, TcpHealth, Traffic, WorkloadReport},
    sampling::{Series, sum_traffic},
};

/// The workload charged with traffic of cgroups that were gone before they could be named.
pub const UNRESOLVED: &str = "unresolved";

/// Sockets are listed (`sock_diag`, every network namespace) at most this often: a gauge that
/// Prometheus reads every 15-60 s needs no more.
pub const SOCKET_COUNT_EVERY: Duration = Duration::from_secs(1);

/// A listing costs two scans of the kernel's TCP established hash and two of the UDP hash per
/// namespace (the tables are shared by all namespaces; a dump walks every bucket and keeps its
/// own namespace's sockets): measured on a 2-core host with 262,144 TCP buckets, 2.2 ms of CPU
/// per namespace, 118 ms for 54. So the next listing waits this many times as long as the last
/// one took (it takes at most 1% of the agent's time), between [`SOCKET_COUNT_EVERY`] and
/// [`SOCKET_COUNT_MAX_WAIT`].
pub const SOCKET_LIST_SHARE: u32 = 100;

/// Counts are never older than this.
pub const SOCKET_COUNT_MAX_WAIT: Duration = Duration::from_secs(60);

/// When sockets were last listed, and how long until the next listing.
#[derive(Debug, Clone, Copy)]
struct SocketListing {
    last: Option<Instant>,
    wait: Duration,
}

/// Most removed cgroup ids remembered to charge their late packets to their workload; older
/// ones are charged to [`UNRESOLVED`].
pub const RETIRED_IDS: usize = 4096;

/// One node-wide workload.
#[derive(Debug, Clone)]
pub struct NodeWorkload {
    /// What it is.
    pub info: CgroupInfo,
    /// Its rates and totals since the run started.
    pub series: Series,
    /// Its live cgroups.
    pub ids: HashSet<u64>,
    /// True once all its cgroups are gone.
    pub exited: bool,
    /// When it was seen gone: (the session's tick number, the tick's instant).
    pub gone_at: Option<(u64, Instant)>,
    /// Everything charged to it since the run started (removed cgroups' included).
    traffic: Traffic,
    /// The same per destination class (classes on): cumulative, and its rate series.
    by_class: BTreeMap<u8, (Traffic, Series)>,
    /// Its remote hosts (`--destinations`).
    dests: WorkloadDests,
    /// TCP health charged to it since the run started (removed cgroups' included), with the
    /// incoming handshakes the agent found failed.
    health: TcpHealth,
    /// Its sockets now: TCP connections in ESTABLISHED, UDP sockets bound or connected (as of
    /// the last listing, see [`SOCKET_LIST_SHARE`]; zeros when not counted).
    pub connections: SocketCounts,
}

impl NodeWorkload {
    /// TCP health since the run started.
    pub fn tcp_health(&self) -> TcpHealth {
        self.health
    }

    fn new(info: CgroupInfo, started: Instant) -> Self {
        Self {
            // A workload first seen now has been counted since the run started.
            series: Series::new(Traffic::default(), started),
            info,
            ids: HashSet::new(),
            exited: false,
            gone_at: None,
            traffic: Traffic::default(),
            by_class: BTreeMap::new(),
            dests: WorkloadDests::default(),
            health: TcpHealth::default(),
            connections: SocketCounts::default(),
        }
    }

    /// How many remote hosts it has kept apart (`--destinations`), per destination class (None
    /// with classes off): the gauge `procnetmon_remote_hosts`.
    pub fn remote_hosts(&self, set: Option<&ClassSet>) -> Vec<(Option<String>, u64)> {
        self.dests
            .host_classes()
            .into_iter()
            .map(|(class, n)| (set.zip(class).map(|(s, c)| s.name(c).to_string()), n))
            .collect()
    }
}

/// What is known of a cgroup id that carried traffic.
#[derive(Debug, Clone)]
enum Id {
    /// Not named yet (first counted at that instant): its counters are not charged yet.
    Pending(Instant),
    /// Charged to this workload.
    Named(String),
}

/// The node-wide workloads of a run.
#[derive(Debug, Clone)]
pub struct NodeWide {
    /// Per (cgroup, protocol, class), the reading charged so far (at the start: the counters
    /// then, which are not the run's). Dropped when the key is drained from the kernel.
    charged: HashMap<CgroupCountKey, Counters>,
    /// Destination classes (`--class`, `--classes`): the kernel splits its keys by class.
    classes: Option<ClassSet>,
    /// Live cgroup ids that carried traffic.
    ids: HashMap<u64, Id>,
    /// Removed cgroup ids → their workload, oldest first out.
    retired: HashMap<u64, CgroupInfo>,
    retired_order: VecDeque<u64>,
    /// By workload name.
    workloads: HashMap<String, NodeWorkload>,
    started: Instant,
    /// How long an exited workload stays in reports.
    grace: Duration,
    /// (cgroup, protocol) keys in the kernel's map at the last tick, after draining.
    keys: usize,
    /// Ticks so far.
    ticks: u64,
    /// `--destinations`: per-remote-host counters per cgroup, charged to workloads.
    dests: Option<NodeDests>,
    /// Per cgroup, the TCP health reading charged so far (at the start: the kernel's then).
    /// Dropped when the cgroup's key is drained.
    health_charged: HashMap<u64, Health>,
    /// Socket gauges on ([`NodeWide::with_socket_counts`]): when sockets were last listed.
    sockets: Option<SocketListing>,
}

impl NodeWide {
    /// Starts at `now` from the kernel's counters as they are; exited workloads are reported
    /// for `grace`. `classes`: the destination classes the kernel counts by, if any.
    pub fn start(
        now: Instant,
        kernel: &dyn Kernel,
        grace: Duration,
        classes: Option<ClassSet>,
    ) -> Self {
        Self {
            charged: kernel
                .cgroup_totals()
                .into_iter()
                .map(|c| ((c.cgroup_id, c.proto, c.class), c.counters))
                .collect(),
            classes,
            ids: HashMap::new(),
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            workloads: HashMap::new(),
            started: now,
            grace,
            keys: 0,
            ticks: 0,
            dests: None,
            health_charged: kernel.node_health().into_iter().collect(),
            sockets: None,
        }
    }

    /// Whether workloads' sockets are counted ([`Self::with_socket_counts`]).
    pub fn counts_sockets(&self) -> bool {
        self.sockets.is_some()
    }

    /// Whether workloads keep their remote hosts (`--destinations`).
    pub fn keeps_destinations(&self) -> bool {
        self.dests.is_some()
    }

    /// Counts each workload's sockets (TCP in ESTABLISHED, UDP bound or connected) from the
    /// host's socket lists: its `tcp_connections`/`udp_connections`. Off with `-i`, whose
    /// connection counts mean traffic through a chosen interface, which a socket list cannot
    /// tell.
    #[must_use]
    pub fn with_socket_counts(mut self) -> Self {
        self.sockets = Some(SocketListing {
            last: None,
            wait: SOCKET_COUNT_EVERY,
        });
        self
    }

    /// `--destinations`: keeps each workload's remote hosts, `cap` per workload, from the
    /// kernel's counts now (the baseline).
    #[must_use]
    pub fn with_destinations(mut self, kernel: &dyn Kernel, cap: u64) -> Self {
        self.dests = Some(NodeDests::start(self.started, kernel, cap));
        self
    }

    /// Reads the per-cgroup counters, charges their growth to workloads, drains removed
    /// cgroups from the kernel's map, and retires workloads gone longer than the grace period.
    /// `tick`: the session's tick number (for [`NodeWorkload::gone_at`]).
    pub fn sample(
        &mut self,
        now: Instant,
        tick: u64,
        kernel: &mut dyn Kernel,
        host: &mut dyn HostView,
    ) {
        self.ticks = tick;
        // Liveness first, the map read second, the delete right after: a packet of a removed
        // cgroup can only be lost between this call's read and delete (microseconds), and
        // only from a socket that outlived its cgroup; later ones re-create the key.
        let gone: Vec<u64> = self
            .ids
            .iter()
            .filter(|(id, s)| matches!(s, Id::Named(_)) && !host.cgroup_id_alive(**id))
            .map(|(id, _)| *id)
            .collect();
        let mut by_id: HashMap<u64, Vec<(Proto, Option<u8>, Counters)>> = HashMap::new();
        let totals = kernel.cgroup_totals();
        let read = totals.len();
        for c in totals {
            by_id
                .entry(c.cgroup_id)
                .or_default()
                .push((c.proto, c.class, c.counters));
        }
        let dest_readings = self.dests.as_mut().map(|d| d.read(kernel));
        let mut drain: Vec<u64> = gone.clone();
        // The keys read per id: what draining an id deletes. A key created after the read
        // belongs to a retired id by the next tick, which drains it then.
        let per_id: HashMap<u64, Vec<CgroupCountKey>> = by_id
            .iter()
            .map(|(id, r)| (*id, r.iter().map(|(p, c, _)| (*id, *p, *c)).collect()))
            .collect();
        // Oldest cgroup (lowest id) first: with `--destinations`, the hosts first charged to
        // a workload keep their place under its cap, and the same readings always decide alike.
        let mut by_id: Vec<_> = by_id.into_iter().collect();
        by_id.sort_unstable_by_key(|(id, _)| *id);
        for (id, readings) in by_id {
            let Some(info) = self.owner(id, now, host, &mut drain) else {
                continue; // pending: charged once named
            };
            let reading = dest_readings.as_ref().and_then(|r| r.get(&id));
            self.charge(id, info, readings, reading);
        }
        self.charge_health(now, kernel, host, &mut drain);
        self.forget(&gone);
        drain.sort_unstable();
        drain.dedup();
        let keys: Vec<CgroupCountKey> = drain
            .iter()
            .filter_map(|id| per_id.get(id))
            .flatten()
            .copied()
            .collect();
        let drained: HashSet<u64> = drain.iter().copied().collect();
        self.charged.retain(|k, _| !drained.contains(&k.0));
        self.health_charged.retain(|id, _| !drained.contains(id));
        kernel.remove_cgroup_counts(&keys);
        kernel.remove_node_health(&drain);
        if let (Some(d), Some(r)) = (self.dests.as_mut(), dest_readings.as_ref()) {
            d.drain(kernel, &drain, r);
        }
        self.keys = read - keys.len();
        self.update_workloads(now);
        self.count_sockets(now, host);
    }

    /// Sets each workload's socket gauge from the host's socket lists (by cgroup id), at most
    /// every [`SOCKET_COUNT_EVERY`] and no more than 1/[`SOCKET_LIST_SHARE`] of the time. Sockets
    /// of cgroups that carried no traffic yet, or whose traffic waits to be named, belong to no
    /// workload yet: not counted.
    fn count_sockets(&mut self, now: Instant, host: &mut dyn HostView) {
        let Some(listing) = &mut self.sockets else {
            return;
        };
        if listing
            .last
            .is_some_and(|t| now.saturating_duration_since(t) < listing.wait)
        {
            return;
        }
        listing.last = Some(now);
        // Its real duration, whatever clock `now` comes from.
        let started = Instant::now();
        let counts = host.sockets_by_cgroup();
        listing.wait = (started.elapsed() * SOCKET_LIST_SHARE)
            .clamp(SOCKET_COUNT_EVERY, SOCKET_COUNT_MAX_WAIT);
        for w in self.workloads.values_mut() {
            w.connections = SocketCounts::default();
        }
        for (id, c) in counts {
            if let Some(Id::Named(name)) = self.ids.get(&id)
                && let Some(w) = self.workloads.get_mut(name)
            {
                w.connections = w.connections.plus(c);
            }
        }
    }

    /// Charges the growth of cgroup `id`'s counters since the last reading (by protocol and
    /// class, and its remote hosts' `reading`) to its workload `info`.
    fn charge(
        &mut self,
        id: u64,
        info: CgroupInfo,
        readings: Vec<(Proto, Option<u8>, Counters)>,
        reading: Option<&super::node_dests::CgroupReading>,
    ) {
        let mut delta = Traffic::default();
        let mut class_delta: BTreeMap<u8, Traffic> = BTreeMap::new();
        for (proto, class, cur) in readings {
            let before = self
                .charged
                .insert((id, proto, class), cur)
                .unwrap_or_default();
            let d = cur.minus(before);
            add_proto(&mut delta, proto, d);
            if let Some(c) = class {
                add_proto(class_delta.entry(c).or_default(), proto, d);
            }
        }
        let started = self.started;
        let w = self
            .workloads
            .entry(info.workload.clone())
            .or_insert_with(|| NodeWorkload::new(info, started));
        w.traffic = sum_traffic([&w.traffic, &delta]);
        for (c, d) in class_delta {
            let e = w
                .by_class
                .entry(c)
                .or_insert_with(|| (Traffic::default(), Series::new(Traffic::default(), started)));
            e.0 = sum_traffic([&e.0, &d]);
        }
        if let (Some(d), Some(r)) = (self.dests.as_mut(), reading) {
            d.charge(id, r, &mut w.dests);
        }
        if matches!(self.ids.get(&id), Some(Id::Named(_))) {
            w.ids.insert(id);
        }
    }

    /// Charges the growth of each cgroup's TCP health to its workload (ids not named yet wait,
    /// uncharged, as their traffic does).
    fn charge_health(
        &mut self,
        now: Instant,
        kernel: &dyn Kernel,
        host: &mut dyn HostView,
        drain: &mut Vec<u64>,
    ) {
        for (id, h) in kernel.node_health() {
            let Some(info) = self.owner(id, now, host, drain) else {
                continue;
            };
            let before = self.health_charged.insert(id, h).unwrap_or_default();
            let d = h.minus(&before).report();
            let w = self.workload_mut(info);
            w.health = w.health.plus(&d);
        }
    }

    /// Incoming handshakes of cgroup `id`'s listeners the agent found failed.
    pub fn add_handshake_failures(&mut self, id: u64, n: u64) {
        let info = match self.ids.get(&id) {
            Some(Id::Named(name)) => self.workloads.get(name).map(|w| w.info.clone()),
            _ => self.retired.get(&id).cloned(),
        };
        if let Some(info) = info {
            let w = self.workload_mut(info);
            w.health.connect_failures = w.health.connect_failures.saturating_add(n);
        }
    }

    /// The workload `info` names, created (counted from the run's start) when new.
    fn workload_mut(&mut self, info: CgroupInfo) -> &mut NodeWorkload {
        let started = self.started;
        self.workloads
            .entry(info.workload.clone())
            .or_insert_with(|| NodeWorkload::new(info, started))
    }

    /// Forgets removed cgroups `gone`; a workload left without cgroups is retired.
    fn forget(&mut self, gone: &[u64]) {
        for id in gone {
            if let Some(Id::Named(name)) = self.ids.remove(id) {
                let info = self.workloads.get_mut(&name).map(|w| {
                    w.ids.remove(id);
                    w.info.clone()
                });
                if let Some(info) = info {
                    self.retire(*id, info);
                }
            }
        }
    }

    /// Which workload traffic of `id` is charged to, naming the id if it is new; None while
    /// the host has not indexed it yet. Ids that are gone are added to `drain`.
    fn owner(
        &mut self,
        id: u64,
        now: Instant,
        host: &mut dyn HostView,
        drain: &mut Vec<u64>,
    ) -> Option<CgroupInfo> {
        if let Some(info) = self.retired.get(&id) {
            // Late packets of a removed cgroup: same workload, drained again at once.
            drain.push(id);
            return Some(info.clone());
        }
        let first_seen = match self.ids.get(&id) {
            Some(Id::Named(name)) => {
                if let Some(w) = self.workloads.get(name) {
                    return Some(w.info.clone());
                }
                now
            }
            Some(Id::Pending(at)) => *at,
            None => now,
        };
        match host.cgroup_lookup(id, first_seen) {
            Lookup::Found(info) => {
                self.ids.insert(id, Id::Named(info.workload.clone()));
                Some(*info)
            }
            Lookup::Pending => {
                self.ids.insert(id, Id::Pending(first_seen));
                None
            }
            Lookup::Gone => {
                self.ids.remove(&id);
                let info = unresolved();
                self.retire(id, info.clone());
                drain.push(id);
                Some(info)
            }
        }
    }

    /// Remembers a removed id's workload, forgetting the oldest beyond [`RETIRED_IDS`].
    fn retire(&mut self, id: u64, info: CgroupInfo) {
        if self.retired.insert(id, info).is_none() {
            self.retired_order.push_back(id);
        }
        while self.retired_order.len() > RETIRED_IDS {
            if let Some(old) = self.retired_order.pop_front() {
                self.retired.remove(&old);
            }
        }
    }

    /// Advances every workload's series; notes exits and revivals; forgets workloads gone
    /// longer than the grace period.
    fn update_workloads(&mut self, now: Instant) {
        let (tick, grace) = (self.ticks, self.grace);
        let dt = self.dests.as_mut().map(|d| d.tick_interval(now));
        self.workloads.retain(|name, w| {
            w.series.update_at(now, w.traffic);
            if let Some(dt) = dt {
                w.dests.advance(dt);
            }
            for (t, s) in w.by_class.values_mut() {
                s.update_at(now, *t);
            }
            let exited = w.ids.is_empty() && name != UNRESOLVED;
            if exited && !w.exited {
                w.gone_at = Some((tick, now));
            } else if !exited {
                w.gone_at = None;
            }
            w.exited = exited;
            // Kept at least one tick after it went, so its final totals are fed and reported.
            w.gone_at.is_none_or(|(gone_tick, at)| {
                gone_tick == tick || now.saturating_duration_since(at) < grace
            })
        });
    }

    /// The workloads by name (those exited for less than the grace period).
    pub fn workloads(&self) -> &HashMap<String, NodeWorkload> {
        &self.workloads
    }

    /// Destination classes, when the kernel counts by them.
    pub fn classes(&self) -> Option<&ClassSet> {
        self.classes.as_ref()
    }

    /// (cgroup, protocol, class) keys the kernel held at the last tick (map-fill metric).
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// `--destinations`: (cgroup, remote host) keys the kernel held at the last tick.
    pub fn dest_keys(&self) -> Option<usize> {
        self.dests.as_ref().map(NodeDests::keys)
    }

    /// Cgroup ids remembered after removal (bounded by [`RETIRED_IDS`]).
    pub fn retired(&self) -> usize {
        self.retired.len()
    }

    /// Report rows, sorted by name.
    pub fn reports(&self, is_final: bool) -> Vec<WorkloadReport> {
        let mut names: Vec<&String> = self.workloads.keys().collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let w = &self.workloads[name];
                let mut row = row_of(&w.series, (w.connections.tcp, w.connections.udp), is_final);
                row.health = w.health;
                WorkloadReport {
                    name: name.clone(),
                    cgroup: w.info.path.clone(),
                    container: w.info.container.clone(),
                    exited: w.exited,
                    row,
                    traffic: w.series.since_start(),
                    connections: None,
                    destinations: self
                        .dests
                        .as_ref()
                        .map(|d| w.dests.rows(self.classes.as_ref(), is_final, d.elapsed())),
                    classes: self.classes.as_ref().map(|set| w.class_rows(set, is_final)),
                    dns: None,
                }
            })
            .collect()
    }
}

impl NodeWorkload {
    /// JSON `classes`: the classes that carried traffic, in class order (as for targets).
    fn class_rows(&self, set: &ClassSet, is_final: bool) -> Vec<ClassTraffic> {
        self.by_class
            .iter()
            .filter(|(_, (t, _))| t.total() != Counters::default())
            .map(|(i, (_, s))| {
                let row = row_of(s, (0, 0), is_final);
                ClassTraffic {
                    class: set.name(*i).to_string(),
                    counters: row.counters,
                    rate_in: row.rate_in,
                    rate_out: row.rate_out,
                    by_protocol: s.since_start(),
                }
            })
            .collect()
    }

    /// Traffic since the start per class name, by protocol (the metrics' `destination_class`);
    /// None with classes off.
    pub fn class_traffic(&self, set: Option<&ClassSet>) -> Option<Vec<(String, Traffic)>> {
        let set = set?;
        Some(
            self.by_class
                .iter()
                .map(|(i, (_, s))| (set.name(*i).to_string(), s.since_start()))
                .collect(),
        )
    }
}

/// Adds `d` to `t`'s counters of `proto`.
fn add_proto(t: &mut Traffic, proto: Proto, d: Counters) {
    let c = match proto {
        Proto::Tcp => &mut t.tcp,
        Proto::Udp => &mut t.udp,
        Proto::Other => &mut t.other,
    };
    *c = c.plus(d);
}

fn unresolved() -> CgroupInfo {
    CgroupInfo {
        path: String::new(),
        container: None,
        workload: UNRESOLVED.into(),
    }
}
