//! A run in progress: each target's counters, rates and liveness, the node-wide workloads
//! of `--all`, and the report (snapshot) built from them.
//!
//! [`Session::tick`] reads the kernel once per interval (through the [`Kernel`] seam) and
//! the host (through [`HostView`]): totals → rates and peaks (`sampling::Series`), gauges →
//! live connections, liveness → exits, `-i` names → the kernel's interface filter.
//! [`Session::snapshot`] turns that state into a [`Report`], the one value every output
//! (table, JSON, metrics) is written from. Both are tested against `kernel::fake` and a fake
//! host, without root.

pub mod decide;
pub mod dest;
pub mod dns_names;
#[cfg(test)]
pub(crate) mod fake_host;
pub mod feed;
pub mod handshakes;
pub mod node;
pub mod node_dests;
pub mod node_ifaces;
pub mod step;

#[cfg(test)]
mod tests;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    details::DetailTracker,
    host::{
        netns::NetnsLinks,
        procs::{OldSocket, ProcIdentity, TcpPairs},
        sockdiag::SocketCounts,
        workloads::{CgroupInfo, Lookup},
    },
    kernel::{HandshakeOwner, Health, IfaceKey, Kernel, Knobs, Slot, Untracked},
    model::{ConnDetail, Gap, ProcessReport, Report, Row, TcpHealth, Traffic, WorkloadReport},
    plan::ProcessLabels,
    sampling::{Series, sum_traffic},
};

pub use dest::DestTracker;
pub use node::NodeWide;
pub use node_ifaces::NodeIfaces;

/// What the run needs from the host once set up: each tick (liveness, names, interfaces), and
/// when a target's sockets must be stamped (at start, and when it moves to another cgroup).
/// `setup::live::LiveHost` reads the real host; tests script `fake_host::FakeHost`.
pub trait HostView {
    /// Process `pid` as it is now (None when it is gone).
    fn identify(&self, pid: u32) -> Option<ProcIdentity>;
    /// The cgroup v2 directory process `pid` is in now (None when it is gone).
    fn cgroup_of(&self, pid: u32) -> Option<PathBuf>;
    /// Every process in cgroup subtree `dir`.
    fn procs_in(&self, dir: &std::path::Path) -> Vec<u32>;
    /// Stamps every inet socket process `t` holds now as target `slot`'s (see
    /// `setup::stamp`): what it found.
    fn stamp_existing(
        &self,
        kernel: &mut dyn Kernel,
        t: &ProcIdentity,
        slot: Slot,
        knobs: Knobs,
    ) -> Stamped;
    /// True while process `t` (same PID and start time) runs.
    fn process_alive(&self, t: &ProcIdentity) -> bool;
    /// How long process `t` has run.
    fn runtime(&self, t: &ProcIdentity) -> Duration;
    /// True while cgroup directory `dir` exists.
    fn cgroup_alive(&self, dir: &std::path::Path) -> bool;
    /// The interfaces of `pid`'s network namespace.
    fn links(&self, pid: u32) -> Option<NetnsLinks>;
    /// `--all -i`: every network namespace a process lives in, (inode, one PID in it).
    fn namespaces(&self) -> Vec<(u64, u32)>;
    /// `--all`: what cgroup `id` is; `first_seen` is when its traffic was first counted (a
    /// look at the tree after that which misses it means the cgroup is gone).
    fn cgroup_lookup(&mut self, id: u64, first_seen: Instant) -> Lookup;
    /// `--all`: true while cgroup `id` exists.
    fn cgroup_id_alive(&self, id: u64) -> bool;
    /// `--details`: (RTT µs, retransmits, TCP state) of a connection that predates the run.
    fn tcp_info(&self, s: &OldSocket) -> Option<(u32, u32, u8)>;
    /// The (local, remote) addresses of every TCP socket in `pid`'s network namespace, request
    /// mini-sockets included (None: the process is gone).
    fn tcp_pairs(&self, pid: u32) -> Option<TcpPairs>;
    /// `--all`: a process in cgroup `id` (None: none, or the cgroup is gone).
    fn pid_in_cgroup(&mut self, id: u64) -> Option<u32>;
    /// `--all`: sockets per cgroup id over every network namespace (TCP in ESTABLISHED, UDP
    /// bound or connected).
    fn sockets_by_cgroup(&mut self) -> HashMap<u64, SocketCounts>;
}

/// What a session target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A process: named with `-p`, or the command of spawn mode.
    Process {
        /// Who it is.
        ident: ProcIdentity,
        /// Names for reports.
        labels: ProcessLabels,
    },
    /// A whole cgroup (`--cgroup`, `--container`).
    Cgroup {
        /// Its directory.
        dir: PathBuf,
        /// Names for reports.
        info: CgroupInfo,
    },
}

/// What stamping one process's existing sockets found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// Connections it counted now: (TCP established, UDP bound or connected).
    pub connections: (i64, i64),
    /// Its TCP sockets, for `--details`.
    pub old: Vec<OldSocket>,
}

impl Stamped {
    /// Adds another process's findings (a target's children).
    pub fn merge(&mut self, o: Self) {
        self.connections.0 += o.connections.0;
        self.connections.1 += o.connections.1;
        self.old.extend(o.old);
    }
}

/// A target as set-up leaves it: counting has started.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its slot.
    pub slot: Slot,
    /// What it is.
    pub subject: Subject,
    /// Its counters when counting started (zero for a spawned command).
    pub baseline: Traffic,
    /// Its TCP health when counting started (zero for a spawned command).
    pub health: Health,
    /// Connections that predate the run, counted by the agent (tcp, udp).
    pub preexisting: (i64, i64),
    /// `-i` names with their keys as resolved at set-up.
    pub ifaces: HashMap<String, IfaceKey>,
}

/// One target's running state.
#[derive(Debug, Clone)]
pub struct TargetState {
    /// Its slot.
    pub slot: Slot,
    /// What it is.
    pub subject: Subject,
    /// Rates, peaks and totals since the start.
    pub series: Series,
    /// The latest cumulative reading.
    pub last: Traffic,
    /// Set when it ended (processes: their runtime then).
    pub exited: Option<Duration>,
    /// The session tick at which it was seen ended.
    pub exited_tick: Option<u64>,
    /// Connections that predate the run (tcp, udp); the kernel's gauge takes them out when
    /// they close.
    pub preexisting: (i64, i64),
    /// Live connections now (tcp, udp).
    pub connections: (u32, u32),
    /// `-i` names and their keys as last resolved.
    pub ifaces: HashMap<String, IfaceKey>,
    /// Times its traffic could not be seen (moves to other cgroups), oldest first.
    pub gaps: Vec<Gap>,
    /// TCP health when counting started, and as last read.
    pub health: (Health, Health),
    /// Incoming handshakes found failed by the agent (see [`handshakes`]) since the start.
    pub handshake_failures: u64,
}

impl TargetState {
    /// TCP health since counting started.
    pub fn tcp_health(&self) -> TcpHealth {
        let mut h = self.health.1.minus(&self.health.0).report();
        h.connect_failures = h.connect_failures.saturating_add(self.handshake_failures);
        h
    }
}

/// Which report to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// A report of the run so far (continuous output).
    Interval,
    /// The `-t` window's report: averages for rates.
    Final,
}

/// The run's state between ticks.
pub struct Session {
    targets: Vec<TargetState>,
    aggregate: Series,
    node: Option<NodeWide>,
    interfaces: Vec<String>,
    details: Option<DetailTracker>,
    old_sockets: Vec<OldSocket>,
    iface_filter: bool,
    untracked_base: Untracked,
    /// The nominal interval: a cut-off interval shorter than half of it sets no peak.
    interval: Duration,
    /// Ticks so far (the first is 1).
    ticks: u64,
    /// Remote hosts and classes (`--destinations`, `--class`); None when neither is asked.
    dest: Option<DestTracker>,
    /// `--all -i`: the interface filter of every namespace on the node.
    node_ifaces: Option<NodeIfaces>,
    /// TCP health events the kernel could not charge, as last warned about.
    health_lost: u64,
}

impl Session {
    /// Starts counting at `now`: `targets` with their baselines; `node` for `--all`;
    /// `interfaces` the `-i` names (watched for removal and re-add); `details` on with
    /// `--details`; `untracked_base` the kernel's unattributed counts at the start.
    pub fn start(
        now: Instant,
        targets: Vec<Started>,
        node: Option<NodeWide>,
        interfaces: Vec<String>,
        details: bool,
        old_sockets: Vec<OldSocket>,
        untracked_base: Untracked,
    ) -> Self {
        let targets: Vec<TargetState> = targets
            .into_iter()
            .map(|t| TargetState {
                slot: t.slot,
                subject: t.subject,
                series: Series::new(t.baseline, now),
                last: t.baseline,
                exited: None,
                exited_tick: None,
                preexisting: t.preexisting,
                connections: (0, 0),
                ifaces: t.ifaces,
                health: (t.health, t.health),
                handshake_failures: 0,
                gaps: Vec::new(),
            })
            .collect();
        let aggregate = Series::new(sum_traffic(targets.iter().map(|t| &t.last)), now);
        Self {
            targets,
            aggregate,
            node,
            iface_filter: !interfaces.is_empty(),
            interfaces,
            details: details.then(DetailTracker::default),
            old_sockets,
            untracked_base,
            interval: Duration::ZERO,
            ticks: 0,
            dest: None,
            node_ifaces: None,
            health_lost: 0,
        }
    }

    /// `--all -i`: follows namespaces and interfaces that appear mid-run (see [`NodeIfaces`]).
    #[must_use]
    pub fn with_node_ifaces(mut self, ifaces: NodeIfaces) -> Self {
        self.node_ifaces = Some(ifaces);
        self
    }

    /// Tracks remote hosts and destination classes (see [`DestTracker`]).
    #[must_use]
    pub fn with_destinations(mut self, dest: DestTracker) -> Self {
        self.dest = Some(dest);
        self
    }

    /// Remote hosts and classes, when tracked.
    pub fn dest(&self) -> Option<&DestTracker> {
        self.dest.as_ref()
    }

    /// Sets the nominal interval (see [`Self::tick_partial`]).
    #[must_use]
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Notes a time target `slot`'s traffic could not be seen (it is in every later report).
    pub fn note_gap(&mut self, slot: Slot, gap: Gap) {
        if let Some(t) = self.targets.iter_mut().find(|t| t.slot == slot) {
            t.gaps.push(gap);
        }
    }

    /// Ticks so far: the number of the last one (0 before the first).
    pub fn ticks(&self) -> u64 {
        self.ticks
    }

    /// The targets, in slot order.
    pub fn targets(&self) -> &[TargetState] {
        &self.targets
    }

    /// `--all`'s workloads.
    pub fn node(&self) -> Option<&NodeWide> {
        self.node.as_ref()
    }

    /// True when there are targets and every one has ended (`--all` alone never ends so).
    pub fn all_gone(&self) -> bool {
        !self.targets.is_empty() && self.targets.iter().all(|t| t.exited.is_some())
    }

    /// One interval: reads every target's totals and gauges, advances rates, notes exits,
    /// samples `--all`, and follows `-i` interfaces that went away or came back.
    pub fn tick(
        &mut self,
        now: Instant,
        kernel: &mut dyn Kernel,
        host: &mut dyn HostView,
    ) -> anyhow::Result<()> {
        self.tick_spanning(now, Duration::ZERO, kernel, host)
    }

    /// A tick that ends an interval early (the window's end, a signal, the command's exit):
    /// counted like any other, but a stub shorter than half an interval sets no peak.
    pub fn tick_partial(
        &mut self,
        now: Instant,
        kernel: &mut dyn Kernel,
        host: &mut dyn HostView,
    ) -> anyhow::Result<()> {
        self.tick_spanning(now, self.interval / 2, kernel, host)
    }

    fn tick_spanning(
        &mut self,
        now: Instant,
        min_peak_span: Duration,
        kernel: &mut dyn Kernel,
        host: &mut dyn HostView,
    ) -> anyhow::Result<()> {
        self.ticks += 1;
        for t in &mut self.targets {
            sample(t, now, min_peak_span, kernel, host)?;
            if t.exited.is_some() && t.exited_tick.is_none() {
                t.exited_tick = Some(self.ticks);
            }
        }
        self.aggregate.update_spanning(
            now,
            sum_traffic(self.targets.iter().map(|t| &t.last)),
            min_peak_span,
        );
        if let Some(ni) = &mut self.node_ifaces {
            ni.tick(kernel, host);
        }
        if let Some(node) = &mut self.node {
            node.sample(now, self.ticks, kernel, host);
        }
        if let Some(dest) = &mut self.dest {
            dest.tick(now, kernel);
        }
        self.resolve_handshakes(kernel, host);
        self.warn_health_lost(kernel);
        // A new RTT epoch: each socket may give one more sample (never 0: "no epoch yet").
        kernel.set_rtt_epoch((self.ticks % u64::from(u32::MAX)) as u32 + 1);
        if !self.interfaces.is_empty() {
            for t in self.targets.iter_mut().filter(|t| t.exited.is_none()) {
                watch_ifaces(t, &self.interfaces, kernel, host);
            }
        }
        Ok(())
    }

    /// Incoming handshakes of watched listeners that never completed (see [`handshakes`]).
    fn resolve_handshakes(&mut self, kernel: &mut dyn Kernel, host: &mut dyn HostView) {
        let targets = &self.targets;
        let pid_of = |host: &mut dyn HostView, o: &HandshakeOwner| match o.slot {
            Some(slot) => targets
                .iter()
                .find(|t| t.slot == slot && t.exited.is_none())
                .and_then(|t| match &t.subject {
                    Subject::Process { ident, .. } => Some(ident.pid),
                    Subject::Cgroup { dir, .. } => host.procs_in(dir).first().copied(),
                }),
            None => o.cgroup_id.and_then(|id| host.pid_in_cgroup(id)),
        };
        let failed = handshakes::resolve(kernel, host, crate::details::monotonic_ns(), pid_of);
        for t in &mut self.targets {
            if let Some(n) = failed.by_slot.get(&t.slot) {
                t.handshake_failures += n;
            }
        }
        if let Some(node) = &mut self.node {
            for (id, n) in failed.by_cgroup {
                node.add_handshake_failures(id, n);
            }
        }
    }

    /// Says when TCP health events went uncharged since the last tick (never silent).
    fn warn_health_lost(&mut self, kernel: &dyn Kernel) {
        let lost = kernel.health_lost();
        if lost > self.health_lost {
            log::warn!(
                "{} TCP health event(s) could not be charged (--all: more cgroups than the kernel's health map holds, {}, or a socket's cgroup stamp not allocated; or more incoming handshakes in flight than {} recorded)",
                lost - self.health_lost,
                crate::kernel::MAX_NODE_HEALTH,
                crate::kernel::MAX_HANDSHAKES
            );
        }
        self.health_lost = lost;
    }

    /// What could not be attributed since the start.
    pub fn untracked(&self, kernel: &dyn Kernel) -> anyhow::Result<Untracked> {
        let now = kernel.untracked()?;
        let base = self.untracked_base;
        Ok(Untracked {
            traffic: now.traffic.minus(base.traffic),
            sockets: now.sockets.saturating_sub(base.sockets),
            processes: now.processes.saturating_sub(base.processes),
        })
    }

    /// The report of the run as of the last tick. With `--details`, reads the connection
    /// records (`now`, `mono_ns`: CLOCK_MONOTONIC) and forgets those it shows closed.
    pub fn snapshot(
        &mut self,
        kind: ReportKind,
        aggregate: bool,
        clock: (Instant, u64),
        kernel: &mut dyn Kernel,
        host: &dyn HostView,
    ) -> anyhow::Result<Report> {
        let mut details = self.details(clock, kernel, host);
        let is_final = kind == ReportKind::Final;
        let untracked = self.untracked(kernel)?;
        let mut workloads: Vec<WorkloadReport> = Vec::new();
        let mut processes: Vec<ProcessReport> = Vec::new();
        let dest = self.dest.as_ref();
        for t in &self.targets {
            let mut row = row_of(&t.series, t.connections, is_final);
            row.health = t.tcp_health();
            match &t.subject {
                Subject::Process { ident, labels } => {
                    let conns = details
                        .as_mut()
                        .map(|d| d.remove(&t.slot).unwrap_or_default());
                    let mut destinations = dest.and_then(|d| d.destinations(t.slot, is_final));
                    if let (Some(ds), Some(cs)) = (destinations.as_mut(), conns.as_ref()) {
                        dest::count_connections(ds, cs);
                    }
                    processes.push(ProcessReport {
                        container: labels.container.clone(),
                        nspid: labels.nspid,
                        pid: ident.pid,
                        name: ident.comm.clone(),
                        runtime: t.exited.unwrap_or_else(|| host.runtime(ident)),
                        exited: t.exited.is_some(),
                        row,
                        traffic: t.series.since_start(),
                        connections: conns,
                        destinations,
                        classes: dest.and_then(|d| d.classes(t.slot, is_final)),
                        dns: dest.and_then(|d| d.dns_counts(t.slot, &*kernel)),
                        gaps: gaps_at(&t.gaps, clock.1),
                    });
                }
                Subject::Cgroup { info, .. } => workloads.push(WorkloadReport {
                    name: info.workload.clone(),
                    cgroup: info.path.clone(),
                    container: info.container.clone(),
                    exited: t.exited.is_some(),
                    row,
                    traffic: t.series.since_start(),
                    connections: details
                        .as_mut()
                        .map(|d| d.remove(&t.slot).unwrap_or_default()),
                    destinations: dest.and_then(|d| d.destinations(t.slot, is_final)),
                    classes: dest.and_then(|d| d.classes(t.slot, is_final)),
                    dns: dest.and_then(|d| d.dns_counts(t.slot, &*kernel)),
                }),
            }
        }
        if let Some(node) = &self.node {
            workloads.extend(node.reports(is_final));
        }
        let aggregated = aggregate.then(|| {
            let conns = self.targets.iter().fold((0, 0), |(a, b), t| {
                (a + t.connections.0, b + t.connections.1)
            });
            let mut row = row_of(&self.aggregate, conns, is_final);
            row.health = self
                .targets
                .iter()
                .fold(TcpHealth::default(), |acc, t| acc.plus(&t.tcp_health()));
            row
        });
        Ok(Report {
            timestamp: chrono::Local::now().fixed_offset(),
            processes,
            aggregated,
            workloads,
            untracked: untracked.traffic,
            untracked_sockets: untracked.sockets,
            untracked_processes: untracked.processes,
            is_final,
        })
    }

    /// `--details`: rows per slot from the kernel's records; closed ones are shown once and
    /// forgotten.
    fn details(
        &mut self,
        (now, mono_ns): (Instant, u64),
        kernel: &mut dyn Kernel,
        host: &dyn HostView,
    ) -> Option<HashMap<Slot, Vec<ConnDetail>>> {
        let tracker = self.details.as_mut()?;
        for s in &self.old_sockets {
            if let Some((rtt, retrans, state)) = host.tcp_info(s) {
                kernel.refresh_connection(s.cookie, rtt, retrans, state);
            }
        }
        let rows = tracker.update(now, mono_ns, kernel.connections(), self.iface_filter);
        for c in &rows.forget {
            kernel.forget_connection(*c);
        }
        Some(rows.by_slot)
    }
}

/// A target's gaps as of `mono_ns`: one still going lasts until then.
fn gaps_at(gaps: &[Gap], mono_ns: u64) -> Vec<Gap> {
    gaps.iter()
        .map(|g| Gap {
            to_ns: if g.ongoing {
                mono_ns.max(g.from_ns)
            } else {
                g.to_ns
            },
            ..g.clone()
        })
        .collect()
}

/// Reads one target's totals and gauges; notes its exit.
fn sample(
    t: &mut TargetState,
    now: Instant,
    min_peak_span: Duration,
    kernel: &dyn Kernel,
    host: &dyn HostView,
) -> anyhow::Result<()> {
    let cur = kernel.totals(t.slot)?;
    t.series.update_spanning(now, cur, min_peak_span);
    t.last = cur;
    t.health.1 = kernel.health(t.slot)?;
    if t.exited.is_some() {
        return Ok(());
    }
    let alive = match &t.subject {
        Subject::Process { ident, .. } => host.process_alive(ident),
        Subject::Cgroup { dir, .. } => host.cgroup_alive(dir),
    };
    if alive {
        let (tcp, udp) = kernel.gauges(t.slot)?;
        t.connections = (
            (tcp + t.preexisting.0).clamp(0, i64::from(u32::MAX)) as u32,
            (udp + t.preexisting.1).clamp(0, i64::from(u32::MAX)) as u32,
        );
    } else {
        t.exited = Some(match &t.subject {
            Subject::Process { ident, .. } => host.runtime(ident),
            Subject::Cgroup { .. } => Duration::ZERO,
        });
        t.connections = (0, 0);
    }
    Ok(())
}

/// Re-resolves `-i` names in a process target's namespace: warns when an interface goes
/// away, comes back or is recreated, and updates the kernel's filter so counting continues
/// on what remains and resumes on re-add.
fn watch_ifaces(
    t: &mut TargetState,
    names: &[String],
    kernel: &mut dyn Kernel,
    host: &dyn HostView,
) {
    let Subject::Process { ident, .. } = &t.subject else {
        return;
    };
    let Some(links) = host.links(ident.pid) else {
        return;
    };
    for n in names {
        let now = links.index_of(n).map(|ifindex| IfaceKey {
            netns_cookie: links.cookie,
            ifindex,
        });
        match (t.ifaces.get(n).copied(), now) {
            (Some(b), Some(k)) if b == k => {}
            (Some(b), None) => {
                log::warn!(
                    "interface {n} is gone from the namespace of process {}; counting continues on the others",
                    ident.pid
                );
                kernel.deny_iface(b);
                t.ifaces.remove(n);
            }
            (before, Some(k)) => {
                if let Some(b) = before {
                    kernel.deny_iface(b);
                }
                log::warn!(
                    "interface {n} is back in the namespace of process {} (ifindex {}); counting it again",
                    ident.pid,
                    k.ifindex
                );
                if let Err(e) = kernel.allow_iface(k) {
                    log::warn!("{e:#}");
                }
                t.ifaces.insert(n.clone(), k);
            }
            (None, None) => {}
        }
    }
}

/// A report row from a series: last interval's rates, or the window's averages when final.
pub fn row_of(series: &Series, connections: (u32, u32), is_final: bool) -> Row {
    let (rate_in, rate_out) = if is_final {
        series.average()
    } else {
        (series.rate_in, series.rate_out)
    };
    Row {
        counters: series.since_start().total(),
        rate_in,
        rate_out,
        peak_rate_in: series.peak_in,
        peak_rate_out: series.peak_out,
        tcp_connections: connections.0,
        udp_connections: connections.1,
        health: TcpHealth::default(),
    }
}
