//! The plan of a run, computed before anything on the host changes: one list of targets,
//! each with its kind, its slot in the kernel's per-target maps (from one allocator), what
//! it is attached through and the interfaces it counts; plus where the programs attach and
//! which optional kernel work is switched on.
//!
//! Pure: [`Plan::build`] takes the validated [`Config`] and a [`Survey`] of what was read
//! from the host (`setup::survey` reads it), so every combination of flags is a table test.
//! Flag combinations that make no sense are refused here with a usage error.
//!
//! | flags | targets, in slot order |
//! |---|---|
//! | `-p A,B` | process A, process B (each with the children it forks unless `--no-children`) |
//! | `--cgroup P`, `--container ID` | one whole-cgroup target each, after the processes |
//! | `-- CMD` | the command's fresh cgroup, after the processes and cgroups |
//! | `--all` | no slot: node-wide workloads are found at run time and counted by cgroup |
//!
//! Refused: `-p` with `-- CMD`; `--isolate` without `-p`, or with `-- CMD`; `--no-children`
//! without `-p` (a cgroup target always includes every process in it). More targets than the
//! kernel's maps hold are refused before anything is loaded. `--all -i NAME` resolves NAME in
//! every network namespace on the node; a name found in none is refused.

use std::path::{Path, PathBuf};

use crate::{
    config::{CommandIo, Counting, Output, Run},
    error::UsageError,
    host::{
        cgroup,
        identity::ContainerIdentity,
        netns::{self, Netns},
        procs::ProcIdentity,
        workloads::CgroupInfo,
    },
    kernel::{IfaceKey, Knobs, MAX_TARGET_PIDS, MAX_TARGETS, Slot},
};

/// Names of the chosen interfaces with their key in one network namespace (`-i`).
pub type Ifaces = Vec<(String, IfaceKey)>;

/// How a process target is named in reports and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessLabels {
    /// Container / pod identity of its cgroup.
    pub container: Option<ContainerIdentity>,
    /// PID in its own pid namespace.
    pub nspid: Option<u32>,
    /// Its workload (systemd unit or cgroup path), for metrics.
    pub unit: String,
}

/// A `-p` process as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessFacts {
    /// Who it is (pinned by start time).
    pub ident: ProcIdentity,
    /// Its cgroup v2 directory.
    pub cgroup_dir: PathBuf,
    /// Names for reports.
    pub labels: ProcessLabels,
    /// `-i` names resolved in its network namespace.
    pub ifaces: Ifaces,
    /// Its live descendants (followed unless `--no-children`).
    pub children: Vec<u32>,
}

/// A `--cgroup` / `--container` target as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupFacts {
    /// Its directory.
    pub dir: PathBuf,
    /// Its id (inode of the directory).
    pub id: u64,
    /// Names for reports.
    pub info: CgroupInfo,
    /// `-i` names resolved in its processes' network namespaces.
    pub ifaces: Ifaces,
}

/// What was read from the host before planning; nothing has changed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// The cgroup v2 mount point (the root, where `--all` attaches).
    pub mount_point: PathBuf,
    /// One entry per `-p` PID, in order.
    pub processes: Vec<ProcessFacts>,
    /// One entry per `--cgroup` then `--container`, in order (duplicates included).
    pub cgroups: Vec<CgroupFacts>,
    /// The agent's own cgroup directory (spawn mode creates the command's cgroup under it).
    pub own_cgroup: PathBuf,
    /// The agent's PID (names the spawn cgroup).
    pub agent_pid: u32,
    /// `--all -i`: every network namespace on the node, read (empty otherwise).
    pub namespaces: Vec<Netns>,
}

/// What a target is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetKind {
    /// A process named with `-p` (and, unless `--no-children`, what it forks).
    Process {
        /// Who it is.
        ident: ProcIdentity,
        /// Names for reports.
        labels: ProcessLabels,
        /// Its cgroup when the run started (moved from with `--isolate`).
        cgroup_dir: PathBuf,
        /// Descendants alive at the start, which join it.
        children: Vec<u32>,
    },
    /// Everything in a cgroup subtree (`--cgroup`, `--container`).
    Cgroup {
        /// Its directory.
        dir: PathBuf,
        /// Its id.
        id: u64,
        /// Names for reports.
        info: CgroupInfo,
    },
    /// The command of spawn mode, in a fresh cgroup made for it.
    Command {
        /// The command and its arguments.
        argv: Vec<String>,
        /// The cgroup to create for it.
        cgroup: PathBuf,
        /// How it meets the terminal.
        io: CommandIo,
    },
}

/// One target of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Its slot in the kernel's per-target maps.
    pub slot: Slot,
    /// What it is.
    pub kind: TargetKind,
    /// `-i` interfaces it counts (empty without `-i`).
    pub ifaces: Ifaces,
}

/// The whole run, decided before anything changes: everything set-up and the loop need
/// (they take no `Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every target, in slot order.
    pub targets: Vec<Target>,
    /// `--all`: node-wide accounting by cgroup.
    pub node_wide: bool,
    /// Cgroups to attach the programs to (none an ancestor of another).
    pub attach_points: Vec<PathBuf>,
    /// Optional kernel work.
    pub knobs: Knobs,
    /// `--isolate`: move the process targets into dedicated cgroups.
    pub isolate: bool,
    /// `--all -i`: every network namespace on the node, whose interfaces make the filter.
    pub node_namespaces: Option<Vec<Netns>>,
    /// How traffic is counted: `-i` names, details, destinations, classes.
    pub counting: Counting,
    /// When the loop wakes and what ends it.
    pub schedule: Schedule,
    /// How long a removed workload's series stay in `/metrics` (and its row in `--all`).
    pub series_grace: std::time::Duration,
}

/// When the loop ticks, reports and stops: the facts `session::decide` works from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Sampling and reporting interval.
    pub interval: std::time::Duration,
    /// The `-t` window, if any.
    pub window: Option<std::time::Duration>,
    /// A report every interval (the live table, JSON lines, the view).
    pub every_interval: bool,
    /// Metrics are served: the run is a daemon, which outlives its targets.
    pub daemon: bool,
    /// The run's last report covers all of it, like a window's (a command that has the
    /// terminal: its life is the window).
    pub whole_run: bool,
}

/// Hands out slots, one per target, in order; refuses more than the kernel's maps hold.
#[derive(Debug, Default)]
pub struct Slots {
    next: u32,
}

impl Slots {
    /// The next free slot.
    pub fn take(&mut self) -> Result<Slot, UsageError> {
        if self.next >= MAX_TARGETS {
            return Err(UsageError::new(format!(
                "too many targets: at most {MAX_TARGETS} processes, cgroups and containers in one run; split them over several runs"
            )));
        }
        let s = Slot(self.next);
        self.next += 1;
        Ok(s)
    }
}

impl Plan {
    /// Plans the counting run `run` on the host described by `survey`.
    pub fn build(run: &Run, survey: Survey) -> Result<Self, UsageError> {
        let (t, counting) = (&run.targets, &run.counting);
        let Survey {
            mount_point,
            processes,
            cgroups,
            own_cgroup,
            agent_pid,
            namespaces,
        } = survey;
        let node_namespaces = if t.all && !counting.interfaces.is_empty() {
            netns::check_node_names(&counting.interfaces, &namespaces)?;
            Some(namespaces)
        } else {
            None
        };
        check_pid_count(&processes, t.children)?;
        let (targets, mut attach_dirs) = targets(
            t,
            run.command_io,
            processes,
            cgroups,
            &own_cgroup,
            agent_pid,
        )?;
        if t.all {
            // Node-wide: once at the root, where every socket of the host passes.
            attach_dirs.insert(0, mount_point);
        }
        let knobs = knobs(run, &targets);
        Ok(Self {
            attach_points: cgroup::attach_points(&attach_dirs),
            targets,
            node_wide: t.all,
            knobs,
            isolate: t.isolate,
            node_namespaces,
            counting: counting.clone(),
            schedule: Schedule {
                interval: run.interval,
                window: run.window,
                every_interval: run.reports.output.every_interval(),
                daemon: run.metrics.is_some(),
                whole_run: run.reports.whole_run(),
            },
            series_grace: run.series_grace,
        })
    }

    /// The spawn-mode command's target, if any.
    pub fn command(&self) -> Option<(&Target, &[String], &Path)> {
        self.targets.iter().find_map(|t| match &t.kind {
            TargetKind::Command { argv, cgroup, .. } => {
                Some((t, argv.as_slice(), cgroup.as_path()))
            }
            _ => None,
        })
    }

    /// How the spawn-mode command meets the terminal (`Inherit` without one).
    pub fn command_io(&self) -> CommandIo {
        self.targets
            .iter()
            .find_map(|t| match &t.kind {
                TargetKind::Command { io, .. } => Some(*io),
                _ => None,
            })
            .unwrap_or(CommandIo::Inherit)
    }
}

/// Refuses more target PIDs (the named ones and, unless `--no-children`, their children)
/// than the kernel's map holds.
fn check_pid_count(processes: &[ProcessFacts], children: bool) -> Result<(), UsageError> {
    let pid_count: usize = if children {
        processes.iter().map(|p| 1 + p.children.len()).sum()
    } else {
        processes.len()
    };
    if pid_count > MAX_TARGET_PIDS as usize {
        return Err(UsageError::new(format!(
            "too many processes: the targets and their children number {pid_count}, at most {MAX_TARGET_PIDS} fit; name fewer PIDs or use --no-children"
        )));
    }
    Ok(())
}

/// Every target in slot order (processes, then cgroups and containers, then the command),
/// with the cgroup each one attaches at.
fn targets(
    t: &crate::config::Targets,
    command_io: crate::config::CommandIo,
    processes: Vec<ProcessFacts>,
    cgroups: Vec<CgroupFacts>,
    own_cgroup: &Path,
    agent_pid: u32,
) -> Result<(Vec<Target>, Vec<PathBuf>), UsageError> {
    let mut slots = Slots::default();
    let mut targets = Vec::new();
    let mut attach_dirs = Vec::new();
    for p in processes {
        attach_dirs.push(cgroup::attach_dir_for(&p.cgroup_dir));
        targets.push(Target {
            slot: slots.take()?,
            ifaces: p.ifaces,
            kind: TargetKind::Process {
                ident: p.ident,
                labels: p.labels,
                cgroup_dir: p.cgroup_dir,
                children: if t.children { p.children } else { Vec::new() },
            },
        });
    }
    let mut seen: Vec<u64> = Vec::new();
    for c in cgroups {
        // `--cgroup X --container ID` naming the same cgroup is one target.
        if seen.contains(&c.id) {
            continue;
        }
        seen.push(c.id);
        attach_dirs.push(c.dir.clone());
        targets.push(Target {
            slot: slots.take()?,
            ifaces: c.ifaces,
            kind: TargetKind::Cgroup {
                dir: c.dir,
                id: c.id,
                info: c.info,
            },
        });
    }
    if !t.command.is_empty() {
        let cgroup = spawn_cgroup(own_cgroup, agent_pid);
        attach_dirs.push(cgroup.clone());
        targets.push(Target {
            slot: slots.take()?,
            ifaces: Vec::new(),
            kind: TargetKind::Command {
                argv: t.command.clone(),
                cgroup,
                io: command_io,
            },
        });
    }
    Ok((targets, attach_dirs))
}

/// The optional kernel work `run` and its `targets` need.
fn knobs(run: &Run, targets: &[Target]) -> Knobs {
    let (t, counting) = (&run.targets, &run.counting);
    let has = |f: fn(&TargetKind) -> bool| targets.iter().any(|t| f(&t.kind));
    Knobs {
        // The interactive view's connection and remote-host views read the records.
        details: counting.details || run.reports.output == Output::View,
        iface_filter: !counting.interfaces.is_empty(),
        children: t.children && has(|k| matches!(k, TargetKind::Process { .. })),
        cgroup_targets: has(|k| !matches!(k, TargetKind::Process { .. })),
        pid_targets: has(|k| matches!(k, TargetKind::Process { .. })),
        all: t.all,
        dest: crate::kernel::DestKnobs {
            classes: counting.classes.is_some(),
            class_count: counting
                .classes
                .as_ref()
                .map_or(0, |c| u32::try_from(c.names.len()).unwrap_or(u32::MAX)),
            slots: u32::try_from(targets.len()).unwrap_or(u32::MAX),
            destinations: counting.destinations,
            cap: counting.destinations_max,
            // Names are shown with the destinations: hand DNS answers up only then.
            dns: counting.destinations,
            node_destinations: t.all && counting.destinations,
        },
    }
}

/// How a cgroup a target moved into relates to the attach points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// At or below an attach point: already counted.
    Covered,
    /// Outside every attach point: attach there too.
    Attach,
    /// An ancestor of an attach point: attaching there would count that point's packets
    /// twice, so the target's new sockets cannot be counted.
    Ancestor,
}

/// Whether cgroup `dir` is covered by the programs attached at `points`.
pub fn coverage(points: &[PathBuf], dir: &Path) -> Coverage {
    if points.iter().any(|p| dir.starts_with(p)) {
        Coverage::Covered
    } else if points.iter().any(|p| p.starts_with(dir)) {
        Coverage::Ancestor
    } else {
        Coverage::Attach
    }
}

/// Where spawn mode runs its command: a fresh child of the agent's own cgroup.
pub fn spawn_cgroup(own: &Path, agent_pid: u32) -> PathBuf {
    own.join(format!("{}spawn-{agent_pid}", cgroup::CGROUP_PREFIX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        cli,
        config::{Mode, Terminal},
    };

    pub(crate) const MNT: &str = "/sys/fs/cgroup";

    /// The counting run of a command line; `terminal`: stdin and stdout are one.
    fn run_on(args: &[&str], terminal: bool) -> Run {
        let mut argv = vec!["procnetmon2"];
        argv.extend_from_slice(args);
        let t = Terminal {
            stdin: terminal,
            stdout: terminal,
        };
        match cli::parse(argv.iter().map(std::ffi::OsString::from)) {
            cli::Parsed::Run(opt) => match Mode::from_opt(&opt, 4_194_304, t) {
                Ok(Mode::Watch(r) | Mode::Spawn(r)) => r,
                m => panic!("not a counting run: {args:?}: {m:?}"),
            },
            _ => panic!("not a run: {args:?}"),
        }
    }

    pub(crate) fn cfg(args: &[&str]) -> Run {
        run_on(args, false)
    }

    fn process(pid: u32, cg: &str) -> ProcessFacts {
        ProcessFacts {
            ident: ProcIdentity {
                pid,
                comm: format!("p{pid}"),
                start_ticks: 1,
            },
            cgroup_dir: PathBuf::from(format!("{MNT}{cg}")),
            labels: ProcessLabels::default(),
            ifaces: Vec::new(),
            children: vec![pid + 1000],
        }
    }

    fn cgroup(id: u64, path: &str) -> CgroupFacts {
        CgroupFacts {
            dir: PathBuf::from(format!("{MNT}{path}")),
            id,
            info: CgroupInfo {
                path: path.into(),
                container: None,
                workload: path.into(),
            },
            ifaces: Vec::new(),
        }
    }

    /// The survey a run of `cfg` would make: its PIDs in /a, /b, …; its cgroups with ids.
    pub(crate) fn survey(cfg: &Run) -> Survey {
        let processes = cfg
            .targets
            .pids
            .iter()
            .map(|&p| process(p, &format!("/p{p}")))
            .collect();
        let cgroups = cfg
            .targets
            .cgroups
            .iter()
            .chain(&cfg.targets.containers)
            .map(|c| {
                cgroup(
                    c.len() as u64 * 100 + u64::from(c.as_bytes()[0]),
                    &format!("/{c}"),
                )
            })
            .collect();
        Survey {
            mount_point: PathBuf::from(MNT),
            processes,
            cgroups,
            own_cgroup: PathBuf::from(format!("{MNT}/agent")),
            agent_pid: 77,
            namespaces: vec![
                netns(4026531840, 1, 1000, &["lo", "eth0", "veth1"]),
                netns(4026532500, 300, 2000, &["lo", "eth0"]),
            ],
        }
    }

    /// A network namespace with these interfaces (ifindex from 1 in order).
    fn netns(inode: u64, pid: u32, cookie: u64, names: &[&str]) -> Netns {
        Netns {
            inode,
            pid,
            links: crate::host::netns::NetnsLinks {
                cookie,
                links: names
                    .iter()
                    .zip(1..)
                    .map(|(n, i)| ((*n).to_string(), i))
                    .collect(),
            },
        }
    }

    pub(crate) fn plan(args: &[&str]) -> Result<Plan, String> {
        let c = cfg(args);
        Plan::build(&c, survey(&c)).map_err(|e| e.to_string())
    }

    /// (kind letter, slot) per target: P process, C cgroup, X command.
    fn shape(p: &Plan) -> Vec<(char, u32)> {
        p.targets
            .iter()
            .map(|t| {
                let k = match t.kind {
                    TargetKind::Process { .. } => 'P',
                    TargetKind::Cgroup { .. } => 'C',
                    TargetKind::Command { .. } => 'X',
                };
                (k, t.slot.0)
            })
            .collect()
    }

    #[test]
    fn slots_for_every_combination() {
        /// (arguments, targets in slot order, node-wide)
        type Row<'a> = (&'a [&'a str], &'a [(char, u32)], bool);
        let table: &[Row<'_>] = &[
            (&["-p", "10"], &[('P', 0)], false),
            (&["-p", "10,11"], &[('P', 0), ('P', 1)], false),
            (&["-p", "10", "--no-children"], &[('P', 0)], false),
            (&["-p", "10", "--isolate"], &[('P', 0)], false),
            (&["--cgroup", "/x"], &[('C', 0)], false),
            (&["--container", "abc"], &[('C', 0)], false),
            (
                &["--cgroup", "/x", "--container", "abc"],
                &[('C', 0), ('C', 1)],
                false,
            ),
            (
                &["-p", "10,11", "--cgroup", "/x"],
                &[('P', 0), ('P', 1), ('C', 2)],
                false,
            ),
            (&["--all"], &[], true),
            (&["--all", "-p", "10"], &[('P', 0)], true),
            (&["--all", "--cgroup", "/x"], &[('C', 0)], true),
            (&["--all", "-i", "eth0"], &[], true),
            (&["--", "curl", "x"], &[('X', 0)], false),
            // The bug this plan exists for: the command and a --cgroup target once shared slot 0.
            (
                &["--cgroup", "/x", "--", "curl"],
                &[('C', 0), ('X', 1)],
                false,
            ),
            (
                &["--cgroup", "/x", "--container", "abc", "--", "curl"],
                &[('C', 0), ('C', 1), ('X', 2)],
                false,
            ),
            // --all with a command: node-wide AND the command (once only the command).
            (&["--all", "--", "curl"], &[('X', 0)], true),
            (
                &["-p", "10", "--isolate", "--no-children", "--cgroup", "/x"],
                &[('P', 0), ('C', 1)],
                false,
            ),
        ];
        for (args, want, node_wide) in table {
            let p = plan(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(shape(&p), *want, "{args:?}");
            assert_eq!(p.node_wide, *node_wide, "{args:?}");
            // Every slot once: the plan's, and the table's own rows (a duplicate there would
            // make the row above agree with a plan that shares a slot).
            let slots: std::collections::BTreeSet<u32> =
                p.targets.iter().map(|t| t.slot.0).collect();
            assert_eq!(slots.len(), p.targets.len(), "slots unique: {args:?}");
            let wanted: std::collections::BTreeSet<u32> = want.iter().map(|(_, s)| *s).collect();
            assert_eq!(
                wanted.len(),
                want.len(),
                "the row's slots are unique: {args:?}"
            );
        }
    }

    #[test]
    fn refused_on_this_host() {
        let table: &[(&[&str], &str)] = &[
            // A misspelt -i with --all: in no namespace of the node.
            (
                &["--all", "-i", "eht0"],
                "no interface 'eht0' in any of the 2 network namespaces",
            ),
            (&["--all", "-i", "eth0,wg0"], "no interface 'wg0'"),
        ];
        for (args, msg) in table {
            let e = plan(args).expect_err(&format!("{args:?} must be refused"));
            assert!(e.contains(msg), "{args:?}: {e}");
        }
    }

    #[test]
    fn knobs_follow_the_targets() {
        let p = plan(&["-p", "10"]).unwrap();
        assert!(p.knobs.children && !p.knobs.cgroup_targets && !p.knobs.all);
        assert!(p.knobs.pid_targets);
        let p = plan(&["-p", "10", "--no-children"]).unwrap();
        assert!(!p.knobs.children);
        assert!(
            matches!(&p.targets[0].kind, TargetKind::Process { children, .. } if children.is_empty())
        );
        let p = plan(&["--", "curl"]).unwrap();
        assert!(!p.knobs.children && p.knobs.cgroup_targets && !p.knobs.pid_targets);
        let p = plan(&["--all", "-d", "-p", "10", "-i", "lo"]).unwrap();
        assert!(p.knobs.all && p.knobs.iface_filter);
        assert_eq!(p.node_namespaces.map(|n| n.len()), Some(2));
        // Present in one namespace only: planned (the others count nothing, warned once).
        let p = plan(&["--all", "-i", "veth1"]).unwrap();
        assert!(p.node_namespaces.is_some());
        // -i without --all needs no node-wide filter.
        assert!(
            plan(&["-p", "10", "-i", "eth0"])
                .unwrap()
                .node_namespaces
                .is_none()
        );
        let p = plan(&["-d", "-p", "10", "-i", "lo"]).unwrap();
        assert!(p.knobs.details && p.knobs.iface_filter);
        let p = plan(&["--all"]).unwrap();
        assert!(p.knobs.all && !p.knobs.children);
        // The interactive view needs the connection records; --json (never a view) does not.
        let c = run_on(&["-p", "10"], true);
        assert!(Plan::build(&c, survey(&c)).unwrap().knobs.details);
        let c = run_on(&["-p", "10", "--json"], true);
        assert!(!Plan::build(&c, survey(&c)).unwrap().knobs.details);
    }

    #[test]
    fn attach_points() {
        let p = plan(&["-p", "10,11", "--cgroup", "/x"]).unwrap();
        assert_eq!(
            p.attach_points,
            ["/p10", "/p11", "/x"].map(|d| PathBuf::from(format!("{MNT}{d}")))
        );
        // --all attaches once at the root, which covers everything else.
        let p = plan(&["--all", "--cgroup", "/x", "--", "curl"]).unwrap();
        assert_eq!(p.attach_points, vec![PathBuf::from(MNT)]);
        // Spawn mode alone: the command's own cgroup.
        let p = plan(&["--", "curl"]).unwrap();
        assert_eq!(
            p.attach_points,
            vec![PathBuf::from(format!("{MNT}/agent/procnetmon2-spawn-77"))]
        );
        assert_eq!(
            p.command().map(|(_, argv, _)| argv.to_vec()),
            Some(vec!["curl".to_string()])
        );
    }

    #[test]
    fn coverage_of_a_new_cgroup() {
        let points = ["/cg/a", "/cg/b/c"].map(PathBuf::from).to_vec();
        for (dir, want) in [
            ("/cg/a", Coverage::Covered),
            ("/cg/a/procnetmon2-10", Coverage::Covered),
            ("/cg/b/c/d", Coverage::Covered),
            ("/cg/ab", Coverage::Attach),
            ("/cg/d", Coverage::Attach),
            ("/cg/b", Coverage::Ancestor),
            ("/cg", Coverage::Ancestor),
        ] {
            assert_eq!(coverage(&points, Path::new(dir)), want, "{dir}");
        }
    }

    #[test]
    fn same_cgroup_twice_is_one_target() {
        let c = cfg(&["--cgroup", "/x", "--cgroup", "/x"]);
        let p = Plan::build(&c, survey(&c)).unwrap();
        assert_eq!(shape(&p), vec![('C', 0)]);
    }

    #[test]
    fn slot_allocator_refuses_past_the_maps() {
        let mut s = Slots::default();
        for i in 0..MAX_TARGETS {
            assert_eq!(s.take().unwrap(), Slot(i));
        }
        assert!(
            s.take()
                .unwrap_err()
                .to_string()
                .contains("too many targets")
        );
    }

    #[test]
    fn too_many_children_refused_up_front() {
        let c = cfg(&["-p", "10"]);
        let mut s = survey(&c);
        s.processes[0].children = (0..MAX_TARGET_PIDS).collect();
        let e = Plan::build(&c, s.clone()).unwrap_err().to_string();
        assert!(e.contains("--no-children"), "{e}");
        let c = cfg(&["-p", "10", "--no-children"]);
        assert!(Plan::build(&c, s).is_ok());
    }
}
