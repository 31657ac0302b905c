//! Before and at the start of a run: [`survey`] reads what the plan needs from the host
//! (nothing changes yet: bad input leaves nothing behind), and [`apply`] carries a [`Plan`]
//! out: run record and dedicated cgroups, load, target maps, attach, isolate, spawn, stamp
//! the sockets that predate the run, and start counting.
//!
//! Order matters and is kept here in one place: socket hooks are attached before the
//! counters and before the scan of existing sockets, so a socket created at any moment is
//! stamped either by a hook or by the scan; processes are isolated after the programs are
//! attached at their original cgroups (which contain the dedicated ones).

pub mod spawn;
pub mod stamp;
mod survey;

use std::{collections::HashSet, path::PathBuf, time::Instant};

use anyhow::Context as _;
use survey::labels_of;
pub use survey::survey;

use crate::{
    config::Config,
    host::{
        cgroup::{self, Cgroup2Mount},
        identity::MetadataRoots,
        lifecycle::RunState,
        procs::{ProcFs, ProcIdentity},
        workloads::CgroupNames,
    },
    kernel::{Kernel, Knobs, Slot, probes::Probes},
    plan::{Coverage, Plan, TargetKind, coverage},
    session::{DestTracker, NodeWide, Session, Started, Subject, live::LiveHost},
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
    /// The loaded, attached programs.
    pub probes: Probes,
    /// The run record: dedicated cgroups and moved processes.
    pub state: Option<RunState>,
    /// Spawn mode's command.
    pub command: Option<spawn::Command>,
    /// Counting state.
    pub session: Session,
    /// The host as the session reads it.
    pub host: LiveHost,
    /// Where the programs are attached (grows when a target moves elsewhere).
    pub points: Vec<PathBuf>,
    /// Cgroups a target moved to that could not be attached (warned about once).
    uncovered: HashSet<PathBuf>,
    knobs: Knobs,
    env: Env,
}

/// Carries out `plan`: record, load, attach, isolate, spawn, stamp, start the session.
pub fn apply(plan: &Plan, cfg: &Config, env: &Env) -> anyhow::Result<Running> {
    let command = plan.command();
    let mut state = record_host_changes(plan, env)?;
    let mut probes = load(plan, cfg)?;
    attach(&mut probes, plan, env)?;
    if plan.isolate
        && let Some(st) = state.as_mut()
    {
        isolate(st, plan)?;
    }
    // Node-wide counting starts before the command does: its cgroup is new, so all of its
    // traffic is the run's.
    let node = plan.node_wide.then(|| {
        NodeWide::start(
            Instant::now(),
            &probes,
            cfg.series_grace,
            cfg.classes.clone(),
        )
    });
    let node = node.map(|n| {
        let n = if cfg.destinations {
            n.with_destinations(&probes, cfg.destinations_max)
        } else {
            n
        };
        // With -i a connection counts once it carried traffic through a chosen interface,
        // which a socket list cannot tell: there, workloads keep no connection counts.
        if cfg.interfaces.is_empty() {
            n.with_socket_counts()
        } else {
            n
        }
    });
    let command = match command {
        Some((_, argv, cg)) => Some(spawn::Command::start(argv, cg)?),
        None => None,
    };
    let (started, old) = stamp_and_start(&mut probes, plan, env, command.as_ref());
    let now = Instant::now();
    let untracked_base = probes.untracked()?;
    // Read before counting is announced: traffic after the announcement is the run's.
    let dest = destinations(&probes, plan, cfg, now);
    // Tests and scripts wait for this line (RUST_LOG=info): counting starts here.
    log::info!(
        "attached at {} cgroup(s) {:?}; counting {} process(es)",
        plan.attach_points.len(),
        plan.attach_points,
        started.len()
    );
    let mut session = Session::start(
        now,
        started,
        node,
        cfg.interfaces.clone(),
        plan.knobs.details,
        old,
        untracked_base,
    )
    .with_interval(cfg.interval);
    if let Some(d) = dest {
        session = session.with_destinations(d);
    }
    if let Some(ni) = &plan.node_ifaces {
        session = session.with_node_ifaces(ni.clone());
    }

    Ok(Running {
        probes,
        state,
        command,
        session,
        host: LiveHost::new(
            env.proc.clone(),
            CgroupNames::new(env.mount.clone(), env.meta.clone()),
        ),
        points: plan.attach_points.clone(),
        uncovered: HashSet::new(),
        knobs: plan.knobs,
        env: env.clone(),
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

/// Loads the programs and fills the maps the plan decides: targets, `--all -i`'s interface
/// filter, destination classes.
fn load(plan: &Plan, cfg: &Config) -> anyhow::Result<Probes> {
    let mut probes = Probes::load(plan.knobs)?;
    fill_target_maps(&mut probes, plan)?;
    if let Some(ni) = &plan.node_ifaces {
        ni.install(&mut probes).with_context(|| {
            format!(
                "-i with --all: the {} network namespaces' interfaces do not fit the kernel's filter",
                ni.namespaces()
            )
        })?;
    }
    if let Some(classes) = &cfg.classes {
        probes.set_class_cidrs(&classes.cidrs)?;
    }
    Ok(probes)
}

/// Attaches the socket hooks, then the counters, at every attach point.
fn attach(probes: &mut Probes, plan: &Plan, env: &Env) -> anyhow::Result<()> {
    let cgroups = plan
        .attach_points
        .iter()
        .map(|d| cgroup::open_dir(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for cg in &cgroups {
        probes.attach_sock_hooks(cg)?;
    }
    // `--all -i` where cgroup_skb cannot ask a packet's namespace: every socket on the node
    // needs its namespace stamped. New ones are stamped by sock_create (attached above);
    // those that predate the run, here, before the counters are attached.
    if plan.node_ifaces.is_some() && !probes.netns_helper() {
        stamp::stamp_node_netns(probes, &env.proc);
    }
    for cg in &cgroups {
        probes.attach_counters(cg)?;
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

/// Per-remote-host totals and classes, when asked for; baselines as for the totals: a spawned
/// command's slot is the run's from its start.
fn destinations(probes: &Probes, plan: &Plan, cfg: &Config, now: Instant) -> Option<DestTracker> {
    if !cfg.destinations && cfg.classes.is_none() {
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
        probes,
        plan.targets.iter().map(|t| t.slot).collect(),
        &fresh,
        cfg.destinations,
        cfg.classes.clone(),
    ))
}

impl Running {
    /// Follows process targets that moved to a cgroup the programs do not cover: attaches
    /// there too and stamps the sockets made since the move. A move to an ancestor of an
    /// attach point cannot be followed (the point's packets would count twice): warned once.
    pub fn follow_moves(&mut self) {
        let moved: Vec<(ProcIdentity, Slot, PathBuf)> = self
            .session
            .targets()
            .iter()
            .filter(|t| t.exited.is_none())
            .filter_map(|t| match &t.subject {
                Subject::Process { ident, .. } => {
                    let dir = self.env.mount.dir_of_pid(&self.env.proc, ident.pid).ok()?;
                    Some((ident.clone(), t.slot, dir))
                }
                Subject::Cgroup { .. } => None,
            })
            .collect();
        for (ident, slot, dir) in moved {
            match coverage(&self.points, &dir) {
                Coverage::Covered => {}
                _ if self.uncovered.contains(&dir) => {}
                Coverage::Attach => match self.attach_at(&dir) {
                    Ok(()) => {
                        log::warn!(
                            "process {} moved to cgroup {}: counting there too",
                            ident.pid,
                            dir.display()
                        );
                        stamp::stamp_existing(
                            &mut self.probes,
                            &self.env.proc,
                            &ident,
                            slot,
                            self.knobs,
                        );
                    }
                    Err(e) => {
                        log::warn!(
                            "process {} moved to cgroup {}, which cannot be attached ({e:#}): its new sockets are not counted",
                            ident.pid,
                            dir.display()
                        );
                        self.uncovered.insert(dir);
                    }
                },
                Coverage::Ancestor => {
                    log::warn!(
                        "process {} moved to cgroup {}, an ancestor of where procnetmon2 is attached: its new sockets are not counted; restart procnetmon2 to follow it",
                        ident.pid,
                        dir.display()
                    );
                    self.uncovered.insert(dir);
                }
            }
        }
    }

    fn attach_at(&mut self, dir: &std::path::Path) -> anyhow::Result<()> {
        let cg = cgroup::open_dir(dir)?;
        self.probes.attach_sock_hooks(&cg)?;
        self.probes.attach_counters(&cg)?;
        self.points.push(dir.to_path_buf());
        Ok(())
    }
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

/// Stamps the sockets that predate the run and reads each target's baseline: counting
/// starts now. A spawned command is counted from its first instruction: its slot was empty
/// before it started, so its baseline is zero.
fn stamp_and_start(
    probes: &mut Probes,
    plan: &Plan,
    env: &Env,
    command: Option<&spawn::Command>,
) -> (Vec<Started>, Vec<stamp::OldSocket>) {
    let mut started = Vec::new();
    let mut old = Vec::new();
    for t in &plan.targets {
        let (subject, found) = match &t.kind {
            TargetKind::Process {
                ident,
                labels,
                children,
                ..
            } => {
                let mut found = stamp::stamp_existing(probes, &env.proc, ident, t.slot, plan.knobs);
                for kid in children {
                    if let Ok(k) = env.proc.identify(*kid) {
                        found.merge(stamp::stamp_existing(
                            probes, &env.proc, &k, t.slot, plan.knobs,
                        ));
                    }
                }
                let subject = Subject::Process {
                    ident: ident.clone(),
                    labels: labels.clone(),
                };
                (subject, found)
            }
            TargetKind::Cgroup { dir, info, .. } => {
                let found = stamp_cgroup(probes, env, dir, t.slot, plan.knobs);
                let subject = Subject::Cgroup {
                    dir: dir.clone(),
                    info: info.clone(),
                };
                (subject, found)
            }
            TargetKind::Command { argv, .. } => {
                let pid = command.map_or(0, spawn::Command::pid);
                let ident = env.proc.identify(pid).unwrap_or(ProcIdentity {
                    pid,
                    comm: argv[0].clone(),
                    start_ticks: 0,
                });
                let subject = Subject::Process {
                    labels: labels_of(env, pid),
                    ident,
                };
                (subject, stamp::Stamped::default())
            }
        };
        let baseline = if matches!(t.kind, TargetKind::Command { .. }) {
            Default::default()
        } else {
            probes.totals(t.slot).unwrap_or_default()
        };
        old.extend(found.old);
        started.push(Started {
            slot: t.slot,
            subject,
            baseline,
            preexisting: found.connections,
            ifaces: t.ifaces.iter().cloned().collect(),
        });
    }
    (started, old)
}

/// Stamps the sockets of every process in cgroup subtree `dir`.
fn stamp_cgroup(
    kernel: &mut dyn Kernel,
    env: &Env,
    dir: &std::path::Path,
    slot: Slot,
    knobs: Knobs,
) -> stamp::Stamped {
    let mut found = stamp::Stamped::default();
    for pid in cgroup::procs_in_subtree(dir) {
        if let Ok(ident) = env.proc.identify(pid) {
            found.merge(stamp::stamp_existing(
                kernel, &env.proc, &ident, slot, knobs,
            ));
        }
    }
    found
}
