//! Command-line flags (clap derive). The seed's flags are a contract: `-p/--pids`,
//! `-i/--interface`, `-j/--json`, `-t/--time`, `-a/--aggregate`, `-c/--continuous`,
//! `-d/--details`, `-h/--help`. Values are kept as text here and validated in `config`,
//! so that every bad value gets a one-line message naming the fix.
//! `build.rs` compiles this file too (for the man page and completions): use only clap,
//! clap_complete and `crate::version` here.

use clap::{CommandFactory as _, FromArgMatches as _, Parser};

const EXAMPLES: &str = "\
Examples:
  procnetmon2 -p 1234                   interactive view on a terminal (the live table
                                        with --no-tui, -j, -o, or when piped)
  procnetmon2 -p 1234,5678 -a           two processes and a TOTAL row
  procnetmon2 -p 1234 -i eth0           only traffic through eth0 (the target's own eth0)
  procnetmon2 -p 1234 --json -t 60s     one JSON report for a 60 s window
  procnetmon2 -p 1234 -t 5m -c          a report every interval, then the window's report
  procnetmon2 -- curl -O http://host/f  run a command and account for it and its children:
                                        on a terminal it has the terminal, and the report
                                        comes on stderr when it exits (like time)
  procnetmon2 --view -- make            the interactive view, the command's output in a pane
  procnetmon2 --json -t 30s -- curl -sO http://host/file
                                        JSON for scripts, as always
  procnetmon2 --all --record /var/lib/procnetmon2
                                        record every interval (hourly files, kept 7 days)
  procnetmon2 replay /var/lib/procnetmon2 --from \"3m ago\" --json
                                        what a -t run over the last 3 minutes would print
  procnetmon2 completions bash          print the bash completion script (also zsh, fish)

A command after -- (spawn mode):
  stdin a terminal      the command gets the terminal (keys, Ctrl-C, Ctrl-Z, job control);
                        the report of its whole run comes when it exits, on stderr if
                        stdout is a terminal (the table, or JSON with --json; -c adds one
                        every interval), else on stdout or -o FILE as always
  --view                the interactive view; the command runs on a pseudo-terminal shown
                        in a pane; Tab hands keys to it, Ctrl-] gives them back
  stdin not a terminal  as always: reports on stdout or -o FILE (scripts, cron, CI)
Without a command: the view when stdin and stdout are terminals; else, or with --no-tui,
-j or -o, the table or JSON on stdout or -o FILE.

Units: rates in bits per second (table: bps/Kbps/Mbps/Gbps, 1 Kbps = 1000 bit/s);
bytes are IP bytes (IP header counted once per packet the socket sends or receives).

Exit status: 0 success, 1 runtime error, 2 usage error; with a command, the command's.";

/// Per-process network accounting with eBPF.
#[derive(Debug, Parser)]
#[command(name = "procnetmon2", version, about, after_help = EXAMPLES)]
pub struct Opt {
    /// Comma-separated list of process IDs to monitor (required), e.g. 1234,5678
    #[arg(
        short = 'p',
        long = "pids",
        value_name = "PIDS",
        allow_hyphen_values = true
    )]
    pub pids: Option<String>,

    /// Network interface(s) to count, comma-separated, named as in each target's own
    /// network namespace (with --all: each workload's) (default: all)
    #[arg(short = 'i', long = "interface", value_name = "NAME")]
    pub interface: Option<String>,

    /// Output in JSON format (one object per report, one line each)
    #[arg(short = 'j', long = "json")]
    pub json: bool,

    /// Time-based sampling period (e.g. 10s, 5m, 1h30m): one report for the whole window
    #[arg(
        short = 't',
        long = "time",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    pub time: Option<String>,

    /// Aggregate statistics across monitored processes (adds a TOTAL row / "aggregated")
    #[arg(short = 'a', long = "aggregate")]
    pub aggregate: bool,

    /// Report every interval (default: on without -t; with -t, also print the window report)
    #[arg(short = 'c', long = "continuous")]
    pub continuous: bool,

    /// Show detailed connection information (and, in the table, TCP health columns)
    #[arg(short = 'd', long = "details")]
    pub details: bool,

    /// Time between reports and rate samples
    #[arg(
        long = "interval",
        value_name = "DURATION",
        default_value = "1s",
        allow_hyphen_values = true
    )]
    pub interval: String,

    /// Write reports to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,

    /// Move each target (all its threads) into a dedicated child of its cgroup for the run;
    /// it is moved back at exit
    #[arg(long = "isolate")]
    pub isolate: bool,

    /// Count the named PIDs only, not the processes they fork
    #[arg(long = "no-children")]
    pub no_children: bool,

    /// Also count everything in this cgroup v2 subtree (e.g. a pod's cgroup); repeatable
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroup: Vec<String>,

    /// Also count a container, by id or a unique id prefix; repeatable
    #[arg(long = "container", value_name = "ID")]
    pub container: Vec<String>,

    /// Node-wide: every socket on the host, grouped by workload (pod/container, else systemd
    /// unit or cgroup)
    #[arg(long = "all")]
    pub all: bool,

    /// Where the host's /proc is mounted when running in a container (e.g. /host/proc)
    #[arg(long = "host-proc", value_name = "DIR")]
    pub host_proc: Option<std::path::PathBuf>,

    /// Serve OpenMetrics on ADDR (`/metrics`, `/healthz`); a bare port binds 127.0.0.1.
    /// Without -t the run then lasts until SIGTERM, and prints reports only with -c/-j/-o
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    /// Most label sets kept in /metrics (each workload's traffic per protocol, and its TCP
    /// health); more are dropped and counted
    #[arg(long = "max-series", value_name = "N", default_value_t = 10_000)]
    pub max_series: usize,

    /// How long a removed workload's series stay in /metrics
    #[arg(long = "series-grace", value_name = "DURATION", default_value = "5m")]
    pub series_grace: String,

    /// Print the plain table even on a terminal, instead of the interactive view (the
    /// table is also used with -j, -o, or when stdout or stdin is not a terminal)
    #[arg(long = "no-tui")]
    pub no_tui: bool,

    /// Open the interactive view (needs a terminal); with a command, the command runs on a
    /// pseudo-terminal shown in a pane of the view instead of having the terminal
    #[arg(long = "view")]
    pub view: bool,

    /// Per remote host totals in JSON (`destinations`: bytes, packets, rates, class, and the
    /// name the target resolved through DNS), per target and with --all per workload
    #[arg(long = "destinations")]
    pub destinations: bool,

    /// Most remote hosts kept apart per target (with --all: per workload); the rest are summed
    /// in `other`
    #[arg(long = "destinations-max", value_name = "N", default_value_t = 1000)]
    pub destinations_max: u64,

    /// A destination class: NAME=CIDR[,CIDR…] (repeatable); adds `classes` to each JSON row and
    /// a destination_class label to the metrics. Built in: loopback, link-local, private, internet
    #[arg(long = "class", value_name = "NAME=CIDRS")]
    pub class: Vec<String>,

    /// Destination classes from a YAML file (NAME: [CIDR, …] per class)
    #[arg(long = "classes", value_name = "FILE")]
    pub classes: Option<std::path::PathBuf>,

    /// Record every interval into DIR (hourly files; `procnetmon2 replay DIR` reads them)
    #[arg(long = "record", value_name = "DIR")]
    pub record: Option<std::path::PathBuf>,

    /// With --record: remove recorded files older than this (default 7d; 0: no age limit)
    #[arg(long = "retain", value_name = "DURATION")]
    pub retain: Option<String>,

    /// With --record: remove the oldest recorded files while all take more (default 1GiB;
    /// e.g. 500MiB; 0: no size limit)
    #[arg(long = "retain-size", value_name = "SIZE")]
    pub retain_size: Option<String>,

    /// Undo what runs killed with SIGKILL left behind (moved processes, cgroups), then exit
    #[arg(long = "cleanup")]
    pub cleanup: bool,

    /// Spawn mode: run COMMAND in a fresh dedicated cgroup and monitor it and its children;
    /// exits with COMMAND's status. On a terminal COMMAND gets the terminal and the report
    /// comes on stderr when it exits (see below)
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Read a recording made with --record DIR: the interactive view, a window's report
/// (JSON or the table), OpenMetrics or CSV, a picture
#[derive(Debug, clap::Args)]
pub struct ReplayOpt {
    /// The directory a run recorded into with --record
    #[arg(value_name = "DIR")]
    pub dir: std::path::PathBuf,

    /// Print the window's report as JSON, as a live -t run over it would have
    #[arg(short = 'j', long = "json")]
    pub json: bool,

    /// Print the window's report as the table instead of opening the interactive view
    #[arg(long = "no-tui")]
    pub no_tui: bool,

    /// Export the window: openmetrics (for promtool tsdb create-blocks-from openmetrics) or
    /// csv (json and table also work)
    #[arg(long = "format", value_name = "FORMAT")]
    pub format: Option<String>,

    /// The window's start: an RFC 3339 time (2026-01-05T03:12:00Z) or a duration ago
    /// ("3m ago"); default: the recording's start
    #[arg(long = "from", value_name = "TIME", allow_hyphen_values = true)]
    pub from: Option<String>,

    /// The window's end (as --from); default: the recording's end
    #[arg(long = "to", value_name = "TIME", allow_hyphen_values = true)]
    pub to: Option<String>,

    /// Open the interactive view at TIME (as --from); default: the recording's end
    #[arg(long = "at", value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,

    /// Draw the rates over time of the busiest rows into FILE (SVG)
    #[arg(long = "plot", value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,

    /// Rows in the --plot picture
    #[arg(long = "top", value_name = "N", default_value_t = 8)]
    pub top: usize,

    /// Keep reading while the recording is written: a report (or CSV lines) per interval
    #[arg(long = "follow")]
    pub follow: bool,

    /// Write to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

/// Outcome of parsing the command line.
#[derive(Debug)]
pub enum Parsed {
    /// Flags to run with.
    Run(Box<Opt>),
    /// `replay DIR`.
    Replay(Box<ReplayOpt>),
    /// `--help` / `--version`: text to print on stdout, exit 0.
    Info(String),
    /// `completions SHELL`: print that shell's completion script (`dist::completions`), exit 0.
    Completions(clap_complete::Shell),
    /// A usage error: one line (plus at most a hint), exit 2.
    Usage(String),
}

/// The whole command line: `Opt`'s flags, the version text (commit, minimum kernel), and the
/// `completions SHELL` and `replay DIR` subcommands, kept out of `Opt` so that the run flags
/// stay one struct.
pub fn command() -> clap::Command {
    use clap::Args as _;
    Opt::command()
        .version(crate::version::text())
        .subcommand(ReplayOpt::augment_args(clap::Command::new("replay")))
        .subcommand(
            clap::Command::new("completions")
                .about("Print the completion script for SHELL on stdout, then exit")
                .arg(
                    clap::Arg::new("shell")
                        .value_name("SHELL")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
        .subcommand_value_name("SUBCOMMAND")
        .subcommand_help_heading("Subcommands")
        .args_conflicts_with_subcommands(true)
        .disable_help_subcommand(true)
}

/// Parses `args` (including the program name). Never exits the process.
pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let parsed = command().try_get_matches_from(args).and_then(|m| {
        if let Some(("completions", sub)) = m.subcommand()
            && let Some(&shell) = sub.get_one::<clap_complete::Shell>("shell")
        {
            return Ok(Parsed::Completions(shell));
        }
        if let Some(("replay", sub)) = m.subcommand() {
            return ReplayOpt::from_arg_matches(sub).map(|o| Parsed::Replay(Box::new(o)));
        }
        Opt::from_arg_matches(&m).map(|opt| Parsed::Run(Box::new(opt)))
    });
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                Parsed::Info(e.render().to_string())
            }
            kind => {
                let arg = match e.get(ContextKind::InvalidArg) {
                    Some(ContextValue::String(s)) => s.clone(),
                    _ => String::new(),
                };
                let msg = match kind {
                    ErrorKind::UnknownArgument => {
                        format!("unknown flag '{arg}'; see 'procnetmon2 --help'")
                    }
                    ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
                        format!("invalid value for {arg}; see 'procnetmon2 --help'")
                    }
                    ErrorKind::ArgumentConflict => {
                        format!("{arg} conflicts with another flag; see 'procnetmon2 --help'")
                    }
                    ErrorKind::TooManyValues => {
                        format!("{arg} given more than once; give it once")
                    }
                    _ => {
                        // clap's own first line, without its "error: " prefix and usage block.
                        let text = e.kind().as_str().unwrap_or("invalid command line");
                        format!("{text} {arg}; see 'procnetmon2 --help'")
                    }
                };
                Parsed::Usage(msg)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_flags_parse() {
        let Parsed::Run(o) = parse([
            "procnetmon2",
            "-p",
            "1,2",
            "-i",
            "eth0",
            "-j",
            "-t",
            "60s",
            "-a",
            "-c",
            "-d",
        ]) else {
            panic!("expected Run");
        };
        assert_eq!(o.pids.as_deref(), Some("1,2"));
        assert_eq!(o.interface.as_deref(), Some("eth0"));
        assert!(o.json && o.aggregate && o.continuous && o.details);
        assert_eq!(o.time.as_deref(), Some("60s"));
        assert_eq!(o.interval, "1s");
    }

    #[test]
    fn hyphen_values_reach_validation() {
        let Parsed::Run(o) = parse(["procnetmon2", "-p", "-5", "-t", "-3s"]) else {
            panic!("expected Run");
        };
        assert_eq!(o.pids.as_deref(), Some("-5"));
        assert_eq!(o.time.as_deref(), Some("-3s"));
    }

    #[test]
    fn unknown_flag_is_one_line() {
        let Parsed::Usage(m) = parse(["procnetmon2", "--bogus"]) else {
            panic!("expected Usage");
        };
        assert!(!m.contains('\n'), "{m}");
        assert!(m.contains("--bogus"), "{m}");
    }

    #[test]
    fn help_lists_examples_and_exit_codes() {
        let Parsed::Info(h) = parse(["procnetmon2", "--help"]) else {
            panic!("expected Info");
        };
        for needle in [
            "--pids",
            "--interface",
            "--json",
            "--time",
            "--aggregate",
            "--continuous",
            "--details",
            "--interval",
            "--view",
            "Exit status",
            // What happens with a command, on a terminal or not, with or without --view.
            "stdin a terminal",
            "stdin not a terminal",
            "on stderr",
            "Ctrl-] gives them back",
        ] {
            assert!(h.contains(needle), "help lacks {needle}");
        }
    }

    #[test]
    fn version_names_commit_and_kernel() {
        let Parsed::Info(v) = parse(["procnetmon2", "--version"]) else {
            panic!("expected Info");
        };
        assert_eq!(
            v.trim_end(),
            format!("procnetmon2 {}", crate::version::text())
        );
        assert!(v.contains(crate::version::MIN_KERNEL), "{v}");
    }

    #[test]
    fn replay_subcommand() {
        let Parsed::Replay(o) = parse([
            "procnetmon2",
            "replay",
            "/var/lib/procnetmon2",
            "--from",
            "3m ago",
            "--json",
        ]) else {
            panic!("expected Replay");
        };
        assert_eq!(o.dir, std::path::Path::new("/var/lib/procnetmon2"));
        assert_eq!(o.from.as_deref(), Some("3m ago"));
        assert!(o.json && o.top == 8);
        // Run flags do not mix with it; a directory must be named.
        assert!(matches!(
            parse(["procnetmon2", "replay", "d", "-p", "1"]),
            Parsed::Usage(_)
        ));
        assert!(matches!(parse(["procnetmon2", "replay"]), Parsed::Usage(_)));
        // Spawn mode still takes a command named "replay" after `--`.
        let Parsed::Run(o) = parse(["procnetmon2", "--", "replay"]) else {
            panic!("expected Run");
        };
        assert_eq!(o.command, ["replay"]);
    }

    #[test]
    fn completions_subcommand() {
        assert!(matches!(
            parse(["procnetmon2", "completions", "bash"]),
            Parsed::Completions(clap_complete::Shell::Bash)
        ));
        // Flags and the subcommand do not mix; a shell must be named.
        assert!(matches!(
            parse(["procnetmon2", "completions", "bash", "-p", "1"]),
            Parsed::Usage(_)
        ));
        assert!(matches!(
            parse(["procnetmon2", "completions"]),
            Parsed::Usage(_)
        ));
        assert!(matches!(
            parse(["procnetmon2", "completions", "tcsh"]),
            Parsed::Usage(_)
        ));
        // Spawn mode still takes a command named "completions" after `--`.
        let Parsed::Run(o) = parse(["procnetmon2", "--", "completions"]) else {
            panic!("expected Run");
        };
        assert_eq!(o.command, ["completions"]);
    }
}
