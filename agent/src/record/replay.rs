//! `procnetmon2 replay DIR` (`config::Mode::Replay`): the entry point ([`run`]) of its
//! validated arguments (`config::ReplayArgs`). Without flags on a terminal it opens the
//! interactive view at the recording's end; `--json` / `--no-tui` print the report a live
//! `-t` run over the window would have printed; `--format openmetrics|csv` export;
//! `--plot FILE.svg` draws; `--follow` keeps reading as the recording grows.

use std::{io::Write as _, time::Duration};

use anyhow::Context as _;

use super::{convert::report_of, reader::Recording};
pub use crate::config::{ReplayArgs, What, parse_time};
use crate::{error::UsageError, render::output::Output};

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
