//! One run, start to end: plan → set up → loop { next event → tick → feed metrics → decide →
//! report or stop }. Reports go to a [`Sink`]: the table or JSON (`render::output`), or the
//! interactive view, which also takes keys; quitting it is one more stop event. Every exit path leaves through the end of [`run`], where dropping the
//! [`Running`] set-up detaches every program, then moves processes back and removes
//! dedicated cgroups.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{
    config::Config,
    details::monotonic_ns,
    error::{self, UsageError},
    events::{Events, Signals},
    host::{cgroup, identity::MetadataRoots, lifecycle, privileges, procs::ProcFs},
    metrics::{Limits, MetricsRegistry, MetricsServer, ServerThread},
    model::Report,
    plan::{self, Plan},
    record,
    render::output::Output,
    session::{
        ReportKind,
        decide::{Decision, Event, Facts, decide},
        feed,
    },
    setup::{self, Env, Running},
    tui::{Tui, keys::Input},
};

/// How long a spawned command's cgroup gets to end after SIGTERM before `cgroup.kill`.
const COMMAND_GRACE: Duration = Duration::from_secs(2);

/// Runs with `cfg` until done. Returns the exit status: 0, or the spawned command's.
pub fn run(cfg: &Config) -> anyhow::Result<u8> {
    privileges::check()?;
    plan::check_flags(cfg)?;
    // Before any thread exists: a private cgroup2 mount may need unshare(CLONE_NEWNS).
    let env = open_env(cfg)?;
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
    let cleaned = lifecycle::cleanup_stale(&env.mount.mount_point)?;
    for c in &cleaned {
        if cfg.cleanup {
            eprintln!("procnetmon2: {}", c.line);
        } else {
            log::warn!("{}", c.line);
        }
    }
    if cfg.cleanup {
        // Something left behind (a process that still cannot go back) fails the clean-up.
        return Ok(u8::from(!cleaned.iter().all(|c| c.complete)));
    }
    let plan = Plan::build(cfg, setup::survey(cfg, &env)?)?;
    // With the view, the table is printed once, after it closes: never redrawn in place.
    let continuous = cfg.continuous && !cfg.tui;
    let output = Output::open(cfg.output.as_deref(), cfg.json, continuous)?;
    // Bound before anything is attached: a taken or bad address fails first.
    let bound = MetricsTask::bind(cfg)?;
    // Checked and locked before anything is attached, too.
    let record_dir = record::live::open_dir(cfg)?;
    let mut running = setup::apply(&plan, cfg, &env)?;
    let metrics = MetricsTask::start(cfg, bound)?;
    let mut recorder = record_dir.map(|d| record::live::start(cfg, d, &running.session));
    let mut sink = Sink {
        out: output,
        view: None,
    };
    let status = rt.block_on(main_loop(
        cfg,
        &mut running,
        &mut sink,
        signals,
        metrics,
        recorder.as_mut(),
    ));
    // The recording's last block and end record.
    drop(recorder);
    // The view (if open) gives the terminal back before the set-up is undone.
    drop(sink);
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
fn open_env(cfg: &Config) -> anyhow::Result<Env> {
    let proc = match &cfg.host_proc {
        Some(dir) => {
            anyhow::ensure!(
                dir.join("self").exists() || dir.join("1").exists(),
                UsageError::new(format!(
                    "--host-proc {}: not a /proc mount; give the directory where the host's /proc is mounted",
                    dir.display()
                ))
            );
            ProcFs::new(dir.clone())
        }
        None => ProcFs::default(),
    };
    // Runtime metadata (container names) of the host: under the parent of --host-proc DIR
    // when DIR is `<host root>/proc`, else this filesystem.
    let meta = match cfg.host_proc.as_deref() {
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
    cfg: &Config,
    run: &mut Running,
    sink: &mut Sink,
    signals: Signals,
    metrics: MetricsTask,
    mut recorder: Option<&mut record::live::Live>,
) -> anyhow::Result<u8> {
    let pidfd = run
        .command
        .as_mut()
        .and_then(setup::spawn::Command::take_pidfd);
    let mut events = Events::new(cfg.interval, cfg.window, pidfd, signals)?;
    if cfg.tui {
        sink.view = Some(Tui::open(cfg.interval, cfg.window)?);
        events.watch_terminal();
    }
    let mut status = 0;
    let mut feeder = feed::Feeder::default();
    loop {
        let mut event = events.next().await;
        if let Event::Input(input) = event {
            // A key only redraws the view (no tick: rates stay per interval), unless it quits.
            if !sink.input(input)? {
                continue;
            }
            event = Event::Quit;
        }
        match event {
            Event::CommandExited => status = run.reap_command()?,
            Event::Tick => run.follow_moves(),
            _ => {}
        }
        if event == Event::Tick {
            run.session
                .tick(Instant::now(), &mut run.probes, &mut run.host)?;
        } else {
            run.session
                .tick_partial(Instant::now(), &mut run.probes, &mut run.host)?;
        }
        let mut decision = decide(event, facts(cfg, run));
        if decision.stop && run.command.is_some() {
            // Stopping with the command not reaped. It may have exited already: the tick that
            // found every target gone and its pidfd were ready together, and the tick won.
            // Then its status is the run's; else end it, and count its last bytes.
            if let Some(exited) = run.stop_command()? {
                status = exited;
            }
            run.session
                .tick_partial(Instant::now(), &mut run.probes, &mut run.host)?;
        }
        if let Some(reg) = &metrics.registry {
            feeder.feed(reg, &run.session, &run.probes, &cfg.pids);
        }
        // `--record`: one frame per interval, whatever the report schedule (the report due
        // now, or one built for the recording alone).
        if let (None, Some(r)) = (decision.report, recorder.as_deref_mut()) {
            let clock = (Instant::now(), monotonic_ns());
            let report = run.session.snapshot(
                ReportKind::Interval,
                cfg.aggregate,
                clock,
                &mut run.probes,
                &run.host,
            )?;
            r.append(&report);
        }
        if let Some(kind) = decision.report {
            let clock = (Instant::now(), monotonic_ns());
            let report =
                run.session
                    .snapshot(kind, cfg.aggregate, clock, &mut run.probes, &run.host)?;
            if let Some(r) = recorder.as_deref_mut() {
                r.append(&report);
            }
            match sink.write(report, decision.stop, cfg.details) {
                Err(e) if error::is_broken_pipe(&e) => {
                    decision = decide(Event::OutputClosed, facts(cfg, run));
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
    Ok(status)
}

fn facts(cfg: &Config, run: &Running) -> Facts {
    Facts {
        window: cfg.window.is_some(),
        // The view shows every interval, whatever -t/-c say about printed reports.
        continuous: cfg.continuous || cfg.tui,
        daemon: cfg.metrics_addr.is_some(),
        all_gone: run.session.all_gone(),
    }
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

    /// Writes `report`. An open view shows it; a report that ends the run (`last`) closes
    /// the view and is printed as the plain table, so the final figures stay on screen
    /// (with connection rows only if `--details` asked for them).
    fn write(&mut self, mut report: Report, last: bool, details: bool) -> anyhow::Result<()> {
        if let Some(t) = &mut self.view {
            if !last {
                return t.show(report);
            }
            self.view = None;
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
    fn bind(cfg: &Config) -> anyhow::Result<Option<MetricsServer>> {
        let Some(addr) = cfg.metrics_addr else {
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
    fn start(cfg: &Config, bound: Option<MetricsServer>) -> anyhow::Result<Self> {
        let Some(server) = bound else {
            return Ok(Self {
                registry: None,
                server: None,
            });
        };
        let reg = MetricsRegistry::new(Limits {
            max_series: cfg.max_series,
            grace: cfg.series_grace,
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

impl Running {
    /// The command exited: reaps it (its exit status becomes the run's) and ends what it
    /// left running in its cgroup (part of it, and started by us).
    fn reap_command(&mut self) -> anyhow::Result<u8> {
        let Some(mut c) = self.command.take() else {
            return Ok(0);
        };
        let status = c.wait()?;
        if let Some(state) = &self.state {
            state.stop_cgroup(c.cgroup(), COMMAND_GRACE);
        }
        Ok(status)
    }

    /// The run stops with the command not reaped: returns its exit status if it had exited
    /// on its own; else (`-t` expiry, a signal) stops it, and its status is not the run's.
    /// Either way, what it left running in its cgroup is ended.
    fn stop_command(&mut self) -> anyhow::Result<Option<u8>> {
        let Some(mut c) = self.command.take() else {
            return Ok(None);
        };
        let exited = c.try_wait()?;
        if let Some(state) = &self.state {
            state.stop_cgroup(c.cgroup(), COMMAND_GRACE);
        }
        if exited.is_none() {
            let _ = c.wait();
        }
        Ok(exited)
    }
}
