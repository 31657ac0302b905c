//! `procnetmon2 replay DIR`: the entry point ([`run`]) and its validated arguments
//! ([`ReplayArgs`], from `cli::ReplayOpt`). Without flags on a terminal it opens the
//! interactive view at the recording's end; `--json` / `--no-tui` print the report a live
//! `-t` run over the window would have printed; `--format openmetrics|csv` export;
//! `--plot FILE.svg` draws; `--follow` keeps reading as the recording grows.

use std::{io::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use super::{convert::report_of, reader::Recording};
use crate::{cli::ReplayOpt, error::UsageError, render::output::Output};

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
        opt: &ReplayOpt,
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

fn fmt_ns(ns: i64) -> String {
    super::convert::timestamp(ns, 0).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Runs `replay`. Returns the exit status.
pub fn run(args: &ReplayArgs) -> anyhow::Result<u8> {
    let rec = Recording::open(&args.dir)?;
    for n in &rec.notices {
        log::warn!("{}: {n}", args.dir.display());
    }
    if args.follow {
        return follow(args, rec);
    }
    match &args.what {
        What::View => super::view::run(rec, args.at),
        What::Report { json } => {
            let Some(report) = super::window::summarize(&rec, args.from, args.to) else {
                let (a, b) = rec.span();
                return Err(UsageError::new(format!(
                    "no frame in that window; the recording runs from {} to {}",
                    fmt_ns(a),
                    fmt_ns(b)
                ))
                .into());
            };
            let mut out = Output::open(args.output.as_deref(), *json, false)?;
            out.write(&report)?;
            Ok(0)
        }
        What::OpenMetrics | What::Csv => {
            let mut w = writer(args)?;
            let r = if args.what == What::Csv {
                super::export::csv(&rec, args.from, args.to, &mut *w)
            } else {
                super::export::openmetrics(&rec, args.from, args.to, &mut *w)
            };
            r.and_then(|()| w.flush()).context("write the export")?;
            Ok(0)
        }
        What::Plot { file, top } => {
            let Some((series, span)) = super::plot::series(&rec, args.from, args.to, *top) else {
                return Err(UsageError::new("no frame in that window: nothing to draw").into());
            };
            let offset = chrono::Local::now().offset().local_minus_utc();
            let title = format!(
                "procnetmon2: {} busiest, {} to {}",
                series.len(),
                fmt_ns(span.0),
                fmt_ns(span.1)
            );
            std::fs::write(file, super::plot::svg(&series, span, offset, &title))
                .with_context(|| format!("--plot {}: cannot write it", file.display()))?;
            Ok(0)
        }
    }
}

fn writer(args: &ReplayArgs) -> anyhow::Result<Box<dyn std::io::Write>> {
    Ok(match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("-o {}: cannot create it", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    })
}

/// `--follow`: every frame from `--from` (default: the last one) on, as the recording
/// grows, until interrupted. Reports are the interval reports a live `-c` run prints.
fn follow(args: &ReplayArgs, rec: Recording) -> anyhow::Result<u8> {
    if args.what == What::View {
        return super::view::follow(args.dir.clone(), rec);
    }
    let interval = rec
        .segments
        .last()
        .map_or(Duration::from_secs(1), |s| {
            Duration::from_nanos(s.meta().interval_ns)
        })
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    let mut last = match args.from {
        Some(f) => f - 1,
        None => rec.span().1 - 1,
    };
    let mut out = Output::open(
        args.output.as_deref(),
        matches!(args.what, What::Report { json: true }),
        true,
    )?;
    let mut csv = (args.what == What::Csv).then(|| writer(args)).transpose()?;
    if let Some(w) = &mut csv {
        writeln!(w, "{}", super::export::CSV_HEADER)?;
    }
    let mut rec = Some(rec);
    loop {
        let r = match rec.take() {
            Some(r) => r,
            None => match Recording::open(&args.dir) {
                Ok(r) => r,
                // A segment being created or cut: try again next interval.
                Err(_) => {
                    std::thread::sleep(interval);
                    continue;
                }
            },
        };
        for (_, f) in r.frames(Some(last)) {
            if f.time_ns <= last || args.to.is_some_and(|t| f.time_ns > t) {
                continue;
            }
            last = f.time_ns;
            let report = report_of(&f);
            match &mut csv {
                Some(w) => {
                    super::export::csv_frame(&report, &mut **w)?;
                    w.flush()?;
                }
                None => out.write(&report)?,
            }
        }
        if args.to.is_some_and(|t| last >= t) {
            return Ok(0);
        }
        std::thread::sleep(interval);
    }
}
