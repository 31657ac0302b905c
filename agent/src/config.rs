//! Validated run configuration, built from the command line (`cli::Opt`).
//!
//! Everything here is pure: no /proc, no kernel. Checks that need the system (does the PID
//! exist, is it a kernel thread) live in `procs`.

use std::{path::PathBuf, time::Duration};

use crate::{cli::Opt, error::UsageError};

/// What the run does; see `cli::Opt` for the meaning of each flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Target PIDs, deduplicated, in the order given.
    pub pids: Vec<u32>,
    /// Interface names to count (empty: all).
    pub interfaces: Vec<String>,
    /// JSON output.
    pub json: bool,
    /// The `-t` window, if any.
    pub window: Option<Duration>,
    /// Add an aggregate row / object.
    pub aggregate: bool,
    /// A report every interval (on by default when there is no window).
    pub continuous: bool,
    /// Per-connection details.
    pub details: bool,
    /// Sampling and reporting interval.
    pub interval: Duration,
    /// Report destination (None: stdout).
    pub output: Option<PathBuf>,
    /// `--isolate`: move targets into dedicated cgroups.
    pub isolate: bool,
    /// Follow forks (off with `--no-children`).
    pub children: bool,
    /// Spawn mode: the command and its arguments (empty: `-p` mode).
    pub command: Vec<String>,
    /// `--cleanup` only.
    pub cleanup: bool,
    /// `--cgroup` subtrees.
    pub cgroups: Vec<String>,
    /// `--container` id prefixes.
    pub containers: Vec<String>,
    /// `--all`.
    pub all: bool,
    /// `--host-proc`.
    pub host_proc: Option<PathBuf>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// `--max-series`.
    pub max_series: usize,
    /// `--series-grace`.
    pub series_grace: Duration,
    /// `--no-tui`.
    pub no_tui: bool,
    /// The interactive view replaces the table (see [`Config::wants_tui`]); set once at
    /// start-up from the flags and whether stdin and stdout are terminals.
    pub tui: bool,
    /// `--destinations`: per-remote-host totals.
    pub destinations: bool,
    /// `--destinations-max`: remote hosts kept apart per target.
    pub destinations_max: u64,
    /// `--class` / `--classes` (None: classes off).
    pub classes: Option<crate::classes::ClassSet>,
    /// `--record DIR` and its retention (None: nothing is recorded).
    pub record: Option<RecordConfig>,
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

/// Longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

impl Config {
    /// Validates `opt`. `pid_max` is the system's `/proc/sys/kernel/pid_max`.
    pub fn from_opt(opt: &Opt, pid_max: u32) -> Result<Self, UsageError> {
        let pids = match &opt.pids {
            Some(list) => parse_pid_list(list, pid_max)?,
            None if !opt.command.is_empty()
                || opt.cleanup
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
            "--cgroup",
            "a cgroup path such as /system.slice/nginx.service (/ is the whole host)",
            opt.cgroup.iter().map(String::as_str),
        )?;
        non_empty(
            "--container",
            "a container id or a unique prefix of one",
            opt.container.iter().map(String::as_str),
        )?;
        non_empty(
            "--host-proc",
            "the directory where the host's /proc is mounted, e.g. /host/proc",
            opt.host_proc.iter().filter_map(|p| p.to_str()),
        )?;
        non_empty(
            "-o",
            "a file name",
            opt.output.iter().filter_map(|p| p.to_str()),
        )?;
        let metrics_addr = opt
            .metrics_addr
            .as_deref()
            .map(|a| {
                crate::metrics::parse_metrics_addr(a)
                    .map_err(|e| UsageError::new(format!("--metrics-addr: {e}")))
            })
            .transpose()?;
        let series_grace = parse_duration("--series-grace", &opt.series_grace)?;
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
        Ok(Self {
            pids,
            interfaces,
            json: opt.json,
            window,
            aggregate: opt.aggregate,
            // -c is on by default only when no -t is given (and, as a metrics daemon, only
            // when reports are asked for with -j or -o).
            continuous: opt.continuous
                || (window.is_none()
                    && (metrics_addr.is_none() || opt.json || opt.output.is_some())),
            details: opt.details,
            interval,
            output: opt.output.clone(),
            isolate: opt.isolate,
            children: !opt.no_children,
            command: opt.command.clone(),
            cleanup: opt.cleanup,
            cgroups: opt.cgroup.clone(),
            containers: opt.container.clone(),
            all: opt.all,
            host_proc: opt.host_proc.clone(),
            metrics_addr,
            max_series: opt.max_series,
            series_grace,
            no_tui: opt.no_tui,
            tui: false,
            destinations: opt.destinations,
            destinations_max: opt.destinations_max,
            classes,
            record: RecordConfig::from_opt(opt)?,
        })
    }

    /// True when the run should open the interactive view: stdin and stdout are a terminal
    /// (`terminal`) and nothing asks for the plain outputs scripts read (`--json`, `-o`,
    /// `--no-tui`); `--cleanup` has no view.
    pub fn wants_tui(&self, terminal: bool) -> bool {
        terminal && !self.no_tui && !self.json && self.output.is_none() && !self.cleanup
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

    /// The usage error of a command line, from clap or from validation.
    fn config(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["procnetmon2"];
        argv.extend_from_slice(args);
        match crate::cli::parse(argv.iter().map(std::ffi::OsString::from)) {
            crate::cli::Parsed::Run(opt) => {
                Config::from_opt(&opt, 4_194_304).map_err(|e| e.to_string())
            }
            crate::cli::Parsed::Usage(msg) => Err(msg),
            crate::cli::Parsed::Info(_) | crate::cli::Parsed::Replay(_) => {
                panic!("not a run: {args:?}")
            }
        }
    }

    #[test]
    fn record_flags() {
        let c = config(&["--all", "--record", "/r"]).expect("valid");
        assert_eq!(
            c.record,
            Some(RecordConfig {
                dir: "/r".into(),
                retain: Some(DEFAULT_RETAIN),
                retain_size: Some(DEFAULT_RETAIN_SIZE),
            })
        );
        let c = config(&[
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
            let e = config(args).expect_err("refused");
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
        ] {
            let e = config(args).expect_err(&format!("{args:?}"));
            assert!(e.contains(msg), "{args:?}: {e}");
        }
        assert!(config(&["-p", "1", "--interval", "10ms"]).is_ok());
    }

    #[test]
    fn interactive_view_only_on_a_terminal_without_script_outputs() {
        // (args, stdin and stdout are a terminal) → view
        for (args, terminal, tui) in [
            (&["-p", "1"][..], true, true),
            (&["-p", "1"], false, false),
            (&["-p", "1", "--no-tui"], true, false),
            (&["-p", "1", "--json"], true, false),
            (&["-p", "1", "-o", "out.txt"], true, false),
            (&["-p", "1", "-t", "10s"], true, true),
            (&["--all"], true, true),
            (&["--cgroup", "/x"], true, true),
            (&["--", "true"], true, true),
            (&["--cleanup"], true, false),
        ] {
            let cfg = config(args).unwrap();
            assert_eq!(cfg.wants_tui(terminal), tui, "{args:?} terminal={terminal}");
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
    fn continuous_defaults() {
        let base = |time: Option<&str>, c: bool| Opt {
            pids: Some("1".into()),
            interface: None,
            json: false,
            time: time.map(Into::into),
            aggregate: false,
            continuous: c,
            details: false,
            interval: "1s".into(),
            output: None,
            isolate: false,
            no_children: false,
            record: None,
            retain: None,
            retain_size: None,
            cleanup: false,
            command: Vec::new(),
            cgroup: Vec::new(),
            container: Vec::new(),
            all: false,
            host_proc: None,
            metrics_addr: None,
            max_series: 10_000,
            series_grace: "5m".into(),
            no_tui: false,
            destinations: false,
            destinations_max: 1000,
            class: Vec::new(),
            classes: None,
        };
        assert!(
            Config::from_opt(&base(None, false), 100)
                .unwrap()
                .continuous
        );
        assert!(
            !Config::from_opt(&base(Some("10s"), false), 100)
                .unwrap()
                .continuous
        );
        assert!(
            Config::from_opt(&base(Some("10s"), true), 100)
                .unwrap()
                .continuous
        );
        let mut no_pids = base(None, false);
        no_pids.pids = None;
        assert!(Config::from_opt(&no_pids, 100).is_err());
    }
}
