//! `--all --destinations`: per-remote-host totals per node-wide workload (issue 17).
//!
//! The kernel counts every socket's packets per (cgroup, remote address), at most `cap` hosts
//! per cgroup, the rest in that cgroup's `other` (so a chatty cgroup fills its own room only).
//! Counts are cumulative in the kernel, so nothing is lost between ticks; each tick charges
//! their growth to the cgroup's workload (named by [`super::node`]), where the cap holds
//! again per workload (a pod of several containers keeps `cap` hosts apart; the hosts past it
//! are charged to its `other`, first come keeps its place, so a row never jumps between a
//! host and `other`). A removed cgroup's keys are deleted from the kernel with its counters
//! (drained), and its workload keeps what it was charged.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    classes::ClassSet,
    kernel::{Kernel, NodeDestCount, NodeDestKey},
    model::{Counters, Destination},
    sampling::rate_bps,
};

/// Cumulative traffic with one remote host (or `other`) and its last interval's rates.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    class: Option<u8>,
    total: Counters,
    prev: Counters,
    rate_in: f64,
    rate_out: f64,
}

impl Acc {
    fn advance(&mut self, dt: Duration) {
        let d = self.total.minus(self.prev);
        self.rate_in = rate_bps(d.bytes_in, dt);
        self.rate_out = rate_bps(d.bytes_out, dt);
        self.prev = self.total;
    }

    /// (in, out): the last interval's, or the average over `elapsed` when final.
    fn rates(&self, is_final: bool, elapsed: Duration) -> (f64, f64) {
        if is_final {
            (
                rate_bps(self.total.bytes_in, elapsed),
                rate_bps(self.total.bytes_out, elapsed),
            )
        } else {
            (self.rate_in, self.rate_out)
        }
    }
}

/// One workload's remote hosts since the run started.
#[derive(Debug, Clone, Default)]
pub struct WorkloadDests {
    hosts: HashMap<IpAddr, Acc>,
    other: Acc,
}

impl WorkloadDests {
    /// Charges growth `d` with `addr`: to its own row, or to `other` once `cap` hosts are
    /// kept apart.
    fn charge(&mut self, addr: IpAddr, class: Option<u8>, d: Counters, cap: u64) {
        if d == Counters::default() {
            return;
        }
        let acc = if self.hosts.contains_key(&addr) || (self.hosts.len() as u64) < cap {
            self.hosts.entry(addr).or_insert(Acc {
                class,
                ..Acc::default()
            })
        } else {
            &mut self.other
        };
        acc.total = acc.total.plus(d);
    }

    /// Takes the interval's rates (every tick, after charging).
    pub fn advance(&mut self, dt: Duration) {
        for a in self.hosts.values_mut() {
            a.advance(dt);
        }
        self.other.advance(dt);
    }

    /// The hosts kept apart, counted per class (None: classes off, or a host seen before its
    /// class was known), in class order.
    pub fn host_classes(&self) -> Vec<(Option<u8>, u64)> {
        let mut by: std::collections::BTreeMap<Option<u8>, u64> = Default::default();
        for a in self.hosts.values() {
            *by.entry(a.class).or_default() += 1;
        }
        by.into_iter().collect()
    }

    /// JSON `destinations`: hosts busiest first, `other` last when it carried traffic.
    pub fn rows(
        &self,
        classes: Option<&ClassSet>,
        is_final: bool,
        elapsed: Duration,
    ) -> Vec<Destination> {
        let row = |remote: String, a: &Acc, hosts: Option<u64>| {
            let (rate_in, rate_out) = a.rates(is_final, elapsed);
            Destination {
                remote,
                name: None,
                class: classes.zip(a.class).map(|(c, i)| c.name(i).to_string()),
                counters: a.total,
                rate_in,
                rate_out,
                hosts,
                connections: None,
            }
        };
        let mut out: Vec<Destination> = self
            .hosts
            .iter()
            .map(|(addr, a)| row(addr.to_string(), a, None))
            .collect();
        let volume = |d: &Destination| d.counters.bytes_in + d.counters.bytes_out;
        out.sort_by(|a, b| volume(b).cmp(&volume(a)).then(a.remote.cmp(&b.remote)));
        if self.other.total != Counters::default() {
            out.push(row(
                "other".into(),
                &self.other,
                Some(self.hosts.len() as u64),
            ));
        }
        out
    }
}

/// One tick's kernel readings of one cgroup: its hosts and its `other`.
#[derive(Debug, Default)]
pub struct CgroupReading {
    hosts: Vec<NodeDestCount>,
    other: Option<Counters>,
}

/// The node-wide remote-host counters between ticks: what has been charged of each kernel key.
#[derive(Debug, Clone)]
pub struct NodeDests {
    cap: u64,
    charged: HashMap<NodeDestKey, Counters>,
    other_charged: HashMap<u64, Counters>,
    /// Traffic no `other` entry could take, as last read (warned about when it grows).
    lost: Counters,
    /// Host keys in the kernel's map after the last drain (map-fill metric).
    keys: usize,
    started: Instant,
    last: Instant,
}

impl NodeDests {
    /// Starts at `now` with the kernel's counts as the baseline; `cap` hosts per workload.
    pub fn start(now: Instant, kernel: &dyn Kernel, cap: u64) -> Self {
        Self {
            cap,
            charged: kernel
                .node_destinations()
                .into_iter()
                .map(|d| (d.key(), d.counters))
                .collect(),
            other_charged: kernel
                .node_dest_other()
                .into_iter()
                .map(|(id, o)| (id, o.counters))
                .collect(),
            lost: kernel.node_dest_lost(),
            keys: 0,
            started: now,
            last: now,
        }
    }

    /// This tick's readings by cgroup id.
    pub fn read(&mut self, kernel: &dyn Kernel) -> HashMap<u64, CgroupReading> {
        let mut by_id: HashMap<u64, CgroupReading> = HashMap::new();
        for d in kernel.node_destinations() {
            by_id.entry(d.cgroup_id).or_default().hosts.push(d);
        }
        for (id, o) in kernel.node_dest_other() {
            by_id.entry(id).or_default().other = Some(o.counters);
        }
        let lost = kernel.node_dest_lost();
        if lost != self.lost {
            let d = lost.minus(self.lost);
            log::warn!(
                "--destinations: {} bytes of more cgroups than the kernel's map holds were not split by remote host (still in their workloads' totals)",
                d.bytes_in + d.bytes_out
            );
            self.lost = lost;
        }
        self.keys = by_id.values().map(|r| r.hosts.len()).sum();
        by_id
    }

    /// Charges the growth of cgroup `id`'s counters to its workload's hosts.
    /// New hosts take the workload's free places busiest first.
    pub fn charge(&mut self, id: u64, reading: &CgroupReading, w: &mut WorkloadDests) {
        let mut growth: Vec<(&NodeDestCount, Counters)> = reading
            .hosts
            .iter()
            .map(|d| {
                let before = self.charged.insert(d.key(), d.counters).unwrap_or_default();
                (d, d.counters.minus(before))
            })
            .collect();
        let volume = |c: &Counters| c.bytes_in + c.bytes_out;
        growth.sort_by(|a, b| {
            volume(&b.1)
                .cmp(&volume(&a.1))
                .then(a.0.addr.cmp(&b.0.addr))
        });
        for (d, g) in growth {
            w.charge(d.addr, d.class, g, self.cap);
        }
        if let Some(cur) = reading.other {
            let before = self.other_charged.insert(id, cur).unwrap_or_default();
            w.other.total = w.other.total.plus(cur.minus(before));
        }
    }

    /// Deletes the keys of removed cgroups `ids` (charged this tick) from the kernel.
    pub fn drain(
        &mut self,
        kernel: &mut dyn Kernel,
        ids: &[u64],
        readings: &HashMap<u64, CgroupReading>,
    ) {
        if ids.is_empty() {
            return;
        }
        let keys: Vec<NodeDestKey> = ids
            .iter()
            .filter_map(|id| readings.get(id))
            .flat_map(|r| r.hosts.iter().map(NodeDestCount::key))
            .collect();
        self.charged.retain(|k, _| !ids.contains(&k.0));
        self.other_charged.retain(|id, _| !ids.contains(id));
        self.keys -= keys.len().min(self.keys);
        kernel.remove_node_dests(&keys, ids);
    }

    /// The tick's interval (since the last one), and notes `now` as the last tick.
    pub fn tick_interval(&mut self, now: Instant) -> Duration {
        let dt = now.saturating_duration_since(self.last);
        self.last = now;
        dt
    }

    /// Time since the run started, up to the last tick (for final averages).
    pub fn elapsed(&self) -> Duration {
        self.last.saturating_duration_since(self.started)
    }

    /// Host keys in the kernel's map at the last tick.
    pub fn keys(&self) -> usize {
        self.keys
    }
}
