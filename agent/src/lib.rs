//! procnetmon2: per-process network accounting with eBPF.
//!
//! Data flow: `cli` → `config` → `plan` (from a survey of `host`) → `setup` (host and
//! `kernel` changes) → `run`'s loop over `events`: `session` ticks (reading `kernel` and
//! `host`), `session::decide` says when to report and stop, `render` writes the report,
//! `metrics` serves it. Only `kernel` uses aya; only `render` writes reports. See
//! ARCHITECTURE.md.

pub mod classes;
pub mod cli;
pub mod config;
pub mod details;
pub mod dist;
pub mod error;
pub mod events;
pub mod host;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod plan;
#[cfg(test)]
mod proptests;
pub mod record;
pub mod render;
pub mod run;
pub mod sampling;
pub mod session;
pub mod setup;
pub mod tui;
pub mod version;

use std::process::ExitCode;

/// Exit status for a usage error.
const EXIT_USAGE: u8 = 2;
/// Exit status when the command of spawn mode cannot be started (as shells use).
const EXIT_SPAWN: u8 = 127;

/// Parses the command line, runs, and maps the outcome to the exit status:
/// 0 success, 1 runtime error, 2 usage error. Errors are one line on stderr.
pub fn run_cli() -> ExitCode {
    let opt = match cli::parse(std::env::args_os()) {
        cli::Parsed::Run(opt) => opt,
        cli::Parsed::Replay(opt) => return replay_cli(&opt),
        cli::Parsed::Info(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        cli::Parsed::Usage(msg) => {
            eprintln!("procnetmon2: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    let mut cfg = match config::Config::from_opt(&opt, pid_max) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("procnetmon2: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    {
        use std::io::IsTerminal as _;
        cfg.tui = cfg.wants_tui(std::io::stdin().is_terminal() && std::io::stdout().is_terminal());
    }
    init_logging(cfg.metrics_addr.is_some(), cfg.tui);
    exit_status(run::run(&cfg))
}

/// `procnetmon2 replay DIR`.
fn replay_cli(opt: &cli::ReplayOpt) -> ExitCode {
    use std::io::IsTerminal as _;
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let args = match record::replay::ReplayArgs::from_opt(opt, chrono::Utc::now(), terminal) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("procnetmon2: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(false, args.what == record::replay::What::View);
    exit_status(record::replay::run(&args))
}

/// The exit status of a run's outcome; errors are one line on stderr.
fn exit_status(outcome: anyhow::Result<u8>) -> ExitCode {
    match outcome {
        Ok(status) => ExitCode::from(status),
        Err(e) if error::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<error::UsageError>().is_some() => {
            eprintln!("procnetmon2: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) if e.downcast_ref::<error::SpawnError>().is_some() => {
            eprintln!("procnetmon2: {e}");
            ExitCode::from(EXIT_SPAWN)
        }
        Err(e) => {
            // One line: each cause up to its first newline (a verifier log can run to
            // thousands of lines; RUST_LOG=debug prints it whole).
            log::debug!("{e:?}");
            eprintln!("procnetmon2: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Logs on stderr (`RUST_LOG`, default `warn`). As a metrics daemon, one logfmt record per
/// line (`ts=… level=… msg="…"`), which log collectors parse without configuration.
/// With the interactive view, records are held while it is open and printed when the
/// terminal is back (`tui::terminal::LogSink`).
fn init_logging(structured: bool, tui: bool) {
    use std::io::Write as _;
    let mut b = env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or(if structured { "info" } else { "warn" }),
    );
    b.format_target(false);
    if tui {
        b.target(env_logger::Target::Pipe(Box::new(tui::terminal::LogSink)));
    }
    if structured {
        b.format(|f, r| {
            let msg = r
                .args()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            writeln!(
                f,
                "ts={} level={} msg=\"{msg}\"",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                r.level().as_str().to_lowercase()
            )
        });
    }
    b.init();
}

/// `err` and its causes on one line, each cut at its first newline.
fn one_line(err: &anyhow::Error) -> String {
    let parts: Vec<String> = err
        .chain()
        .map(|c| {
            c.to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end_matches(':')
                .trim()
                .to_owned()
        })
        .filter(|p| !p.is_empty())
        .collect();
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_print_on_one_line() {
        let e = anyhow::anyhow!("verifier said:\n0: r1 = 0\n1: exit")
            .context("load pnm_ingress (needs Linux >= 5.12)");
        assert_eq!(
            super::one_line(&e),
            "load pnm_ingress (needs Linux >= 5.12): verifier said"
        );
    }
}
