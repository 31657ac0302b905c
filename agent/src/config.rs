//! Validated run configuration, built from the command line (`cli::Opt`).
//!
//! Everything here is pure: no /proc, no kernel. Checks that need the system (does the PID
//! exist, is it a kernel thread) live in `procs`.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use chrono::{DateTime, Utc};

use crate::{cli::Opt, error::UsageError};

/// What this invocation does, decided once from the command line (ripgrep's `Mode`): `run`
/// dispatches on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Count targets named with `-p`, `--cgroup`, `--container`, `--all` until stopped, the
    /// window ends or every target is gone.
    Watch(Run),
    /// Start a command in a cgroup of its own and count it (beside any `--cgroup`,
    /// `--container`, `--all` targets) until it exits.
    Spawn(Run),
    /// Undo what runs killed with SIGKILL left behind, then exit (`--cleanup`).
    Cleanup {
        /// `--host-proc`.
        host_proc: Option<PathBuf>,
    },
    /// Read a recording (`replay DIR`): a window's report, an export, a picture, or the
    /// interactive view stepping through it.
    Replay(ReplayArgs),
}

/// A counting run (`Mode::Watch`, `Mode::Spawn`): see `cli::Opt` for the meaning of each flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// What is counted.
    pub targets: Targets,
    /// How it is counted (interfaces, details, destinations, classes).
    pub counting: Counting,
    /// Sampling and reporting interval.
    pub interval: Duration,
    /// The `-t` window, if any.
    pub window: Option<Duration>,
    /// Where and how reports are shown.
    pub reports: Reports,
    /// How a spawned command meets the terminal (`Inherit` without a command).
    pub command_io: CommandIo,
    /// `--metrics-addr` and its limits, when metrics are served.
    pub metrics: Option<Metrics>,
    /// `--series-grace`: how long a removed workload's row (and its series) stays.
    pub series_grace: Duration,
    /// `--record DIR` and its retention (None: nothing is recorded).
    pub record: Option<RecordConfig>,
    /// `--host-proc`.
    pub host_proc: Option<PathBuf>,
}

/// The targets named on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Targets {
    /// `-p`: PIDs, deduplicated, in the order given.
    pub pids: Vec<u32>,
    /// Follow forks (off with `--no-children`).
    pub children: bool,
    /// `--isolate`: move the `-p` targets into dedicated cgroups.
    pub isolate: bool,
    /// `--cgroup` subtrees.
    pub cgroups: Vec<String>,
    /// `--container` id prefixes.
    pub containers: Vec<String>,
    /// `--all`.
    pub all: bool,
    /// Spawn mode: the command and its arguments (empty otherwise).
    pub command: Vec<String>,
}

/// How traffic is counted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Counting {
    /// `-i` interface names (empty: all).
    pub interfaces: Vec<String>,
    /// `--details`: per-connection rows in reports.
    pub details: bool,
    /// `--destinations`: per-remote-host totals.
    pub destinations: bool,
    /// `--destinations-max`: remote hosts kept apart per target.
    pub destinations_max: u64,
    /// `--class` / `--classes` (None: classes off).
    pub classes: Option<crate::classes::ClassSet>,
}

/// `--record DIR --retain DURATION --retain-size SIZE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// The directory.
    pub dir: PathBuf,
    /// Files older than this are removed (None: no age limit).
    pub retain: Option<Duration>,
    /// The oldest files are removed while all take more bytes (None: no size limit).
    pub retain_size: Option<u64>,
}

/// `--retain`'s default: a week.
pub const DEFAULT_RETAIN: Duration = Duration::from_secs(7 * 24 * 3600);
/// `--retain-size`'s default: 1 GiB.
pub const DEFAULT_RETAIN_SIZE: u64 = 1 << 30;

impl RecordConfig {
    fn from_opt(opt: &Opt) -> Result<Option<Self>, UsageError> {
        let Some(dir) = &opt.record else {
            for (flag, given) in [
                ("--retain", opt.retain.is_some()),
                ("--retain-size", opt.retain_size.is_some()),
            ] {
                if given {
                    return Err(UsageError::new(format!(
                        "{flag} works with --record DIR; add it, or leave {flag} out"
                    )));
                }
            }
            return Ok(None);
        };
        non_empty(
            "--record",
            "the directory to record into",
            [dir.to_str().unwrap_or("?")],
        )?;
        if opt.cleanup {
            return Err(UsageError::new(
                "--cleanup only undoes what killed runs left behind and records nothing; leave out --record",
            ));
        }
        let retain = match opt.retain.as_deref().map(str::trim) {
            None => Some(DEFAULT_RETAIN),
            Some("0") => None,
            Some(t) => Some(parse_duration("--retain", t)?),
        };
        let retain_size = match &opt.retain_size {
            None => Some(DEFAULT_RETAIN_SIZE),
            Some(t) => match parse_size("--retain-size", t)? {
                0 => None,
                n => Some(n),
            },
        };
        Ok(Some(Self {
            dir: dir.clone(),
            retain,
            retain_size,
        }))
    }
}

/// Parses a size: a number of bytes with an optional unit, K/M/G/T or KiB/MiB/GiB/TiB
/// (powers of 1024) or KB/MB/GB/TB (powers of 1000), e.g. `500MiB`, `2G`, `1000000`.
pub fn parse_size(flag: &str, text: &str) -> Result<u64, UsageError> {
    let t = text.trim();
    let bad = || {
        UsageError::new(format!(
            "{flag}: '{text}' is not a size: use a number with a unit, e.g. 500MiB, 2GiB"
        ))
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// How reports are shown: decided once, here, from the flags and whether the terminal is
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The plain table, only at the end: of a `-t` window, of the command, of every target;
    /// nothing per interval (`-t` without `-c`, or a metrics daemon without `-c`).
    Table,
    /// The plain table every interval (redrawn in place on a terminal), then the window's.
    LiveTable,
    /// JSON, one object per report, one line each; every interval with `every_interval`
    /// (JSON Lines), else at the end only.
    Json {
        /// A report every interval.
        every_interval: bool,
    },
    /// The interactive view (every interval); the run's last report is printed as the plain
    /// table when it closes.
    View,
}

impl Output {
    /// True when a report is made every interval.
    pub fn every_interval(self) -> bool {
        match self {
            Self::Table => false,
            Self::LiveTable | Self::View => true,
            Self::Json { every_interval } => every_interval,
        }
    }

    /// True when reports are JSON.
    pub fn json(self) -> bool {
        matches!(self, Self::Json { .. })
    }
}

/// Where reports go and what they hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reports {
    /// How they are shown.
    pub output: Output,
    /// `-o FILE` (None: `stream`).
    pub file: Option<PathBuf>,
    /// Where they go without `-o`.
    pub stream: Stream,
    /// `-a`: an aggregate row / object.
    pub aggregate: bool,
}

impl Reports {
    /// True when the run's last report covers the whole run (totals, average and peak rates,
    /// like a `-t` window's): a command has the terminal and the report is for the person
    /// at it, on standard error; the command's life is the window.
    pub fn whole_run(&self) -> bool {
        self.file.is_none() && self.stream == Stream::Stderr
    }
}

/// The standard stream reports go to when there is no `-o FILE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output: the scripts' path (and the live table on a terminal).
    Stdout,
    /// Standard error: a command has the terminal and its output is on standard output,
    /// so the report comes after it, as `time` and `perf stat` print theirs.
    Stderr,
}

/// How the command of spawn mode meets the terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandIo {
    /// It shares procnetmon2's standard streams and process group, as it always did:
    /// standard input is not a terminal (a script, cron, CI), or there is no command.
    Inherit,
    /// It gets the terminal as if run directly: its own process group, made the terminal's
    /// foreground group while it runs (so Ctrl-C and Ctrl-Z reach it, not procnetmon2),
    /// handed back when it ends.
    Foreground,
    /// `--view`: it runs on a pseudo-terminal of its own, whose last lines the view shows in
    /// a pane; keys go to the view until a key hands them to the command.
    Pane,
}

/// `--metrics-addr` and the limits of the series it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metrics {
    /// Where to listen.
    pub addr: SocketAddr,
    /// `--max-series`.
    pub max_series: usize,
}

/// `replay DIR` (`Mode::Replay`), validated here like every other command line; `record`
/// runs it.
/// What `replay` produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// The interactive view, at a time (None: the end).
    View,
    /// The window's report, as JSON or the table.
    Report {
        /// JSON rather than the table.
        json: bool,
    },
    /// OpenMetrics text with timestamps.
    OpenMetrics,
    /// CSV.
    Csv,
    /// An SVG picture of the busiest rows' rates.
    Plot {
        /// Where.
        file: PathBuf,
        /// How many rows.
        top: usize,
    },
}

/// The validated arguments of `replay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayArgs {
    /// The recording directory.
    pub dir: PathBuf,
    /// What to produce.
    pub what: What,
    /// The window's start, ns since the epoch (None: the recording's start).
    pub from: Option<i64>,
    /// The window's end (None: the recording's end).
    pub to: Option<i64>,
    /// Where the view opens (None: the end).
    pub at: Option<i64>,
    /// Keep reading as the recording grows.
    pub follow: bool,
    /// `-o FILE` (None: standard output).
    pub output: Option<PathBuf>,
}

/// Parses a time: RFC 3339 (`2026-01-05T03:12:00Z`), `now`, or a duration ago (`3m ago`,
/// `1h30m ago`), relative to `now`. Returns ns since the epoch.
pub fn parse_time(flag: &str, text: &str, now: DateTime<Utc>) -> Result<i64, UsageError> {
    let t = text.trim();
    let bad = || {
        UsageError::new(format!(
            "{flag}: '{text}' is not a time: give RFC 3339 (2026-01-05T03:12:00Z) or a duration ago (\"3m ago\")"
        ))
    };
    let at = if t == "now" {
        now
    } else if let Some(d) = t.strip_suffix("ago") {
        let d = humantime::parse_duration(d.trim()).map_err(|_| bad())?;
        now - chrono::Duration::from_std(d).map_err(|_| bad())?
    } else {
        DateTime::parse_from_rfc3339(t).map_err(|_| bad())?.to_utc()
    };
    at.timestamp_nanos_opt().ok_or_else(bad)
}

impl ReplayArgs {
    /// Validates `opt`; `terminal`: stdin and stdout are terminals (the view is possible).
    pub fn from_opt(
        opt: &crate::cli::ReplayOpt,
        now: DateTime<Utc>,
        terminal: bool,
    ) -> Result<Self, UsageError> {
        let time = |flag: &str, v: &Option<String>| {
            v.as_deref().map(|t| parse_time(flag, t, now)).transpose()
        };
        let (from, to, at) = (
            time("--from", &opt.from)?,
            time("--to", &opt.to)?,
            time("--at", &opt.at)?,
        );
        if let (Some(a), Some(b)) = (from, to)
            && a >= b
        {
            return Err(UsageError::new("--from must be before --to"));
        }
        let format = opt.format.as_deref().map(str::trim);
        let chosen = [opt.json, opt.no_tui, format.is_some(), opt.plot.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if chosen > 1 && !(opt.json && opt.no_tui) {
            return Err(UsageError::new(
                "give one of --json, --no-tui, --format and --plot",
            ));
        }
        if opt.top == 0 {
            return Err(UsageError::new("--top: give at least 1 row"));
        }
        let what = match (format, &opt.plot) {
            (Some("openmetrics"), _) => What::OpenMetrics,
            (Some("csv"), _) => What::Csv,
            (Some("json"), _) => What::Report { json: true },
            (Some("table"), _) => What::Report { json: false },
            (Some(f), _) => {
                return Err(UsageError::new(format!(
                    "--format: '{f}' is not a format; give openmetrics, csv, json or table"
                )));
            }
            (None, Some(file)) => What::Plot {
                file: file.clone(),
                top: opt.top,
            },
            (None, None) if opt.json => What::Report { json: true },
            (None, None) if opt.no_tui || !terminal || opt.output.is_some() => {
                What::Report { json: false }
            }
            (None, None) => What::View,
        };
        if at.is_some() && what != What::View {
            return Err(UsageError::new(
                "--at opens the interactive view there; for a report give --from/--to",
            ));
        }
        if opt.follow && matches!(what, What::Plot { .. } | What::OpenMetrics) {
            return Err(UsageError::new(
                "--follow prints reports or CSV as frames come; --plot and --format openmetrics need a finished window",
            ));
        }
        Ok(Self {
            dir: opt.dir.clone(),
            what,
            from,
            to,
            at,
            follow: opt.follow,
            output: opt.output.clone(),
        })
    }
}

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// Whether the standard streams are a terminal (the view needs both stdin and stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Terminal {
    /// Standard input is a terminal.
    pub stdin: bool,
    /// Standard output is a terminal.
    pub stdout: bool,
}

impl Terminal {
    /// The process's own streams.
    pub fn detect() -> Self {
        use std::io::IsTerminal as _;
        Self {
            stdin: std::io::stdin().is_terminal(),
            stdout: std::io::stdout().is_terminal(),
        }
    }
}

impl Mode {
    /// Validates `replay DIR`'s `opt` at `now` (what "3m ago" means) on `terminal`.
    pub fn replay(
        opt: &crate::cli::ReplayOpt,
        now: DateTime<Utc>,
        terminal: Terminal,
    ) -> Result<Self, UsageError> {
        ReplayArgs::from_opt(opt, now, terminal.stdin && terminal.stdout).map(Self::Replay)
    }

    /// Validates `opt` into the mode to run. `pid_max` is the system's
    /// `/proc/sys/kernel/pid_max`; `terminal` decides between the view and the table.
    pub fn from_opt(opt: &Opt, pid_max: u32, terminal: Terminal) -> Result<Self, UsageError> {
        non_empty(
            "--host-proc",
            "the directory where the host's /proc is mounted, e.g. /host/proc",
            opt.host_proc.iter().filter_map(|p| p.to_str()),
        )?;
        if opt.cleanup {
            if opt.record.is_some() {
                return Err(UsageError::new(
                    "--cleanup only undoes what killed runs left behind and records nothing; leave out --record",
                ));
            }
            return Ok(Self::Cleanup {
                host_proc: opt.host_proc.clone(),
            });
        }
        let run = Run::from_opt(opt, pid_max, terminal)?;
        Ok(if run.targets.command.is_empty() {
            Self::Watch(run)
        } else {
            Self::Spawn(run)
        })
    }
}

impl Run {
    fn from_opt(opt: &Opt, pid_max: u32, terminal: Terminal) -> Result<Self, UsageError> {
        let targets = Targets::from_opt(opt, pid_max)?;
        let window = opt
            .time
            .as_deref()
            .map(|t| parse_duration("-t", t))
            .transpose()?;
        let interval = parse_duration("--interval", &opt.interval)?;
        if interval < MIN_INTERVAL {
            return Err(UsageError::new(format!(
                "--interval {}: at least 10ms, e.g. --interval 100ms",
                opt.interval
            )));
        }
        non_empty(
            "-o",
            "a file name",
            opt.output.iter().filter_map(|p| p.to_str()),
        )?;
        let metrics = opt
            .metrics_addr
            .as_deref()
            .map(|a| {
                Ok::<_, UsageError>(Metrics {
                    addr: parse_metrics_addr(a)
                        .map_err(|e| UsageError::new(format!("--metrics-addr: {e}")))?,
                    max_series: opt.max_series,
                })
            })
            .transpose()?;
        if opt.max_series == 0 {
            return Err(UsageError::new(
                "--max-series 0: /metrics would hold no series at all; keep at least one, e.g. --max-series 10000",
            ));
        }
        if opt.destinations_max == 0 {
            return Err(UsageError::new(
                "--destinations-max 0: keep at least one remote host apart, e.g. --destinations-max 1000",
            ));
        }
        let classes = (!opt.class.is_empty() || opt.classes.is_some())
            .then(|| crate::classes::ClassSet::from_flags(&opt.class, opt.classes.as_deref()))
            .transpose()?;
        let interfaces = match &opt.interface {
            Some(list) => parse_interfaces(list)?,
            None => Vec::new(),
        };
        let shown = Shown::of(opt, window.is_some(), terminal)?;
        Ok(Self {
            targets,
            counting: Counting {
                interfaces,
                details: opt.details,
                destinations: opt.destinations,
                destinations_max: opt.destinations_max,
                classes,
            },
            interval,
            window,
            reports: Reports {
                output: shown.output,
                file: opt.output.clone(),
                stream: shown.stream,
                aggregate: opt.aggregate,
            },
            command_io: shown.command_io,
            metrics,
            series_grace: parse_duration("--series-grace", &opt.series_grace)?,
            record: RecordConfig::from_opt(opt)?,
            host_proc: opt.host_proc.clone(),
        })
    }
}

/// How a run meets the terminal: the output, where reports go, and how a command runs.
struct Shown {
    output: Output,
    stream: Stream,
    command_io: CommandIo,
}

impl Shown {
    /// Decides, from the flags and whether stdin and stdout are terminals:
    /// - the outputs scripts read (`--json`, `-o`, stdout not a terminal) are what they
    ///   always were, with or without a command;
    /// - without a command, the view on a terminal (stdin and stdout), unless one of those or
    ///   `--no-tui` asks for the table;
    /// - with a command and `--view`, the view, the command in its pane;
    /// - with a command and stdin a terminal, the command gets the terminal; with stdout a
    ///   terminal too (and no `-o`), procnetmon2 reports on stderr when it exits: the table,
    ///   or JSON with `--json`, of its whole run (`-c` adds one every interval);
    /// - with a command and stdin not a terminal, as always.
    ///
    /// Reports come every interval with `-c`, and by default without `-t` (as a metrics
    /// daemon, only when `-j` or `-o` asks for them), except on stderr.
    fn of(opt: &Opt, window: bool, terminal: Terminal) -> Result<Self, UsageError> {
        let command = !opt.command.is_empty();
        let tty = terminal.stdin && terminal.stdout;
        let scripts = opt.json || opt.output.is_some();
        if opt.view && !tty {
            return Err(UsageError::new(
                "--view needs a terminal on standard input and output: run it from a terminal, or drop --view for the table",
            ));
        }
        if opt.view && (scripts || opt.no_tui) {
            return Err(UsageError::new(
                "--view opens the interactive view; --json, -o and --no-tui print reports instead: drop one",
            ));
        }
        let command_io = match (command, opt.view, terminal.stdin) {
            (false, _, _) | (true, false, false) => CommandIo::Inherit,
            (true, true, _) => CommandIo::Pane,
            (true, false, true) => CommandIo::Foreground,
        };
        let view = opt.view || (!command && tty && !opt.no_tui && !scripts);
        let stream =
            if command_io == CommandIo::Foreground && terminal.stdout && opt.output.is_none() {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
        let every_interval = opt.continuous
            || (!window && stream == Stream::Stdout && (opt.metrics_addr.is_none() || scripts));
        let output = if view {
            Output::View
        } else if opt.json {
            Output::Json { every_interval }
        } else if every_interval {
            Output::LiveTable
        } else {
            Output::Table
        };
        Ok(Self {
            output,
            stream,
            command_io,
        })
    }
}

impl Targets {
    /// The targets of `opt`; refuses flag combinations that make no sense.
    fn from_opt(opt: &Opt, pid_max: u32) -> Result<Self, UsageError> {
        let pids = match &opt.pids {
            Some(list) => parse_pid_list(list, pid_max)?,
            None if !opt.command.is_empty()
                || opt.metrics_addr.is_some()
                || opt.all
                || !opt.cgroup.is_empty()
                || !opt.container.is_empty() =>
            {
                Vec::new()
            }
            None => {
                return Err(UsageError::new(
                    "no target given: name processes with -p PID[,PID…] (or --cgroup, --container, --all, or a command after --)",
                ));
            }
        };
        non_empty(
            "--cgroup",
            "a cgroup path such as /system.slice/nginx.service (/ is the whole host)",
            opt.cgroup.iter().map(String::as_str),
        )?;
        non_empty(
            "--container",
            "a container id or a unique prefix of one",
            opt.container.iter().map(String::as_str),
        )?;
        let t = Self {
            pids,
            children: !opt.no_children,
            isolate: opt.isolate,
            cgroups: opt.cgroup.clone(),
            containers: opt.container.clone(),
            all: opt.all,
            command: opt.command.clone(),
        };
        t.check()?;
        Ok(t)
    }

    /// Refuses combinations that make no sense: `-p` with a command; `--isolate` without
    /// `-p` or with a command; `--no-children` without `-p` (a cgroup target always counts
    /// every process in it).
    fn check(&self) -> Result<(), UsageError> {
        let spawn = !self.command.is_empty();
        if !self.pids.is_empty() && spawn {
            return Err(UsageError::new(
                "give either -p PIDS or a command after --, not both",
            ));
        }
        if self.isolate && spawn {
            return Err(UsageError::new(
                "--isolate applies to -p targets; a spawned command always runs in its own cgroup",
            ));
        }
        if self.isolate && self.pids.is_empty() {
            return Err(UsageError::new(
                "--isolate applies to -p targets: name the processes to isolate with -p PID",
            ));
        }
        if !self.children && self.pids.is_empty() {
            return Err(UsageError::new(
                "--no-children applies to -p targets; a cgroup, container or command target always counts every process in it: drop --no-children",
            ));
        }
        Ok(())
    }
}

/// Parses `-p`: comma-separated positive PIDs no larger than `pid_max`. Duplicates are
/// dropped quietly; empty entries (`1,,2`, `1,`) are errors.
pub fn parse_pid_list(list: &str, pid_max: u32) -> Result<Vec<u32>, UsageError> {
    let mut pids = Vec::new();
    if list.trim().is_empty() {
        return Err(UsageError::new("-p is empty: give PIDs like -p 1234,5678"));
    }
    for raw in list.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            return Err(UsageError::new(format!(
                "-p '{list}' has an empty entry: separate PIDs with single commas, e.g. -p 1234,5678"
            )));
        }
        let pid: i64 = item.parse().map_err(|_| {
            UsageError::new(format!(
                "-p: '{item}' is not a process ID: give numbers, e.g. -p 1234"
            ))
        })?;
        if pid <= 0 {
            return Err(UsageError::new(format!(
                "-p: {pid} is not a valid process ID: PIDs are positive numbers (see ps or pgrep)"
            )));
        }
        if pid > i64::from(pid_max) {
            return Err(UsageError::new(format!(
                "-p: {pid} is above this system's pid_max ({pid_max}): check the PID with ps or pgrep"
            )));
        }
        let pid = pid as u32;
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The longest duration any flag takes (a year): beyond it, deadlines overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The shortest `--interval`: below it sampling becomes a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Parses a positive duration (`10s`, `5m`, `1h30m`, `500ms`) of at most [`MAX_DURATION`]
/// for flag `flag`.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, UsageError> {
    let d = humantime::parse_duration(text.trim()).map_err(|_| {
        UsageError::new(format!(
            "{flag}: '{text}' is not a duration: use a number with a unit, e.g. 10s, 5m, 1h30m"
        ))
    })?;
    if d.is_zero() {
        return Err(UsageError::new(format!(
            "{flag}: the duration must be greater than zero, e.g. 10s"
        )));
    }
    if d > MAX_DURATION {
        return Err(UsageError::new(format!(
            "{flag}: '{text}' is longer than a year, the most procnetmon2 takes; run without -t to run until stopped"
        )));
    }
    Ok(d)
}

/// Parses `--metrics-addr`: a bare port (`9809`) binds loopback, `127.0.0.1:9809`; an
/// `IP:PORT` (`0.0.0.0:9809`, `[::]:9809`) or `localhost:PORT` is taken as given.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|e| format!("invalid port in {s:?}: {e}"));
    }
    if let Some(port) = s.strip_prefix(':') {
        return Err(format!(
            "{s:?}: give the address to bind, e.g. 0.0.0.0:{port} (all interfaces) or {port} (loopback)"
        ));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?}: expected PORT, IP:PORT or [IPv6]:PORT (e.g. 9809, 0.0.0.0:9809, [::]:9809)")
    })
}

/// Refuses an empty value for a flag that names a path or an id.
fn non_empty<'a>(
    flag: &str,
    what: &str,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<(), UsageError> {
    if values.into_iter().any(|v| v.trim().is_empty()) {
        return Err(UsageError::new(format!("{flag} is empty: give {what}")));
    }
    Ok(())
}

/// Parses `-i`: comma-separated interface names, each 1..=15 bytes without '/', ':' or spaces.
pub fn parse_interfaces(list: &str) -> Result<Vec<String>, UsageError> {
    let mut out: Vec<String> = Vec::new();
    for raw in list.split(',') {
        let name = raw.trim();
        if name.is_empty() {
            return Err(UsageError::new(format!(
                "-i '{list}' has an empty entry: give names like -i eth0,eth1"
            )));
        }
        if name.len() > IFNAME_MAX {
            return Err(UsageError::new(format!(
                "-i: '{name}' is longer than {IFNAME_MAX} characters, the most Linux allows for an interface name"
            )));
        }
        if name.contains(['/', ':'])
            || name.chars().any(char::is_whitespace)
            || name == "."
            || name == ".."
        {
            return Err(UsageError::new(format!(
                "-i: '{name}' is not a valid interface name (see 'ip link')"
            )));
        }
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_lists() {
        assert_eq!(parse_pid_list("1234", 4_194_304).unwrap(), vec![1234]);
        assert_eq!(
            parse_pid_list("1, 2,1,3", 4_194_304).unwrap(),
            vec![1, 2, 3]
        );
        for bad in [
            "", "1,,2", "1,", ",1", "abc", "0", "-5", "1.5", "99999999", "4194305",
        ] {
            let e = parse_pid_list(bad, 4_194_304).unwrap_err();
            assert!(!e.to_string().contains('\n'), "{bad}: {e}");
        }
        assert!(parse_pid_list("4194304", 4_194_304).is_ok());
    }

    #[test]
    fn metrics_addr_forms() {
        let ok = |s: &str| parse_metrics_addr(s).expect(s).to_string();
        assert_eq!(ok("9809"), "127.0.0.1:9809");
        assert_eq!(ok("localhost:9809"), "127.0.0.1:9809");
        assert_eq!(ok("0.0.0.0:9809"), "0.0.0.0:9809");
        assert_eq!(ok("[::]:9809"), "[::]:9809");
        assert_eq!(ok("[::1]:1"), "[::1]:1");
        assert_eq!(ok("10.0.0.1:80"), "10.0.0.1:80");
        for bad in [":9809", "", "65536", "host:9809", "0.0.0.0", "::", "9809x"] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("-t", "10s").unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(
            parse_duration("-t", "1h30m").unwrap(),
            Duration::from_secs(5400)
        );
        assert_eq!(
            parse_duration("-t", "500ms").unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["", "0s", "-3s", "ten", "10", "s", "366d", "500000000000y"] {
            assert!(parse_duration("-t", bad).is_err(), "{bad}");
        }
        assert!(parse_duration("-t", "365d").is_ok());
    }

    /// The mode of a command line (stdin and stdout a terminal when `terminal`), or its usage
    /// error, from clap or from validation.
    fn mode(args: &[&str], terminal: bool) -> Result<Mode, String> {
        let t = Terminal {
            stdin: terminal,
            stdout: terminal,
        };
        mode_on(args, t)
    }

    /// The mode of a command line run with these standard streams.
    fn mode_on(args: &[&str], t: Terminal) -> Result<Mode, String> {
        let mut argv = vec!["procnetmon2"];
        argv.extend_from_slice(args);
        match crate::cli::parse(argv.iter().map(std::ffi::OsString::from)) {
            crate::cli::Parsed::Run(opt) => {
                Mode::from_opt(&opt, 4_194_304, t).map_err(|e| e.to_string())
            }
            crate::cli::Parsed::Usage(msg) => Err(msg),
            crate::cli::Parsed::Info(_)
            | crate::cli::Parsed::Completions(_)
            | crate::cli::Parsed::Replay(_) => {
                panic!("not a run: {args:?}")
            }
        }
    }

    /// The run of a command line that counts (watch or spawn), not on a terminal.
    fn run(args: &[&str]) -> Result<Run, String> {
        match mode(args, false)? {
            Mode::Watch(r) | Mode::Spawn(r) => Ok(r),
            m => panic!("not a counting run: {m:?}"),
        }
    }

    #[test]
    fn record_flags() {
        let c = run(&["--all", "--record", "/r"]).expect("valid");
        assert_eq!(
            c.record,
            Some(RecordConfig {
                dir: "/r".into(),
                retain: Some(DEFAULT_RETAIN),
                retain_size: Some(DEFAULT_RETAIN_SIZE),
            })
        );
        let c = run(&[
            "--all",
            "--record",
            "/r",
            "--retain",
            "0",
            "--retain-size",
            "500MiB",
        ])
        .expect("valid");
        let r = c.record.expect("record");
        assert_eq!((r.retain, r.retain_size), (None, Some(500 << 20)));
        for (args, msg) in [
            (
                &["--all", "--retain", "1d"][..],
                "--retain works with --record DIR",
            ),
            (
                &["--all", "--record", "/r", "--retain-size", "lots"][..],
                "is not a size",
            ),
            (
                &["--all", "--record", "/r", "--retain", "soon"][..],
                "is not a duration",
            ),
            (&["--all", "--record", ""][..], "--record"),
            (&["--cleanup", "--record", "/r"][..], "leave out --record"),
        ] {
            let e = mode(args, false).expect_err("refused");
            assert!(e.contains(msg), "{args:?}: {e}");
        }
        for (text, want) in [
            ("1GiB", 1 << 30),
            ("2G", 2 << 30),
            ("10MB", 10_000_000),
            ("0", 0),
            ("7", 7),
        ] {
            assert_eq!(parse_size("--retain-size", text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_values_refused_up_front() {
        for (args, msg) in [
            (&["-p", "1", "--interval", "1ns"][..], "at least 10ms"),
            (&["-p", "1", "--interval", "9ms"], "at least 10ms"),
            (&["-p", "1", "-t", "500000000000y"], "longer than a year"),
            (&["--cgroup", ""], "--cgroup is empty"),
            (&["--container", " "], "--container is empty"),
            (&["-p", "1", "--host-proc", ""], "--host-proc"),
            (&["-p", "1", "-o", ""], "-o"),
            (&["-p", "1", "--metrics-addr", ":9809"], "--metrics-addr"),
            (&["-p", "1", "--destinations-max", "0"], "at least one"),
            (
                &["--all", "--metrics-addr", "9809", "--max-series", "0"],
                "--max-series 0",
            ),
            (&["-p", "1", "--max-series", "0"], "--max-series 0"),
            (&[], "no target given"),
        ] {
            let e = mode(args, false).expect_err(&format!("{args:?}"));
            assert!(e.contains(msg), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{args:?}: {e}");
        }
        assert!(run(&["-p", "1", "--interval", "10ms"]).is_ok());
    }

    #[test]
    fn refused_combinations() {
        for (args, msg) in [
            (&["-p", "10", "--", "curl"][..], "not both"),
            (&["--isolate", "--", "curl"], "--isolate applies to -p"),
            (&["--isolate", "--cgroup", "/x"], "--isolate applies to -p"),
            (&["--isolate", "--all"], "--isolate applies to -p"),
            (&["--no-children", "--", "curl"], "--no-children applies"),
            (
                &["--no-children", "--cgroup", "/x"],
                "--no-children applies",
            ),
            (&["--no-children", "--all"], "--no-children applies"),
        ] {
            let e = mode(args, false).expect_err(&format!("{args:?} must be refused"));
            assert!(e.contains(msg), "{args:?}: {e}");
        }
    }

    #[test]
    fn the_mode_of_each_command_line() {
        let kind = |args: &[&str]| match mode(args, false).unwrap() {
            Mode::Watch(_) => "watch",
            Mode::Spawn(_) => "spawn",
            Mode::Cleanup { .. } => "cleanup",
            Mode::Replay(_) => "replay",
        };
        for (args, want) in [
            (&["-p", "1"][..], "watch"),
            (&["--all"], "watch"),
            (&["--cgroup", "/x", "--container", "ab"], "watch"),
            (&["--metrics-addr", "9809"], "watch"),
            (&["--", "curl", "x"], "spawn"),
            (&["--all", "--", "curl"], "spawn"),
            (&["--cleanup"], "cleanup"),
            (&["--cleanup", "-p", "1"], "cleanup"),
        ] {
            assert_eq!(kind(args), want, "{args:?}");
        }
    }

    #[test]
    fn the_output_of_each_command_line() {
        const V: Output = Output::View;
        const T: Output = Output::Table;
        const L: Output = Output::LiveTable;
        const J: Output = Output::Json {
            every_interval: false,
        };
        const JL: Output = Output::Json {
            every_interval: true,
        };
        // (args, stdin and stdout are a terminal) → output
        for (args, terminal, want) in [
            // The view: on a terminal, without the outputs scripts read.
            (&["-p", "1"][..], true, V),
            (&["-p", "1", "-t", "10s"], true, V),
            (&["--all"], true, V),
            (&["--cgroup", "/x"], true, V),
            (&["-p", "1", "--view"], true, V),
            // A command on a terminal has it; its report comes at its exit (below).
            (&["--", "true"], true, T),
            (&["--view", "--", "true"], true, V),
            (&["-p", "1", "--no-tui"], true, L),
            (&["-p", "1", "--json"], true, JL),
            (&["-p", "1", "-o", "out.txt"], true, L),
            // Piped: the live table without -t, one report with it, both with -c.
            (&["-p", "1"], false, L),
            (&["-p", "1", "-t", "10s"], false, T),
            (&["-p", "1", "-t", "10s", "-c"], false, L),
            (&["-p", "1", "--json"], false, JL),
            (&["-p", "1", "--json", "-t", "10s"], false, J),
            (&["-p", "1", "--json", "-t", "10s", "-c"], false, JL),
            // A metrics daemon prints reports only when -c, -j or -o asks for them.
            (&["--all", "--metrics-addr", "9809"], false, T),
            (&["--all", "--metrics-addr", "9809", "-c"], false, L),
            (&["--all", "--metrics-addr", "9809", "--json"], false, JL),
            (&["--all", "--metrics-addr", "9809", "-o", "f"], false, L),
        ] {
            let (Mode::Watch(r) | Mode::Spawn(r)) = mode(args, terminal).unwrap() else {
                panic!("{args:?}: not a counting run");
            };
            assert_eq!(r.reports.output, want, "{args:?} terminal={terminal}");
        }

        // A command: (args, stdin a terminal, stdout a terminal) → (output, where reports
        // go without -o, how the command meets the terminal). The scripts' path (stdout not
        // a terminal, --json to a pipe, -o) is what it always was: the same rows as without
        // a command, only the command gets the terminal when stdin is one.
        use CommandIo::{Foreground as Fg, Inherit as In, Pane};
        use Stream::{Stderr as Err, Stdout as Out};
        for (args, stdin, stdout, want) in [
            // Typed at a terminal: the command has it, one report of its whole run on
            // stderr at its exit; -c adds one every interval, also on stderr.
            (&["--", "sh"][..], true, true, (T, Err, Fg)),
            (&["--no-tui", "--", "sh"], true, true, (T, Err, Fg)),
            (&["-t", "10s", "--", "sh"], true, true, (T, Err, Fg)),
            (&["-c", "--", "sh"], true, true, (L, Err, Fg)),
            (&["--json", "--", "sh"], true, true, (J, Err, Fg)),
            (&["--json", "-c", "--", "sh"], true, true, (JL, Err, Fg)),
            (
                &["--json", "-t", "10s", "--", "sh"],
                true,
                true,
                (J, Err, Fg),
            ),
            // ... with -o FILE: the file gets what it always got.
            (&["-o", "f", "--", "sh"], true, true, (L, Out, Fg)),
            (
                &["--json", "-o", "f", "--", "sh"],
                true,
                true,
                (JL, Out, Fg),
            ),
            (
                &["--json", "-o", "f", "-t", "10s", "--", "sh"],
                true,
                true,
                (J, Out, Fg),
            ),
            // ... piped (`procnetmon2 --json -- CMD | jq`): stdout gets what it always got.
            (&["--", "sh"], true, false, (L, Out, Fg)),
            (&["--json", "--", "sh"], true, false, (JL, Out, Fg)),
            (
                &["--json", "-t", "10s", "--", "sh"],
                true,
                false,
                (J, Out, Fg),
            ),
            // Standard input not a terminal (scripts, cron, CI): as always.
            (&["--", "sh"], false, false, (L, Out, In)),
            (&["--", "sh"], false, true, (L, Out, In)),
            (&["--json", "--", "sh"], false, false, (JL, Out, In)),
            (
                &["--json", "-t", "10s", "--", "sh"],
                false,
                true,
                (J, Out, In),
            ),
            (&["-t", "10s", "--", "sh"], false, false, (T, Out, In)),
            // --view: the view, the command in its pane.
            (&["--view", "--", "sh"], true, true, (V, Out, Pane)),
            (
                &["--view", "-t", "10s", "--", "sh"],
                true,
                true,
                (V, Out, Pane),
            ),
            // Without a command nothing has the terminal but the view.
            (&["-p", "1"], true, false, (L, Out, In)),
            (&["-p", "1"], false, true, (L, Out, In)),
        ] {
            let terminal = Terminal { stdin, stdout };
            let (Mode::Watch(r) | Mode::Spawn(r)) = mode_on(args, terminal).unwrap() else {
                panic!("{args:?}: not a counting run");
            };
            let got = (r.reports.output, r.reports.stream, r.command_io);
            assert_eq!(got, want, "{args:?} stdin={stdin} stdout={stdout}");
            // The whole run is reported only where the report is for the person at the
            // terminal.
            assert_eq!(
                r.reports.whole_run(),
                want.1 == Err && r.reports.file.is_none(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn view_needs_a_terminal_and_no_script_output() {
        let on = |stdin, stdout| Terminal { stdin, stdout };
        for (args, terminal, msg) in [
            (
                &["--view", "--", "sh"][..],
                on(false, false),
                "needs a terminal",
            ),
            (&["--view", "--", "sh"], on(true, false), "needs a terminal"),
            (&["--view", "-p", "1"], on(false, true), "needs a terminal"),
            (
                &["--view", "--json", "--", "sh"],
                on(true, true),
                "drop one",
            ),
            (
                &["--view", "-o", "f", "-p", "1"],
                on(true, true),
                "drop one",
            ),
            (
                &["--view", "--no-tui", "--", "sh"],
                on(true, true),
                "drop one",
            ),
        ] {
            let e = mode_on(args, terminal).expect_err(&format!("{args:?}"));
            assert!(e.contains(msg), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{args:?}: {e}");
        }
    }

    #[test]
    fn interfaces() {
        assert_eq!(
            parse_interfaces("eth0,lo,eth0").unwrap(),
            vec!["eth0", "lo"]
        );
        for bad in ["", "eth0,", "averyveryverylongname", "a/b", "a b", ".."] {
            assert!(parse_interfaces(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_of_a_command_line() {
        let r = run(&["-p", "1,2,1", "--cgroup", "/x", "--all", "--no-children"]).unwrap();
        assert_eq!(r.targets.pids, vec![1, 2]);
        assert!(!r.targets.children && r.targets.all && r.targets.command.is_empty());
        assert_eq!(r.targets.cgroups, vec!["/x"]);
        let r = run(&["--container", "ab", "--", "curl", "-s"]).unwrap();
        assert_eq!(r.targets.command, vec!["curl", "-s"]);
        assert!(r.targets.children);
    }
}
