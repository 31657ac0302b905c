//! Before and at the start of a run: [`survey`] reads what the plan needs from the host
//! (nothing changes yet: bad input leaves nothing behind), and [`apply`] carries a [`Plan`]
//! out: run record and dedicated cgroups, load, target maps, attach, isolate, spawn, stamp
//! the sockets that predate the run, and start counting.
//!
//! Order matters and is kept here in one place: socket hooks are attached before the
//! counters and before the scan of existing sockets, so a socket created at any moment is
//! stamped either by a hook or by the scan; processes are isolated after the programs are
//! attached at their original cgroups (which contain the dedicated ones).

pub mod live;
pub mod spawn;
pub mod stamp;
mod survey;
#[cfg(test)]
mod tests;

use std::{os::fd::OwnedFd, time::Instant};

use anyhow::Context as _;
use survey::labels_of;
pub use survey::survey;

use crate::{
    config::CommandIo,
    host::{
        cgroup::{self, Cgroup2Mount},
        identity::MetadataRoots,
        lifecycle::RunState,
        procs::{PidFd, ProcFs, ProcIdentity},
        workloads::CgroupNames,
    },
    kernel::{Kernel, Programs, Slot, probes::Probes},
    plan::{CountPath, Plan, TargetKind},
    session::{
        DestTracker, HostView, NodeIfaces, NodeWide, Session, Stamped, Started, Subject,
        step::{Command, Runner},
    },
};

/// The host as found at start: where /proc and the cgroup v2 tree are, where runtimes keep
/// container names.
#[derive(Debug, Clone)]
pub struct Env {
    /// Processes (the host's with `--host-proc`).
    pub proc: ProcFs,
    /// The cgroup v2 hierarchy.
    pub mount: Cgroup2Mount,
    /// Runtime metadata (container and pod names).
    pub meta: MetadataRoots,
}

/// A run set up: what must be undone, in the order it must be undone (fields drop in
/// declaration order: programs detach first, then processes move back and dedicated cgroups
/// go).
pub struct Running {
    /// The loop: the session, the loaded programs (detached when dropped), the host, the
    /// spawned command.
    pub runner: Runner,
    /// The spawned command's pidfd: readable when it exits.
    pub pidfd: Option<PidFd>,
    /// The master side of the spawned command's pseudo-terminal (`--view -- CMD`).
    pub pty: Option<OwnedFd>,
    /// The run record: dedicated cgroups and moved processes.
    pub state: Option<RunState>,
}

/// Carries out `plan`: record, load, attach, isolate, spawn, stamp, start the session.
pub fn apply(plan: &Plan, env: &Env) -> anyhow::Result<Running> {
    let mut state = record_host_changes(plan, env)?;
    let mut programs: Box<dyn Programs> = Box::new(Probes::load(plan.knobs)?);
    fill_maps(&mut *programs, plan)?;
    attach(&mut *programs, plan, |k| {
        stamp::stamp_node_netns(k, &env.proc)
    })?;
    if plan.isolate
        && let Some(st) = state.as_mut()
    {
        isolate(st, plan)?;
    }
    // Node-wide counting starts before the command does: its cgroup is new, so all of its
    // traffic is the run's.
    let node = node_wide(plan, &*programs);
    let (command, pidfd, pty) = match plan.command() {
        Some((_, argv, cg)) => {
            let io = plan.command_io();
            let pane = if io == CommandIo::Pane {
                crate::tui::pane::pty_size_now()
            } else {
                (24, 80)
            };
            let mut c = spawn::Command::start(argv, cg, io, pane)?;
            let pid = c.pid();
            let subject = Subject::Process {
                ident: env.proc.identify(pid).unwrap_or(ProcIdentity {
                    pid,
                    comm: argv[0].clone(),
                    start_ticks: 0,
                }),
                labels: labels_of(env, pid),
            };
            let (pidfd, pty) = (c.take_pidfd(), c.take_pty());
            (Some((Box::new(c) as Box<dyn Command>, subject)), pidfd, pty)
        }
        None => (None, None, None),
    };
    let host = live::LiveHost::new(
        env.proc.clone(),
        env.mount.clone(),
        CgroupNames::new(env.mount.clone(), env.meta.clone()),
    );
    let runner = start(plan, programs, Box::new(host), node, command)?;
    Ok(Running {
        runner,
        pidfd,
        pty,
        state,
    })
}

/// Host changes (dedicated cgroups, moved processes) are recorded and undone on drop; the
/// spawn cgroup is made (and recorded) before anything is loaded.
fn record_host_changes(plan: &Plan, env: &Env) -> anyhow::Result<Option<RunState>> {
    let command = plan.command();
    let mut state = (plan.isolate || command.is_some())
        .then(|| RunState::create(&env.mount))
        .transpose()?;
    if let (Some((_, _, cg)), Some(st)) = (command, state.as_mut()) {
        st.create_spawn_cgroup(cg).with_context(|| {
            format!(
                "cannot create a cgroup for the command under {}",
                cg.parent().unwrap_or(cg).display()
            )
        })?;
    }
    Ok(state)
}

/// Fills the maps the plan decides: targets, `--all -i`'s interface filter, destination
/// classes.
fn fill_maps(kernel: &mut dyn Kernel, plan: &Plan) -> anyhow::Result<()> {
    fill_target_maps(kernel, plan)?;
    if let Some(found) = &plan.node_namespaces {
        NodeIfaces::new(&plan.counting.interfaces, found.clone())
            .install(kernel)
            .with_context(|| {
                format!(
                    "-i with --all: the {} network namespaces' interfaces do not fit the kernel's filter",
                    found.len()
                )
            })?;
    }
    if let Some(classes) = &plan.counting.classes {
        kernel.set_class_cidrs(&classes.cidrs)?;
    }
    Ok(())
}

/// Attaches every path's programs: the socket path's socket hooks at every attach point; the
/// cgroup path's programs at each of its targets' cgroups (in the order `attach_whole` keeps);
/// `--all`'s at the root (its socket hooks, then its counters); then the socket path's
/// counters. `stamp_node_netns` stamps every existing socket on the node with its namespace
/// when `--all -i` needs it (cgroup_skb cannot ask a packet's namespace): after the program
/// that stamps new sockets, before the node's counters, so no packet is counted before its
/// socket is stamped.
fn attach(
    programs: &mut dyn Programs,
    plan: &Plan,
    stamp_node_netns: impl FnOnce(&mut dyn Kernel),
) -> anyhow::Result<()> {
    for dir in &plan.attach_points {
        programs.attach_sock_hooks(dir)?;
    }
    for t in plan.targets.iter().filter(|t| t.path == CountPath::Cgroup) {
        if let Some((dir, predates)) = t.whole_cgroup() {
            // Only a cgroup that predates the run has sockets to scan.
            programs.attach_whole(dir, t.slot, predates)?;
        }
    }
    if let Some(root) = &plan.node_root {
        programs.attach_node_hooks(root)?;
        if plan.node_namespaces.is_some() && !programs.netns_helper() {
            stamp_node_netns(programs);
        }
        programs.attach_node(root)?;
    }
    for dir in &plan.attach_points {
        programs.attach_counters(dir)?;
    }
    Ok(())
}

/// `--isolate`: moves each process target into a dedicated cgroup (recorded in `st`).
fn isolate(st: &mut RunState, plan: &Plan) -> anyhow::Result<()> {
    for t in &plan.targets {
        if let TargetKind::Process {
            ident, cgroup_dir, ..
        } = &t.kind
        {
            let to = st.isolate(ident, cgroup_dir)?;
            log::info!("process {} moved to {}", ident.pid, to.display());
        }
    }
    Ok(())
}

/// `--all`: the node-wide workloads, their baselines read now.
fn node_wide(plan: &Plan, kernel: &dyn Kernel) -> Option<NodeWide> {
    plan.node_wide.then(|| {
        let c = &plan.counting;
        let node = NodeWide::start(Instant::now(), kernel, plan.series_grace, c.classes.clone());
        let node = if c.destinations {
            node.with_destinations(kernel, c.destinations_max)
        } else {
            node
        };
        // With -i a connection counts once it carried traffic through a chosen interface,
        // which a socket list cannot tell: there, workloads keep no connection counts.
        if c.interfaces.is_empty() {
            node.with_socket_counts()
        } else {
            node
        }
    })
}

/// Stamps the sockets that predate the run, reads each target's baseline and starts
/// counting: the loop, ready to run. `command` is spawn mode's, started (its slot's
/// baseline is zero: it is counted from its first instruction).
pub fn start(
    plan: &Plan,
    mut programs: Box<dyn Programs>,
    host: Box<dyn HostView>,
    node: Option<NodeWide>,
    command: Option<(Box<dyn Command>, Subject)>,
) -> anyhow::Result<Runner> {
    let (command, command_subject) = command.unzip();
    let (started, old) = stamp_and_start(&mut *programs, plan, &*host, command_subject);
    let now = Instant::now();
    let untracked_base = programs.untracked()?;
    // RTT sampling starts (epoch 0 samples nothing); each tick opens the next epoch.
    programs.set_rtt_epoch(1);
    // Read before counting is announced: traffic after the announcement is the run's.
    let dest = destinations(&*programs, plan, now);
    // Tests and scripts wait for this line (RUST_LOG=info): counting starts here.
    let dirs = plan.all_attach_dirs();
    log::info!(
        "attached at {} cgroup(s) {:?}; counting {} process(es)",
        dirs.len(),
        dirs,
        started.len()
    );
    let mut session = Session::start(
        now,
        started,
        node,
        plan.counting.interfaces.clone(),
        plan.knobs.details,
        old,
        untracked_base,
    )
    .with_interval(plan.schedule.interval);
    if let Some(d) = dest {
        session = session.with_destinations(d);
    }
    if let Some(found) = &plan.node_namespaces {
        session =
            session.with_node_ifaces(NodeIfaces::new(&plan.counting.interfaces, found.clone()));
    }
    Ok(Runner::new(
        session,
        programs,
        host,
        command,
        (plan.schedule, plan.knobs, plan.attach_points.clone()),
    ))
}

/// Per-remote-host totals and classes, when asked for; baselines as for the totals: a spawned
/// command's slot is the run's from its start.
fn destinations(kernel: &dyn Kernel, plan: &Plan, now: Instant) -> Option<DestTracker> {
    let c = &plan.counting;
    if !c.destinations && c.classes.is_none() {
        return None;
    }
    let fresh: Vec<Slot> = plan
        .targets
        .iter()
        .filter(|t| matches!(t.kind, TargetKind::Command { .. }))
        .map(|t| t.slot)
        .collect();
    Some(DestTracker::start(
        now,
        kernel,
        plan.targets.iter().map(|t| t.slot).collect(),
        &fresh,
        c.destinations,
        c.classes.clone(),
    ))
}

/// Puts every target's members and interfaces into the kernel's maps.
fn fill_target_maps(kernel: &mut dyn Kernel, plan: &Plan) -> anyhow::Result<()> {
    for t in &plan.targets {
        match &t.kind {
            TargetKind::Process {
                ident, children, ..
            } => {
                kernel.add_target_pid(ident.pid, t.slot)?;
                // Children that already exist join their target too.
                for kid in children {
                    kernel.add_target_pid(*kid, t.slot)?;
                }
            }
            // On the cgroup path the attach point is the target: no map to fill.
            _ if t.path == CountPath::Cgroup => {}
            TargetKind::Cgroup { id, .. } => kernel.add_cgroup_target(*id, t.slot)?,
            TargetKind::Command { cgroup, .. } => {
                kernel.add_cgroup_target(cgroup::cgroup_id(cgroup)?, t.slot)?;
            }
        }
        for (_, key) in &t.ifaces {
            kernel.allow_iface(*key)?;
        }
    }
    Ok(())
}

/// Stamps the sockets that predate the run and reads each target's baseline. A spawned
/// command is counted from its first instruction: its slot was empty before it started, so
/// its baseline is zero.
fn stamp_and_start(
    kernel: &mut dyn Kernel,
    plan: &Plan,
    host: &dyn HostView,
    command: Option<Subject>,
) -> (Vec<Started>, Vec<crate::host::procs::OldSocket>) {
    let mut started = Vec::new();
    let mut old = Vec::new();
    let mut command = command;
    for t in &plan.targets {
        let (subject, found) = match &t.kind {
            TargetKind::Process {
                ident,
                labels,
                children,
                ..
            } => {
                let mut found = host.stamp_existing(kernel, ident, t.slot, plan.knobs);
                for kid in children {
                    if let Some(k) = host.identify(*kid) {
                        found.merge(host.stamp_existing(kernel, &k, t.slot, plan.knobs));
                    }
                }
                let subject = Subject::Process {
                    ident: ident.clone(),
                    labels: labels.clone(),
                };
                (subject, found)
            }
            TargetKind::Cgroup { dir, info, .. } => {
                let mut found = Stamped::default();
                for pid in host.procs_in(dir) {
                    if let Some(ident) = host.identify(pid) {
                        found.merge(host.stamp_existing(kernel, &ident, t.slot, plan.knobs));
                    }
                }
                if t.path == CountPath::Cgroup {
                    kernel.end_scan(t.slot);
                }
                let subject = Subject::Cgroup {
                    dir: dir.clone(),
                    info: info.clone(),
                };
                (subject, found)
            }
            TargetKind::Command { argv, .. } => {
                let subject = command.take().unwrap_or_else(|| Subject::Process {
                    ident: ProcIdentity {
                        pid: 0,
                        comm: argv[0].clone(),
                        start_ticks: 0,
                    },
                    labels: crate::plan::ProcessLabels::default(),
                });
                (subject, Stamped::default())
            }
        };
        let (baseline, health) = if matches!(t.kind, TargetKind::Command { .. }) {
            Default::default()
        } else {
            (
                kernel.totals(t.slot).unwrap_or_default(),
                kernel.health(t.slot).unwrap_or_default(),
            )
        };
        old.extend(found.old);
        started.push(Started {
            slot: t.slot,
            subject,
            baseline,
            health,
            preexisting: found.connections,
            ifaces: t.ifaces.iter().cloned().collect(),
        });
    }
    (started, old)
}
