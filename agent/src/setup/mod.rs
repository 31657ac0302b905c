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

use std::{collections::HashMap, time::Instant};

use anyhow::Context as _;

use crate::{
    config::Config,
    error::UsageError,
    host::{
        cgroup::{self, Cgroup2Mount},
        identity::{self, MetadataRoots},
        lifecycle::RunState,
        netns::{self, NetnsLinks},
        procs::{ProcFs, ProcIdentity},
        workloads::{self, CgroupNames},
    },
    kernel::{IfaceKey, Kernel, Knobs, Slot, probes::Probes},
    plan::{CgroupFacts, Ifaces, Plan, ProcessFacts, ProcessLabels, Survey, TargetKind},
    session::{NodeWide, Session, Started, Subject, live::LiveHost},
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

/// Reads everything the plan needs; refuses bad targets with a usage error.
pub fn survey(cfg: &Config, env: &Env) -> anyhow::Result<Survey> {
    // A flag this kernel cannot do is refused before anything changes.
    if !cfg.interfaces.is_empty() {
        crate::kernel::features::check_iface_filter()?;
    }
    let kids = if cfg.children && !cfg.pids.is_empty() {
        env.proc.descendants(&cfg.pids)
    } else {
        Vec::new()
    };
    let mut processes = Vec::new();
    for &pid in &cfg.pids {
        let ident = env
            .proc
            .identify(pid)
            .map_err(|e| UsageError::new(e.to_string()))?;
        processes.push(ProcessFacts {
            cgroup_dir: env.mount.dir_of_pid(&env.proc, pid)?,
            labels: labels_of(env, pid),
            ifaces: if cfg.interfaces.is_empty() {
                Vec::new()
            } else {
                resolve_ifaces(&env.proc, pid, &cfg.interfaces)?
            },
            children: kids
                .iter()
                .filter(|(root, _)| *root == pid)
                .map(|(_, kid)| *kid)
                .collect(),
            ident,
        });
    }
    let dirs = cfg
        .cgroups
        .iter()
        .map(|p| env.mount.resolve_target(p))
        .chain(cfg.containers.iter().map(|id| env.mount.find_container(id)));
    let mut cgroups = Vec::new();
    for dir in dirs {
        let dir = dir.map_err(|e| UsageError::new(format!("{e:#}")))?;
        cgroups.push(CgroupFacts {
            id: cgroup::cgroup_id(&dir)?,
            info: workloads::describe(&env.mount, &dir, &env.meta),
            ifaces: if cfg.interfaces.is_empty() {
                Vec::new()
            } else {
                resolve_cgroup_ifaces(&env.proc, &dir, &cfg.interfaces)?
            },
            dir,
        });
    }
    // The agent's own cgroup, from its own /proc (not the host's: its PID differs there).
    let own_cgroup = if cfg.command.is_empty() {
        env.mount.mount_point.clone()
    } else {
        env.mount
            .dir_of_pid(&ProcFs::default(), std::process::id())?
    };
    Ok(Survey {
        mount_point: env.mount.mount_point.clone(),
        processes,
        cgroups,
        own_cgroup,
        agent_pid: std::process::id(),
    })
}

/// Names of process `pid` for reports: container identity, NSpid, workload.
fn labels_of(env: &Env, pid: u32) -> ProcessLabels {
    // Its cgroup, read once: container identity and workload name both come from it.
    let cg_path = env.proc.cgroup_path(pid);
    ProcessLabels {
        container: cg_path
            .as_deref()
            .and_then(identity::parse_cgroup_path)
            .map(|mut c| {
                identity::enrich(&mut c, &env.meta);
                c
            }),
        nspid: env.proc.nspid(pid),
        unit: cg_path
            .as_deref()
            .map_or_else(String::new, identity::workload_name),
    }
}

fn keys_in(links: &NetnsLinks, names: &[String]) -> Ifaces {
    names
        .iter()
        .filter_map(|n| {
            links.index_of(n).map(|ifindex| {
                (
                    n.clone(),
                    IfaceKey {
                        netns_cookie: links.cookie,
                        ifindex,
                    },
                )
            })
        })
        .collect()
}

/// Resolves `-i` names in `pid`'s namespace; an unknown name is a usage error that lists the
/// namespace's interfaces.
fn resolve_ifaces(proc: &ProcFs, pid: u32, names: &[String]) -> anyhow::Result<Ifaces> {
    let links = netns::links_of(proc, pid)?;
    if let Some(n) = names.iter().find(|n| links.index_of(n).is_none()) {
        return Err(UsageError::new(format!(
            "-i: no interface '{n}' in the network namespace of process {pid} (it has: {}); name one of those",
            links.names()
        ))
        .into());
    }
    Ok(keys_in(&links, names))
}

/// Resolves `-i` names in the network namespaces of the processes in cgroup `dir`: each name
/// must exist in at least one of them.
fn resolve_cgroup_ifaces(
    proc: &ProcFs,
    dir: &std::path::Path,
    names: &[String],
) -> anyhow::Result<Ifaces> {
    let mut seen: HashMap<u64, NetnsLinks> = HashMap::new();
    for pid in cgroup::procs_in_subtree(dir) {
        if let Ok(l) = netns::links_of(proc, pid) {
            seen.entry(l.cookie).or_insert(l);
        }
    }
    if seen.is_empty() {
        log::warn!(
            "-i: cgroup {} has no processes to resolve interfaces in; nothing is counted for it until one appears",
            dir.display()
        );
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for n in names {
        let found: Ifaces = seen
            .values()
            .flat_map(|l| keys_in(l, std::slice::from_ref(n)))
            .collect();
        if found.is_empty() {
            let have: Vec<String> = seen.values().map(NetnsLinks::names).collect();
            return Err(UsageError::new(format!(
                "-i: no interface '{n}' in the network namespaces of cgroup {} (they have: {}); name one of those",
                dir.display(),
                have.join("; ")
            ))
            .into());
        }
        out.extend(found);
    }
    Ok(out)
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
}

/// Carries out `plan`.
pub fn apply(plan: &Plan, cfg: &Config, env: &Env) -> anyhow::Result<Running> {
    let command = plan.command();
    // Host changes (dedicated cgroups, moved processes) are recorded and undone on drop.
    let mut state = (plan.isolate || command.is_some())
        .then(|| RunState::create(&env.mount))
        .transpose()?;
    if let (Some((_, _, cg)), Some(st)) = (command, state.as_mut()) {
        st.create_cgroup(cg).with_context(|| {
            format!(
                "cannot create a cgroup for the command under {}",
                cg.parent().unwrap_or(cg).display()
            )
        })?;
    }
    let mut probes = Probes::load(plan.knobs)?;
    fill_target_maps(&mut probes, plan)?;
    let cgroups = plan
        .attach_points
        .iter()
        .map(|d| cgroup::open_dir(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for cg in &cgroups {
        probes.attach_sock_hooks(cg)?;
    }
    for cg in &cgroups {
        probes.attach_counters(cg)?;
    }
    if plan.isolate
        && let Some(st) = state.as_mut()
    {
        for t in &plan.targets {
            if let TargetKind::Process {
                ident, cgroup_dir, ..
            } = &t.kind
            {
                let to = st.isolate(ident, cgroup_dir)?;
                log::info!("process {} moved to {}", ident.pid, to.display());
            }
        }
    }
    let command = match command {
        Some((_, argv, cg)) => Some(spawn::Command::start(argv, cg)?),
        None => None,
    };
    let (started, old) = stamp_and_start(&mut probes, plan, env, command.as_ref());
    let now = Instant::now();
    let node = plan.node_wide.then(|| NodeWide::start(now, &probes));
    let untracked_base = probes.untracked()?;
    // Tests and scripts wait for this line (RUST_LOG=info): counting starts here.
    log::info!(
        "attached at {} cgroup(s) {:?}; counting {} process(es)",
        plan.attach_points.len(),
        plan.attach_points,
        started.len()
    );
    let session = Session::start(
        now,
        started,
        node,
        cfg.interfaces.clone(),
        cfg.details,
        old,
        untracked_base,
    );
    Ok(Running {
        probes,
        state,
        command,
        session,
        host: LiveHost::new(
            env.proc.clone(),
            CgroupNames::new(env.mount.clone(), env.meta.clone()),
        ),
    })
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
