//! The story of a run, in one screen: dispatch on the [`Mode`]; a counting run is plan → set
//! up → loop { next event → step (tick, decide) → feed metrics → report } → undo. Reports go
//! to a [`Sink`]: the table or JSON (`render::output`), or the interactive view, which also
//! takes keys; quitting it is one more stop event. Every exit path of a counting run leaves
//! through the end of [`watch`], where dropping the [`Running`] set-up detaches every
//! program, then processes move back and dedicated cgroups are removed.

use std::time::Instant;

use anyhow::Context as _;

use crate::{
    config::{CommandIo, Metrics, Mode, Output as OutputKind, Reports, Run, Stream},
    details::monotonic_ns,
    error::{self, UsageError},
    events::{Events, Next, Signals},
    host::{cgroup, identity::MetadataRoots, lifecycle, privileges, procs::ProcFs},
    metrics::{Limits, MetricsRegistry, MetricsServer, ServerThread},
    model::Report,
    plan::{Plan, TargetKind},
    record,
    render::output::Output,
    session::{
        ReportKind,
        decide::{Decision, Event},
        feed,
    },
    setup::{self, Env, Running},
    tui::{
        Tui,
        keys::Input,
        pane::{self, Pane},
    },
};

/// Runs `mode` until done. Returns the exit status: 0, or the spawned command's.
pub fn run(mode: &Mode) -> anyhow::Result<u8> {
    match mode {
        Mode::Watch(run) | Mode::Spawn(run) => watch(run),
        Mode::Cleanup { host_proc } => cleanup(host_proc.as_deref()),
        Mode::Replay(args) => record::replay::run(args),
    }
}

/// `--cleanup`: undoes what runs killed with SIGKILL left behind. Fails when something is
/// still left (a process that still cannot go back).
fn cleanup(host_proc: Option<&std::path::Path>) -> anyhow::Result<u8> {
    privileges::check()?;
    let env = open_env(host_proc)?;
    let cleaned = lifecycle::cleanup_stale(&env.mount.mount_point)?;
    for c in &cleaned {
        eprintln!("procnetmon2: {}", c.line);
    }
    Ok(u8::from(!cleaned.iter().all(|c| c.complete)))
}

/// A counting run (watch targets, or spawn a command).
fn watch(run: &Run) -> anyhow::Result<u8> {
    privileges::check()?;
    // Before any thread exists: a private cgroup2 mount may need unshare(CLONE_NEWNS).
    let env = open_env(run.host_proc.as_deref())?;
    // A current-thread runtime starts no thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()?;
    // Signals are caught from here on, before anything on the host changes.
    let signals = {
        let _in_runtime = rt.enter();
        Signals::install()?
    };
    // Leftovers of runs killed with SIGKILL are undone before anything else.
    for c in lifecycle::cleanup_stale(&env.mount.mount_point)? {
        if c.retired {
            // Nothing was changed on the host: only a record with nothing left went.
            log::info!("{}", c.line);
        } else {
            log::warn!("{}", c.line);
        }
    }
    let plan = Plan::build(run, setup::survey(run, &env)?)?;
    let output = if run.reports.file.is_none() && run.reports.stream == Stream::Stderr {
        Output::stderr(run.reports.output.json())
    } else {
        Output::open(
            run.reports.file.as_deref(),
            run.reports.output.json(),
            run.reports.output == OutputKind::LiveTable,
        )?
    }
    .with_health_columns(run.counting.details);
    // Bound before anything is attached: a taken or bad address fails first.
    let bound = MetricsTask::bind(run.metrics)?;
    // Checked and locked before anything is attached, too.
    let record_dir = record::live::open_dir(run.record.as_ref())?;
    let mut running = setup::apply(&plan, &env)?;
    let metrics = MetricsTask::start(run.metrics, plan.series_grace, bound)?;
    let mut recorder = record_dir.map(|d| record::live::start(run, d, &running.runner.session));
    let mut sink = Sink {
        out: output,
        view: None,
    };
    let status = rt.block_on(main_loop(
        &plan,
        &run.reports,
        &mut running,
        &mut sink,
        signals,
        metrics,
        recorder.as_mut(),
    ));
    // The recording's last block and end record.
    drop(recorder);
    // The view (if open) gives the terminal back before the set-up is undone.
    sink.close_view();
    let state = running.state.take();
    drop(running); // detaches every program
    // Then processes move back and dedicated cgroups go. One that cannot go back stays, alive,
    // in its kept cgroup, recorded for --cleanup, and the run fails naming it.
    let undone = state.map_or(Ok(()), lifecycle::RunState::finish);
    match (status, undone) {
        (Ok(status), Ok(())) => Ok(status),
        (Ok(_), Err(e)) | (Err(e), Ok(())) => Err(e),
        (Err(e), Err(u)) => {
            log::error!("{u:#}");
            Err(e)
        }
    }
}

/// Where /proc and the cgroup v2 tree are, and where runtimes keep container names.
fn open_env(host_proc: Option<&std::path::Path>) -> anyhow::Result<Env> {
    let proc = match host_proc {
        Some(dir) => ProcFs::host(dir)?,
        None => ProcFs::default(),
    };
    // Runtime metadata (container names) of the host: under the parent of --host-proc DIR
    // when DIR is `<host root>/proc`, else this filesystem.
    let meta = match host_proc {
        Some(d)
            if d.ends_with("proc")
                && d.parent().is_some_and(|p| p != std::path::Path::new("/")) =>
        {
            MetadataRoots::under(d.parent().unwrap_or(d))
        }
        _ => MetadataRoots::default(),
    };
    Ok(Env {
        proc,
        mount: cgroup::find_or_mount_cgroup2()?,
        meta,
    })
}

/// The loop of a set-up run. Returns the exit status.
async fn main_loop(
    plan: &Plan,
    reports: &Reports,
    run: &mut Running,
    sink: &mut Sink,
    signals: Signals,
    metrics: MetricsTask,
    mut recorder: Option<&mut record::live::Live>,
) -> anyhow::Result<u8> {
    let s = plan.schedule;
    let mut events = Events::new(s.interval, s.window, run.pidfd.take(), signals)?;
    if let Some(fd) = run.runner.programs.moves_fd() {
        events.watch_moves(fd)?;
    }
    if plan.command_io() == CommandIo::Foreground {
        events.watch_stops()?;
    }
    if reports.output == OutputKind::View {
        let pane = match (run.pty.take(), plan.command()) {
            (Some(master), Some((_, argv, _))) => {
                let keys = master.try_clone().context("dup the pseudo-terminal")?;
                events.watch_pane(master)?;
                Some(Pane::new(argv, pane::pty_size_now(), Some(keys)))
            }
            _ => None,
        };
        sink.view = Some(Tui::open(s.interval, s.window, pane)?);
        events.watch_terminal();
    }
    let named = named_pids(plan);
    let mut feeder = feed::Feeder::default();
    let runner = &mut run.runner;
    loop {
        let event = match events.next().await {
            Next::Event(e) => e,
            // A key only redraws the view (no tick: rates stay per interval), unless it quits.
            Next::Input(i) if !sink.input(i)? => continue,
            Next::Input(_) => Event::Quit,
            // The command in the view's pane wrote something: only the pane changes.
            Next::Output(bytes) => {
                sink.command_output(&bytes)?;
                continue;
            }
        };
        let mut decision = runner.step(event, Instant::now())?;
        if let Some(reg) = &metrics.registry {
            feeder.feed(reg, &runner.session, &*runner.programs, &named);
        }
        // `--record`: one frame per interval and at the end, whatever the report schedule
        // (the report due now, or one built for the recording alone).
        if let (None, Some(r)) = (decision.report, recorder.as_deref_mut())
            && (event == Event::Tick || decision.stop)
        {
            let clock = (Instant::now(), monotonic_ns());
            r.append(&runner.snapshot(ReportKind::Interval, reports.aggregate, clock)?);
        }
        if let Some(kind) = decision.report {
            let clock = (Instant::now(), monotonic_ns());
            let report = runner.snapshot(kind, reports.aggregate, clock)?;
            if let Some(r) = recorder.as_deref_mut() {
                r.append(&report);
            }
            match sink.write(report, decision.stop, plan.counting.details) {
                Err(e) if error::is_broken_pipe(&e) => {
                    decision = runner.step(Event::OutputClosed, Instant::now())?;
                }
                r => r?,
            }
        }
        let Decision { stop, .. } = decision;
        if stop {
            break;
        }
    }
    // Stop the metrics server (it drains in-flight scrapes) before the programs detach.
    metrics.stop()?;
    Ok(runner.status())
}

/// The PIDs named with `-p` (their `procnetmon_target_info` series).
fn named_pids(plan: &Plan) -> Vec<u32> {
    plan.targets
        .iter()
        .filter_map(|t| match &t.kind {
            TargetKind::Process { ident, .. } => Some(ident.pid),
            _ => None,
        })
        .collect()
}

/// Where reports go: the table or JSON lines (stdout or `-o`), or the interactive view while
/// it is open.
struct Sink {
    out: Output,
    view: Option<Tui>,
}

impl Sink {
    /// A key or resize for the view; true when it asks to quit.
    fn input(&mut self, input: Input) -> anyhow::Result<bool> {
        match &mut self.view {
            Some(t) => t.input(input),
            None => Ok(false),
        }
    }

    /// What the command in the view's pane wrote.
    fn command_output(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.view {
            Some(t) => t.command_output(bytes),
            None => Ok(()),
        }
    }

    /// Closes the view, if open: the terminal is given back, and the last lines of the
    /// command's pane are printed, so what it said last (an error, a summary) stays on
    /// screen.
    fn close_view(&mut self) {
        use std::io::Write as _;
        let Some(t) = self.view.take() else {
            return;
        };
        let lines = t.close();
        let mut out = std::io::stdout().lock();
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    }

    /// Writes `report`. An open view shows it; a report that ends the run (`last`) closes
    /// the view and is printed as the plain table, so the final figures stay on screen
    /// (with connection rows only if `--details` asked for them).
    fn write(&mut self, mut report: Report, last: bool, details: bool) -> anyhow::Result<()> {
        if let Some(t) = &mut self.view {
            if !last {
                return t.show(report);
            }
            self.close_view();
            if !details {
                for p in &mut report.processes {
                    p.connections = None;
                }
            }
        }
        self.out.write(&report)
    }
}

/// `--metrics-addr`: the OpenMetrics server, on a thread of its own (a slow tick never delays
/// `/healthz`).
struct MetricsTask {
    registry: Option<MetricsRegistry>,
    server: Option<ServerThread>,
}

impl MetricsTask {
    /// Binds `--metrics-addr` (before anything is attached: a taken or bad address fails
    /// first). Nothing is served yet: connections wait in the listen backlog.
    fn bind(metrics: Option<Metrics>) -> anyhow::Result<Option<MetricsServer>> {
        let Some(Metrics { addr, .. }) = metrics else {
            return Ok(None);
        };
        MetricsServer::bind_std(addr)
            .map_err(|e| {
                UsageError::new(format!(
                    "--metrics-addr {addr}: cannot listen there ({}); pick a free port or an address of this host",
                    e.root_cause()
                ))
                .into()
            })
            .map(Some)
    }

    /// Starts serving once counting has started, so a scraper (or a readiness probe) that
    /// gets an answer knows the programs are attached.
    fn start(
        metrics: Option<Metrics>,
        grace: std::time::Duration,
        bound: Option<MetricsServer>,
    ) -> anyhow::Result<Self> {
        let (Some(m), Some(server)) = (metrics, bound) else {
            return Ok(Self {
                registry: None,
                server: None,
            });
        };
        let reg = MetricsRegistry::new(Limits {
            max_series: m.max_series,
            grace,
        });
        let server = server.spawn(reg.clone())?;
        Ok(Self {
            registry: Some(reg),
            server: Some(server),
        })
    }

    fn stop(self) -> anyhow::Result<()> {
        if let Some(server) = self.server {
            server.stop().context("metrics server")?;
        }
        Ok(())
    }
}
