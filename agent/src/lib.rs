//! procnetmon2: per-process network accounting with eBPF.
//!
//! Data flow: `cli` → `config` (the `Mode`) → `plan` (from a survey of `host`) → `setup`
//! (host and `kernel` changes) → `run`'s loop over `events`: `session::step` ticks (reading
//! `kernel` and `host`) and asks `session::decide` when to report and stop, `render` writes
//! the report (or `tui` draws it), `metrics` serves it. Only `kernel` uses aya. See
//! ARCHITECTURE.md.

pub mod classes;
pub mod cli;
pub mod config;
pub mod details;
pub mod dist;
pub mod dns;
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
#[cfg(test)]
mod test_alloc;
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
    let terminal = config::Terminal::detect();
    let mode = match cli::parse(std::env::args_os()) {
        cli::Parsed::Run(opt) => config::Mode::from_opt(&opt, host::procs::pid_max(), terminal),
        cli::Parsed::Replay(opt) => config::Mode::replay(&opt, chrono::Utc::now(), terminal),
        cli::Parsed::Info(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        cli::Parsed::Completions(shell) => {
            print!("{}", dist::completions(shell));
            return ExitCode::SUCCESS;
        }
        cli::Parsed::Usage(msg) => {
            eprintln!("procnetmon2: {msg}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mode = match mode {
        Ok(mode) => mode,
        Err(e) => {
            eprintln!("procnetmon2: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let (daemon, view) = match &mode {
        config::Mode::Watch(r) | config::Mode::Spawn(r) => (
            r.metrics.is_some(),
            r.reports.output == config::Output::View,
        ),
        config::Mode::Cleanup { .. } => (false, false),
        config::Mode::Replay(args) => (false, args.what == config::What::View),
    };
    init_logging(daemon, view);
    exit_status(run::run(&mode))
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
    // Log lines name processes, cgroups and interfaces, which anyone can name: the message
    // goes through `render::printable`, the escaping the table and the view use, so no
    // escape sequence in a name reaches the terminal from the log either.
    if structured {
        b.format(|f, r| {
            let msg = r
                .args()
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            let msg = render::printable(&msg);
            writeln!(
                f,
                "ts={} level={} msg=\"{msg}\"",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                r.level().as_str().to_lowercase()
            )
        });
    } else {
        b.format(|f, r| {
            let style = f.default_level_style(r.level());
            writeln!(
                f,
                "[{} {style}{:<5}{style:#}] {}",
                f.timestamp(),
                r.level(),
                render::printable(&r.args().to_string())
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
    // An error may quote a name or a path (anyone can put an escape sequence in one).
    render::printable(&parts.join(": ")).into_owned()
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
        // A name quoted in an error is shown escaped, as in the table and the view.
        let e = anyhow::anyhow!("process 7 (\x1b]0;PWNED\x07) is gone");
        assert_eq!(
            super::one_line(&e),
            "process 7 (\\u{1b}]0;PWNED\\u{7}) is gone"
        );
    }
}
