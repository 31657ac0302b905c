//! One run: resolve targets, load and attach, stamp existing sockets, then sample and report
//! until the window ends, every target is gone, or a signal arrives. Every exit path goes
//! through the end of [`run`], where dropping [`Probes`] detaches all programs.

use std::{
    fs::File,
    io::{IsTerminal as _, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use procnetmon2_common::sock::{SockOwner, proto_index};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    bpf::Probes,
    cgroup,
    config::Config,
    error::UsageError,
    model::{ProcessReport, Report, Row, Traffic},
    procs::{self, ProcIdentity},
    render,
    sampling::{Series, sum_traffic},
};

/// A target process and its slot in the kernel's per-target totals.
struct Target {
    slot: u32,
    ident: ProcIdentity,
    series: Series,
    exited: Option<Duration>,
    last: Traffic,
    connections: (u32, u32),
}

/// Where reports go.
struct Output {
    w: Box<dyn Write>,
    tty: bool,
}

impl Output {
    fn open(path: Option<&PathBuf>) -> anyhow::Result<Self> {
        Ok(match path {
            Some(p) => Self {
                w: Box::new(
                    File::create(p)
                        .with_context(|| format!("create output file {}", p.display()))?,
                ),
                tty: false,
            },
            None => {
                let out = std::io::stdout();
                let tty = out.is_terminal();
                Self {
                    w: Box::new(out),
                    tty,
                }
            }
        })
    }
}

/// Runs with `cfg` until done. Returns when the run ends normally or on a signal.
pub fn run(cfg: &Config) -> anyhow::Result<()> {
    crate::privileges::check()?;
    // Resolve every target before touching the kernel: bad input leaves nothing behind.
    let idents = cfg
        .pids
        .iter()
        .map(|&pid| procs::identify(pid).map_err(|e| UsageError::new(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mount = cgroup::find_cgroup2()?;
    let dirs = idents
        .iter()
        .map(|t| mount.dir_of_pid(t.pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let points = cgroup::attach_points(&dirs);
    if !cfg.interfaces.is_empty() {
        log::warn!("-i is not applied yet: counting all interfaces");
    }
    let mut output = Output::open(cfg.output.as_ref())?;

    let mut probes = Probes::load()?;
    for (slot, t) in idents.iter().enumerate() {
        probes.add_target_pid(t.pid, slot as u32)?;
    }
    let cgroups = points
        .iter()
        .map(|d| cgroup::open_dir(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Socket hooks first, then counters, then the scan: a socket created at any point is
    // stamped either by the hook or by the scan.
    for cg in &cgroups {
        probes.attach_sock_hooks(cg)?;
    }
    for cg in &cgroups {
        probes.attach_counters(cg)?;
    }
    for (slot, t) in idents.iter().enumerate() {
        stamp_existing(&mut probes, t, slot as u32);
    }

    let now = Instant::now();
    let mut targets = Vec::with_capacity(idents.len());
    for (slot, ident) in idents.into_iter().enumerate() {
        let slot = slot as u32;
        let base: Traffic = probes.totals(slot)?.into();
        targets.push(Target {
            slot,
            ident,
            series: Series::new(base, now),
            exited: None,
            last: base,
            connections: (0, 0),
        });
    }
    let agg_base = sum_traffic(targets.iter().map(|t| &t.last));
    let mut aggregate = Series::new(agg_base, now);
    let untracked_base = crate::model::Counters::from(probes.untracked()?);
    // Tests and scripts wait for this line (RUST_LOG=info): counting starts here.
    log::info!(
        "attached at {} cgroup(s) {points:?}; counting {} process(es)",
        points.len(),
        targets.len()
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sighup = signal(SignalKind::hangup())?;
        let mut ticker =
            tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let deadline = cfg.window.map(|w| tokio::time::Instant::now() + w);
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep_deadline);
        loop {
            let stop = tokio::select! {
                _ = ticker.tick() => None,
                () = &mut sleep_deadline => Some("window"),
                _ = sigint.recv() => Some("signal"),
                _ = sigterm.recv() => Some("signal"),
                _ = sighup.recv() => Some("signal"),
            };
            sample(&probes, &mut targets, &mut aggregate)?;
            let all_gone = targets.iter().all(|t| t.exited.is_some());
            let untracked = crate::model::Counters::from(probes.untracked()?).minus(untracked_base);
            match stop {
                None if all_gone && cfg.window.is_none() => {
                    log::info!("all targets have exited");
                    emit(cfg, &mut output, &targets, &aggregate, untracked, false)?;
                    break;
                }
                None => {
                    if cfg.continuous {
                        emit(cfg, &mut output, &targets, &aggregate, untracked, false)?;
                    }
                }
                Some(_) => {
                    // The window's report (also on Ctrl-C during a window: the part seen so far).
                    if cfg.window.is_some() {
                        emit(cfg, &mut output, &targets, &aggregate, untracked, true)?;
                    }
                    break;
                }
            }
        }
        anyhow::Ok(())
    })?;
    drop(probes); // detaches every program
    Ok(())
}

/// Stamps every inet socket `t` holds now with its owner, through `pidfd_getfd` copies that are
/// closed at once (holding one would delay the target's own close).
fn stamp_existing(probes: &mut Probes, t: &ProcIdentity, slot: u32) {
    let Ok(pidfd) = procs::PidFd::open(t.pid) else {
        return;
    };
    // The pidfd pins the process; check it is still the one we identified.
    if !t.is_alive() {
        return;
    }
    let fds = match procs::socket_fds(t.pid) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("cannot list sockets of {}: {e}", t.pid);
            return;
        }
    };
    let mut stamped = 0;
    for (fd, _inode) in fds {
        let Ok(copy) = pidfd.get_fd(fd) else { continue };
        let Ok(info) = procs::sock_info(&copy) else {
            continue;
        };
        if info.domain != libc::AF_INET && info.domain != libc::AF_INET6 {
            continue;
        }
        let owner = SockOwner {
            tgid: t.pid,
            slot,
            proto: proto_index(info.protocol as u32),
            family: info.domain as u8,
            _pad: [0; 6],
        };
        match probes.stamp_socket(&copy, owner) {
            Ok(()) => stamped += 1,
            Err(e) => log::warn!("socket {fd} of {}: {e:#}", t.pid),
        }
    }
    log::info!("process {}: {stamped} existing socket(s) stamped", t.pid);
}

/// Reads every target's totals and advances the rate series.
fn sample(probes: &Probes, targets: &mut [Target], aggregate: &mut Series) -> anyhow::Result<()> {
    let now = Instant::now();
    for t in targets.iter_mut() {
        let cur: Traffic = probes.totals(t.slot)?.into();
        t.series.update_at(now, cur);
        t.last = cur;
        if t.exited.is_none() {
            if t.ident.is_alive() {
                t.connections = procs::connection_counts(t.ident.pid);
            } else {
                t.exited = Some(t.ident.runtime());
                t.connections = (0, 0);
            }
        }
    }
    aggregate.update_at(now, sum_traffic(targets.iter().map(|t| &t.last)));
    Ok(())
}

fn row_of(series: &Series, connections: (u32, u32), is_final: bool) -> Row {
    let (rate_in, rate_out) = if is_final {
        series.average()
    } else {
        (series.rate_in, series.rate_out)
    };
    Row {
        counters: series.since_start().total(),
        rate_in,
        rate_out,
        peak_rate_in: series.peak_in,
        peak_rate_out: series.peak_out,
        tcp_connections: connections.0,
        udp_connections: connections.1,
    }
}

fn emit(
    cfg: &Config,
    out: &mut Output,
    targets: &[Target],
    aggregate: &Series,
    untracked: crate::model::Counters,
    is_final: bool,
) -> anyhow::Result<()> {
    let processes: Vec<ProcessReport> = targets
        .iter()
        .map(|t| ProcessReport {
            pid: t.ident.pid,
            name: t.ident.comm.clone(),
            runtime: t.exited.unwrap_or_else(|| t.ident.runtime()),
            exited: t.exited.is_some(),
            row: row_of(&t.series, t.connections, is_final),
            traffic: t.series.since_start(),
        })
        .collect();
    let aggregated = cfg.aggregate.then(|| {
        let conns = processes.iter().fold((0, 0), |(a, b), p| {
            (a + p.row.tcp_connections, b + p.row.udp_connections)
        });
        row_of(aggregate, conns, is_final)
    });
    let report = Report {
        timestamp: chrono::Local::now().fixed_offset(),
        processes,
        aggregated,
        untracked,
        is_final,
    };
    if cfg.json {
        render::json::write(&mut *out.w, &report)?;
    } else {
        render::table::write(&mut *out.w, &report, out.tty && cfg.continuous && !is_final)?;
    }
    Ok(())
}
