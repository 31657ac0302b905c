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
//! Each target is counted on one [`CountPath`] (`count_paths` decides, table-tested): whole
//! cgroups without a need for per-socket state on the cgroup path, the rest on the socket
//! path. `--all` has programs of its own at the root, beside either.
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
    /// The kernel keeps a cgroup program's storage in its run context (5.15+), so the cgroup
    /// path can be used (`kernel::btf::cgroup_storage_in_run_ctx`).
    pub cgroup_storage_ok: bool,
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

/// Which set of kernel programs counts a target's packets (ebpf/src/main.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountPath {
    /// Each socket's state names its target, one storage lookup per packet: processes, and
    /// whole cgroups that need per-socket state (`--details`, `-i`) or share the run with
    /// targets they could overlap.
    Socket,
    /// Programs at the target's own cgroup, whose cgroup storage is the target: no per-socket
    /// lookup, and no socket state made at creation (ebpf/src/whole.rs).
    Cgroup,
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
    /// Which programs count it.
    pub path: CountPath,
}

impl Target {
    /// A whole-cgroup target's directory and whether it predates the run (its sockets are
    /// scanned); None for a process.
    pub fn whole_cgroup(&self) -> Option<(&Path, bool)> {
        match &self.kind {
            TargetKind::Process { .. } => None,
            TargetKind::Cgroup { dir, .. } => Some((dir, true)),
            TargetKind::Command { cgroup, .. } => Some((cgroup, false)),
        }
    }
}

/// The whole run, decided before anything changes: everything set-up and the loop need
/// (they take no `Config`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Every target, in slot order.
    pub targets: Vec<Target>,
    /// `--all`: node-wide accounting by cgroup.
    pub node_wide: bool,
    /// `--all`: where its programs attach (the cgroup2 root).
    pub node_root: Option<PathBuf>,
    /// Cgroups to attach the socket path's programs to (none an ancestor of another). The
    /// cgroup path's targets attach at their own cgroups.
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
            cgroup_storage_ok,
        } = survey;
        let node_namespaces = if t.all && !counting.interfaces.is_empty() {
            netns::check_node_names(&counting.interfaces, &namespaces)?;
            Some(namespaces)
        } else {
            None
        };
        check_pid_count(&processes, t.children)?;
        let mut targets = targets(
            t,
            run.command_io,
            processes,
            cgroups,
            &own_cgroup,
            agent_pid,
        )?;
        let per_socket = !counting.interfaces.is_empty() || details(run);
        let paths = count_paths(&targets, per_socket, cgroup_storage_ok);
        for (t, path) in targets.iter_mut().zip(paths) {
            t.path = path;
        }
        let attach_dirs: Vec<PathBuf> = targets
            .iter()
            .filter(|t| t.path == CountPath::Socket)
            .map(|t| attach_dir(&t.kind))
            .collect();
        let knobs = knobs(run, &targets);
        Ok(Self {
            attach_points: cgroup::attach_points(&attach_dirs),
            targets,
            node_wide: t.all,
            // Node-wide: once at the root, where every socket of the host passes.
            node_root: t.all.then_some(mount_point),
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

    /// Every cgroup some program attaches at: the root for `--all`, the socket path's attach
    /// points, the cgroup path's targets.
    pub fn all_attach_dirs(&self) -> Vec<&Path> {
        let whole = self
            .targets
            .iter()
            .filter(|t| t.path == CountPath::Cgroup)
            .filter_map(|t| t.whole_cgroup().map(|(d, _)| d));
        self.node_root
            .iter()
            .map(PathBuf::as_path)
            .chain(self.attach_points.iter().map(PathBuf::as_path))
            .chain(whole)
            .collect()
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

/// Where a target's socket-path programs attach: a process's cgroup (or the one it was
/// isolated from), a whole cgroup itself.
fn attach_dir(kind: &TargetKind) -> PathBuf {
    match kind {
        TargetKind::Process { cgroup_dir, .. } => cgroup::attach_dir_for(cgroup_dir),
        TargetKind::Cgroup { dir, .. } => dir.clone(),
        TargetKind::Command { cgroup, .. } => cgroup.clone(),
    }
}

/// Whether the programs keep per-connection records (`--details`, and the interactive view,
/// whose connection and remote-host views read them).
fn details(run: &Run) -> bool {
    run.counting.details || run.reports.output == Output::View
}

/// The path each target is counted on, in order. A whole cgroup (or the command's) goes on
/// the cgroup path when the kernel's cgroup storage can be trusted (`storage_ok`, 5.15+),
/// nothing asks for per-socket state (`per_socket`: `--details`, the view, `-i`), no process
/// is a target (one could move into the cgroup, whose programs would then count its sockets
/// a second time), and no other target's cgroup is the same, above or below it ("one target
/// per attach point": programs at a cgroup and at its descendant would both count the
/// descendant's packets, where the socket path charges each socket to one target). The
/// rest go on the socket path.
fn count_paths(targets: &[Target], per_socket: bool, storage_ok: bool) -> Vec<CountPath> {
    let any_process = targets
        .iter()
        .any(|t| matches!(t.kind, TargetKind::Process { .. }));
    let dirs: Vec<Option<&Path>> = targets
        .iter()
        .map(|t| t.whole_cgroup().map(|(d, _)| d))
        .collect();
    let related = |i: usize, d: &Path| {
        dirs.iter()
            .enumerate()
            .any(|(j, o)| j != i && o.is_some_and(|o| o.starts_with(d) || d.starts_with(o)))
    };
    dirs.iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(d) if storage_ok && !per_socket && !any_process && !related(i, d) => {
                CountPath::Cgroup
            }
            _ => CountPath::Socket,
        })
        .collect()
}

/// Every target in slot order (processes, then cgroups and containers, then the command),
/// on the socket path until `count_paths` decides.
fn targets(
    t: &crate::config::Targets,
    command_io: crate::config::CommandIo,
    processes: Vec<ProcessFacts>,
    cgroups: Vec<CgroupFacts>,
    own_cgroup: &Path,
    agent_pid: u32,
) -> Result<Vec<Target>, UsageError> {
    let mut slots = Slots::default();
    let mut targets = Vec::new();
    for p in processes {
        targets.push(Target {
            slot: slots.take()?,
            ifaces: p.ifaces,
            path: CountPath::Socket,
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
        targets.push(Target {
            slot: slots.take()?,
            ifaces: c.ifaces,
            path: CountPath::Socket,
            kind: TargetKind::Cgroup {
                dir: c.dir,
                id: c.id,
                info: c.info,
            },
        });
    }
    if !t.command.is_empty() {
        targets.push(Target {
            slot: slots.take()?,
            ifaces: Vec::new(),
            path: CountPath::Socket,
            kind: TargetKind::Command {
                argv: t.command.clone(),
                cgroup: spawn_cgroup(own_cgroup, agent_pid),
                io: command_io,
            },
        });
    }
    Ok(targets)
}

/// The optional kernel work `run` and its `targets` need.
fn knobs(run: &Run, targets: &[Target]) -> Knobs {
    let (t, counting) = (&run.targets, &run.counting);
    let has = |f: fn(&TargetKind) -> bool| targets.iter().any(|t| f(&t.kind));
    let on_path = |p: CountPath| targets.iter().any(|t| t.path == p);
    Knobs {
        details: details(run),
        iface_filter: !counting.interfaces.is_empty(),
        children: t.children && has(|k| matches!(k, TargetKind::Process { .. })),
        // Whole cgroups the socket path's sock_create looks up (`CGROUP_TARGETS`).
        cgroup_targets: targets
            .iter()
            .any(|t| t.path == CountPath::Socket && t.whole_cgroup().is_some()),
        pid_targets: has(|k| matches!(k, TargetKind::Process { .. })),
        all: t.all,
        socket_path: on_path(CountPath::Socket),
        cgroup_path: on_path(CountPath::Cgroup),
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
            cgroup_storage_ok: true,
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
        // The command on the cgroup path: no `CGROUP_TARGETS` for the socket path's
        // sock_create; with --details, on the socket path, it is one.
        let p = plan(&["--", "curl"]).unwrap();
        assert!(!p.knobs.children && !p.knobs.cgroup_targets && !p.knobs.pid_targets);
        assert!(p.knobs.cgroup_path && !p.knobs.socket_path);
        let p = plan(&["--details", "--", "curl"]).unwrap();
        assert!(p.knobs.cgroup_targets && p.knobs.socket_path && !p.knobs.cgroup_path);
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
        // --all at the root with programs of its own; the whole cgroups at their own
        // cgroups (the cgroup path), where the socket path attaches nothing.
        let p = plan(&["--all", "--cgroup", "/x", "--", "curl"]).unwrap();
        assert_eq!(p.node_root, Some(PathBuf::from(MNT)));
        assert!(p.attach_points.is_empty());
        let whole: Vec<_> = p
            .targets
            .iter()
            .map(|t| {
                (
                    t.whole_cgroup().map(|(d, old)| (d.to_path_buf(), old)),
                    t.path,
                )
            })
            .collect();
        let spawn = PathBuf::from(format!("{MNT}/agent/procnetmon2-spawn-77"));
        assert_eq!(
            whole,
            [
                (
                    Some((PathBuf::from(format!("{MNT}/x")), true)),
                    CountPath::Cgroup
                ),
                (Some((spawn.clone(), false)), CountPath::Cgroup)
            ]
        );
        // With -p, --all keeps to the root: the process's own cgroup has the socket path.
        let p = plan(&["--all", "-p", "10"]).unwrap();
        assert_eq!(p.attach_points, [PathBuf::from(format!("{MNT}/p10"))]);
        // Spawn mode with --details: the command's own cgroup, on the socket path.
        let p = plan(&["--details", "--", "curl"]).unwrap();
        assert_eq!(p.attach_points, vec![spawn]);
        assert_eq!(
            p.command().map(|(_, argv, _)| argv.to_vec()),
            Some(vec!["curl".to_string()])
        );
    }

    /// Which targets count without per-socket state (the cgroup path).
    #[test]
    fn count_paths_for_every_combination() {
        use CountPath::{Cgroup as C, Socket as S};
        let table: &[(&[&str], bool, &[CountPath])] = &[
            (&["--", "curl"], true, &[C]),
            (&["--cgroup", "/x"], true, &[C]),
            (&["--container", "abc"], true, &[C]),
            (&["--cgroup", "/x", "--container", "abc"], true, &[C, C]),
            (&["--all", "--cgroup", "/x"], true, &[C]),
            (&["--cgroup", "/x", "--", "curl"], true, &[C, C]),
            // Before 5.15 a program could be handed another's cgroup storage.
            (&["--cgroup", "/x"], false, &[S]),
            (&["--", "curl"], false, &[S]),
            // Per-socket state asked for.
            (&["--cgroup", "/x", "--details"], true, &[S]),
            (&["--cgroup", "/x", "-i", "eth0"], true, &[S]),
            (&["--all", "-i", "eth0", "--", "curl"], true, &[S]),
            // A process target (it could move into the cgroup): everything on the socket path.
            (&["-p", "10"], true, &[S]),
            (&["-p", "10", "--cgroup", "/x"], true, &[S, S]),
            // Nested: the survey names "/x" and "/x/y" (one inside the other).
            (&["--cgroup", "/x", "--cgroup", "/x/y"], true, &[S, S]),
            (&["--cgroup", "/x/y", "--cgroup", "/z"], true, &[C, C]),
        ];
        for (args, storage_ok, want) in table {
            let c = cfg(args);
            let mut sv = survey(&c);
            sv.cgroup_storage_ok = *storage_ok;
            let p = Plan::build(&c, sv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let got: Vec<CountPath> = p.targets.iter().map(|t| t.path).collect();
            assert_eq!(got, *want, "{args:?} (storage ok: {storage_ok})");
            assert_eq!(p.knobs.cgroup_path, want.contains(&C), "{args:?}");
            assert_eq!(p.knobs.socket_path, want.contains(&S), "{args:?}");
            // The socket path attaches only for its own targets; the cgroup path's never
            // share an attach point with anything.
            if !want.contains(&S) {
                assert!(p.attach_points.is_empty(), "{args:?}");
            }
        }
        // The view reads connection records: a terminal run keeps the socket path.
        let c = run_on(&["--cgroup", "/x"], true);
        let p = Plan::build(&c, survey(&c)).unwrap();
        assert_eq!(p.targets[0].path, S);
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
