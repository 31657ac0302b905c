//! `--all`: node-wide accounting. The kernel counts every skb on the host per (cgroup,
//! protocol); each tick this charges the growth of those counters to workloads (pod/container,
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
    collections::{HashMap, HashSet, VecDeque},
    time::{Duration, Instant},
};

use super::{HostView, row_of};
use crate::{
    host::workloads::{CgroupInfo, Lookup},
    kernel::{Kernel, Proto},
    model::{Counters, Traffic, WorkloadReport},
    sampling::{Series, sum_traffic},
};

/// The workload charged with traffic of cgroups that were gone before they could be named.
pub const UNRESOLVED: &str = "unresolved";

/// Most removed cgroup ids remembered to charge their late packets to their workload; older
/// ones are charged to [`UNRESOLVED`].
pub const RETIRED_IDS: usize = 4096;

const PROTOS: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Other];

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
    /// Per (cgroup, protocol), the reading charged so far (at the start: the counters then,
    /// which are not the run's). Dropped when the key is drained from the kernel.
    charged: HashMap<(u64, Proto), Counters>,
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
}

impl NodeWide {
    /// Starts at `now` from the kernel's counters as they are; exited workloads are reported
    /// for `grace`.
    pub fn start(now: Instant, kernel: &dyn Kernel, grace: Duration) -> Self {
        Self {
            charged: kernel
                .cgroup_totals()
                .into_iter()
                .map(|c| ((c.cgroup_id, c.proto), c.counters))
                .collect(),
            ids: HashMap::new(),
            retired: HashMap::new(),
            retired_order: VecDeque::new(),
            workloads: HashMap::new(),
            started: now,
            grace,
            keys: 0,
            ticks: 0,
        }
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
        let mut by_id: HashMap<u64, Vec<(Proto, Counters)>> = HashMap::new();
        let totals = kernel.cgroup_totals();
        let read = totals.len();
        for c in totals {
            by_id
                .entry(c.cgroup_id)
                .or_default()
                .push((c.proto, c.counters));
        }
        let mut drain: Vec<u64> = gone.clone();
        let per_id: HashMap<u64, usize> = by_id.iter().map(|(id, r)| (*id, r.len())).collect();
        for (id, readings) in by_id {
            let Some(info) = self.owner(id, now, host, &mut drain) else {
                continue; // pending: charged once named
            };
            let mut delta = Traffic::default();
            for (proto, cur) in readings {
                let before = self.charged.insert((id, proto), cur).unwrap_or_default();
                let d = cur.minus(before);
                match proto {
                    Proto::Tcp => delta.tcp = d,
                    Proto::Udp => delta.udp = d,
                    Proto::Other => delta.other = d,
                }
            }
            let started = self.started;
            let w = self
                .workloads
                .entry(info.workload.clone())
                .or_insert_with(|| NodeWorkload {
                    // A workload first seen now has been counted since the run started.
                    series: Series::new(Traffic::default(), started),
                    info,
                    ids: HashSet::new(),
                    exited: false,
                    gone_at: None,
                    traffic: Traffic::default(),
                });
            w.traffic = sum_traffic([&w.traffic, &delta]);
            if matches!(self.ids.get(&id), Some(Id::Named(_))) {
                w.ids.insert(id);
            }
        }
        for id in gone {
            if let Some(Id::Named(name)) = self.ids.remove(&id) {
                let info = self.workloads.get_mut(&name).map(|w| {
                    w.ids.remove(&id);
                    w.info.clone()
                });
                if let Some(info) = info {
                    self.retire(id, info);
                }
            }
        }
        drain.sort_unstable();
        drain.dedup();
        let keys: Vec<(u64, Proto)> = drain
            .iter()
            .flat_map(|id| PROTOS.map(|p| (*id, p)))
            .collect();
        for k in &keys {
            self.charged.remove(k);
        }
        kernel.remove_cgroup_counts(&keys);
        self.keys = read - drain.iter().filter_map(|id| per_id.get(id)).sum::<usize>();
        self.update_workloads(now);
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
        self.workloads.retain(|name, w| {
            w.series.update_at(now, w.traffic);
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

    /// (cgroup, protocol) keys the kernel held at the last tick (map-fill metric).
    pub fn keys(&self) -> usize {
        self.keys
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
                WorkloadReport {
                    name: name.clone(),
                    cgroup: w.info.path.clone(),
                    container: w.info.container.clone(),
                    exited: w.exited,
                    row: row_of(&w.series, (0, 0), is_final),
                    traffic: w.series.since_start(),
                    connections: None,
                    // Node-wide counting is by cgroup, not by target slot: no remote hosts.
                    destinations: None,
                    classes: None,
                }
            })
            .collect()
    }
}

fn unresolved() -> CgroupInfo {
    CgroupInfo {
        path: String::new(),
        container: None,
        workload: UNRESOLVED.into(),
    }
}
