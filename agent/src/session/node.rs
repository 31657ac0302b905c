//! `--all`: node-wide accounting. The kernel counts every skb on the host per (cgroup,
//! protocol); each tick this groups those counters by workload (pod/container, systemd
//! unit or cgroup path, named by the host) and advances each workload's rate series. A
//! workload whose cgroups are all gone is marked exited.

use std::{collections::HashMap, time::Instant};

use super::{HostView, row_of};
use crate::{
    host::workloads::CgroupInfo,
    kernel::{Kernel, Proto},
    model::{Counters, Traffic, WorkloadReport},
    sampling::Series,
};

/// One node-wide workload.
#[derive(Debug, Clone)]
pub struct NodeWorkload {
    /// What it is.
    pub info: CgroupInfo,
    /// Its rates and totals since the run started.
    pub series: Series,
    /// Its cgroups as of the last tick.
    pub ids: Vec<u64>,
    /// True once all its cgroups are gone.
    pub exited: bool,
}

/// The node-wide workloads of a run.
#[derive(Debug, Clone)]
pub struct NodeWide {
    /// Counters at the start, per (cgroup, protocol), so reports show the run's traffic.
    base: HashMap<(u64, Proto), Counters>,
    /// By workload name.
    workloads: HashMap<String, NodeWorkload>,
    started: Instant,
    /// (cgroup, protocol) keys in the kernel's map at the last tick.
    keys: usize,
}

impl NodeWide {
    /// Starts at `now` from the kernel's counters as they are.
    pub fn start(now: Instant, kernel: &dyn Kernel) -> Self {
        Self {
            base: kernel
                .cgroup_totals()
                .into_iter()
                .map(|c| ((c.cgroup_id, c.proto), c.counters))
                .collect(),
            workloads: HashMap::new(),
            started: now,
            keys: 0,
        }
    }

    /// Reads the per-cgroup counters and groups them by workload.
    pub fn sample(&mut self, now: Instant, kernel: &dyn Kernel, host: &mut dyn HostView) {
        let mut cur: HashMap<String, (Traffic, CgroupInfo, Vec<u64>)> = HashMap::new();
        let totals = kernel.cgroup_totals();
        self.keys = totals.len();
        for c in totals {
            let counters = c.counters.minus(
                self.base
                    .get(&(c.cgroup_id, c.proto))
                    .copied()
                    .unwrap_or_default(),
            );
            let info = host.cgroup_info(c.cgroup_id).unwrap_or_else(|| CgroupInfo {
                path: format!("cgroup-id:{}", c.cgroup_id),
                container: None,
                workload: format!("cgroup-id:{}", c.cgroup_id),
            });
            let e = cur
                .entry(info.workload.clone())
                .or_insert_with(|| (Traffic::default(), info, Vec::new()));
            match c.proto {
                Proto::Tcp => e.0.tcp = e.0.tcp.plus(counters),
                Proto::Udp => e.0.udp = e.0.udp.plus(counters),
                Proto::Other => e.0.other = e.0.other.plus(counters),
            }
            if !e.2.contains(&c.cgroup_id) {
                e.2.push(c.cgroup_id);
            }
        }
        for (name, (traffic, info, ids)) in cur {
            // A workload first seen now has been counted since the run started.
            let started = self.started;
            let w = self.workloads.entry(name).or_insert_with(|| NodeWorkload {
                info,
                series: Series::new(Traffic::default(), started),
                ids: Vec::new(),
                exited: false,
            });
            w.series.update_at(now, traffic);
            w.ids = ids;
        }
        for w in self.workloads.values_mut() {
            w.exited = !w.ids.iter().any(|id| host.cgroup_id_alive(*id));
        }
    }

    /// The workloads by name.
    pub fn workloads(&self) -> &HashMap<String, NodeWorkload> {
        &self.workloads
    }

    /// (cgroup, protocol) keys the kernel held at the last tick (map-fill metric).
    pub fn keys(&self) -> usize {
        self.keys
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
                }
            })
            .collect()
    }
}
