//! One run: resolve targets, load and attach, stamp existing sockets, then sample and report
//! until the window ends, every target is gone, or a signal arrives. Every exit path goes
//! through the end of [`run`], where dropping [`Probes`] detaches all programs.

use std::{
    collections::HashMap,
    fs::File,
    io::{IsTerminal as _, Write},
    os::fd::RawFd,
    path::PathBuf,
    time::{Duration, Instant},
};

use std::os::unix::process::ExitStatusExt as _;

use anyhow::Context as _;
use procnetmon2_common::{
    conn::{ConnRecord, TCP_ESTABLISHED},
    knobs::IfaceKey,
    sock::{
        COUNT_ACTIVE, COUNT_NOT_YET, FLAG_ESTABLISHED, FLAG_IFACE_OK, FLAG_UDP_ACTIVE, PROTO_TCP,
        PROTO_UDP, SockOwner, SockStats, proto_index,
    },
};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::Config,
    details::{DetailTracker, monotonic_ns},
    error::{SpawnError, UsageError},
    host::{
        cgroup,
        identity::MetadataRoots,
        lifecycle::{self, RunState},
        netns::{self, NetnsLinks},
        procs::{self, ProcIdentity},
        workloads::{CgroupInfo, CgroupNames},
    },
    kernel::probes::{Knobs, Probes},
    metrics::{
        Limits, MapFill, MetricsRegistry, MetricsServer, SelfStats, TargetInfo, WorkloadKey,
    },
    model::{Counters, ProcessReport, Report, Row, Traffic, WorkloadReport},
    render,
    sampling::{Series, sum_traffic},
};

/// A target process and its slot in the kernel's per-target maps.
struct Target {
    slot: u32,
    ident: ProcIdentity,
    series: Series,
    exited: Option<Duration>,
    last: Traffic,
    /// Connections that predate the run, counted by the agent (tcp, udp); the kernel's gauge
    /// takes them out when they close.
    preexisting: (i64, i64),
    connections: (u32, u32),
    /// With `-i`: the chosen interfaces as last resolved in the target's namespace.
    ifaces: HashMap<String, IfaceKey>,
    /// Container identity of a process target.
    container: Option<crate::host::identity::ContainerIdentity>,
    /// PID in its own pid namespace.
    nspid: Option<u32>,
    /// A whole-cgroup target (`--cgroup`, `--container`): its directory and names.
    cgroup: Option<(PathBuf, CgroupInfo)>,
    /// The workload a process target belongs to (systemd unit or cgroup path), for metrics.
    unit: String,
}

impl Target {
    fn alive(&self) -> bool {
        match &self.cgroup {
            Some((dir, _)) => dir.exists(),
            None => self.ident.is_alive(),
        }
    }
}

/// A node-wide workload (`--all`).
struct AllWorkload {
    info: CgroupInfo,
    series: Series,
    ids: Vec<u64>,
    exited: bool,
}

/// A socket that predates the run, remembered so `--details` can refresh its TCP_INFO.
struct OldSocket {
    pid: u32,
    fd: RawFd,
    cookie: u64,
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

/// Resolves `-i` names in `pid`'s namespace; an unknown name is a usage error that lists the
/// namespace's interfaces.
fn resolve_ifaces(pid: u32, names: &[String]) -> anyhow::Result<HashMap<String, IfaceKey>> {
    let links = netns::links_of(pid)?;
    let mut out = HashMap::new();
    for n in names {
        let ifindex = links.index_of(n).ok_or_else(|| {
            UsageError::new(format!(
                "-i: no interface '{n}' in the network namespace of process {pid} (it has: {}); name one of those",
                links.names()
            ))
        })?;
        out.insert(
            n.clone(),
            IfaceKey {
                netns_cookie: links.cookie,
                ifindex,
                _pad: 0,
            },
        );
    }
    Ok(out)
}

/// The command of spawn mode, once started.
struct Spawned {
    child: std::process::Child,
    pidfd: tokio::io::unix::AsyncFd<procs::PidFd>,
    cgroup: PathBuf,
}

/// Starts `argv` in cgroup `cg`: the child moves itself there before it executes, so no
/// socket of the command is ever created elsewhere.
fn spawn_in(argv: &[String], cg: &std::path::Path) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let procs_file = std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_encoded_bytes())
        .context("cgroup path")?;
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    cmd.spawn().map_err(|e| {
        SpawnError(format!(
            "cannot run '{}': {e}; check the command name and PATH",
            argv[0]
        ))
        .into()
    })
}

/// Runs with `cfg` until done. Returns the exit status: 0, or the spawned command's.
pub fn run(cfg: &Config) -> anyhow::Result<u8> {
    crate::host::privileges::check()?;
    if let Some(dir) = &cfg.host_proc {
        anyhow::ensure!(
            dir.join("self").exists() || dir.join("1").exists(),
            UsageError::new(format!(
                "--host-proc {}: not a /proc mount; give the directory where the host's /proc is mounted",
                dir.display()
            ))
        );
        procs::set_proc_root(dir.clone());
    }
    // Runtime metadata (container names) of the host: under the parent of --host-proc DIR
    // when DIR is `<host root>/proc`, else this filesystem.
    let meta_roots = match cfg.host_proc.as_deref() {
        Some(d)
            if d.ends_with("proc")
                && d.parent().is_some_and(|p| p != std::path::Path::new("/")) =>
        {
            MetadataRoots::under(d.parent().unwrap_or(d))
        }
        _ => MetadataRoots::default(),
    };
    // Before any thread exists: a private cgroup2 mount may need unshare(CLONE_NEWNS).
    let mount = cgroup::find_or_mount_cgroup2()?;
    // Signals are caught from here on (before anything on the host changes): a SIGTERM during
    // set-up waits for the loop, which cleans up, instead of killing the process half-way.
    // A current-thread runtime starts no thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .enable_io()
        .build()?;
    let (mut sigint, mut sigterm, mut sighup) = {
        let _in_runtime = rt.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    // Leftovers of runs killed with SIGKILL are undone before anything else.
    for line in lifecycle::cleanup_stale(&mount.mount_point)? {
        if cfg.cleanup {
            eprintln!("procnetmon2: {line}");
        } else {
            log::warn!("{line}");
        }
    }
    if cfg.cleanup {
        return Ok(0);
    }
    // Resolve every target before touching the kernel: bad input leaves nothing behind.
    let idents = cfg
        .pids
        .iter()
        .map(|&pid| procs::identify(pid).map_err(|e| UsageError::new(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let dirs = idents
        .iter()
        .map(|t| mount.dir_of_pid(t.pid))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ifaces = idents
        .iter()
        .map(|t| {
            if cfg.interfaces.is_empty() {
                Ok(HashMap::new())
            } else {
                resolve_ifaces(t.pid, &cfg.interfaces)
            }
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Whole-cgroup targets: --cgroup paths and --container ids.
    let mut cgroup_dirs: Vec<PathBuf> = Vec::new();
    for p in &cfg.cgroups {
        cgroup_dirs.push(
            mount
                .resolve_target(p)
                .map_err(|e| UsageError::new(format!("{e:#}")))?,
        );
    }
    for id in &cfg.containers {
        cgroup_dirs.push(
            mount
                .find_container(id)
                .map_err(|e| UsageError::new(format!("{e:#}")))?,
        );
    }
    cgroup_dirs.dedup();
    let mut output = Output::open(cfg.output.as_ref())?;
    let spawn_mode = !cfg.command.is_empty();

    // Host changes (dedicated cgroups, moved processes) are recorded and undone on drop.
    let mut state = (cfg.isolate || spawn_mode)
        .then(|| RunState::create(&mount))
        .transpose()?;
    let mut attach_dirs: Vec<PathBuf> = dirs.iter().map(|d| cgroup::attach_dir_for(d)).collect();
    attach_dirs.extend(cgroup_dirs.iter().cloned());
    if cfg.all {
        // Node-wide: once at the root, where every socket of the host passes.
        attach_dirs.insert(0, mount.mount_point.clone());
    }
    let mut points = cgroup::attach_points(&attach_dirs);
    let spawn_cg = if spawn_mode {
        let own = mount.dir_of_pid(std::process::id())?;
        let cg = own.join(format!(
            "{}spawn-{}",
            lifecycle::CGROUP_PREFIX,
            std::process::id()
        ));
        state
            .as_mut()
            .context("spawn state")?
            .create_cgroup(&cg)
            .with_context(|| {
                format!(
                    "cannot create a cgroup for the command under {}",
                    own.display()
                )
            })?;
        points = vec![cg.clone()];
        Some(cg)
    } else {
        None
    };

    let knobs = Knobs {
        details: cfg.details,
        iface_filter: !cfg.interfaces.is_empty(),
        children: cfg.children && !spawn_mode,
        cgroup_targets: spawn_mode || !cgroup_dirs.is_empty(),
        all: cfg.all,
    };
    let mut probes = Probes::load(knobs)?;
    for (slot, t) in idents.iter().enumerate() {
        probes.add_target_pid(t.pid, slot as u32)?;
    }
    // Children that already exist join their target too.
    let kids = if knobs.children {
        procs::descendants(&cfg.pids)
    } else {
        Vec::new()
    };
    for (root, kid) in &kids {
        if let Some(slot) = cfg.pids.iter().position(|p| p == root) {
            probes.add_target_pid(*kid, slot as u32)?;
        }
    }
    if let Some(cg) = &spawn_cg {
        use std::os::unix::fs::MetadataExt as _;
        let id = std::fs::metadata(cg)
            .with_context(|| format!("stat {}", cg.display()))?
            .ino();
        probes.add_cgroup_target(id, 0)?;
    }
    // Cgroup targets take the slots after the processes.
    let first_cgroup_slot = idents.len() as u32;
    for (i, dir) in cgroup_dirs.iter().enumerate() {
        probes.add_cgroup_target(cgroup::cgroup_id(dir)?, first_cgroup_slot + i as u32)?;
    }
    for key in ifaces.iter().flat_map(HashMap::values) {
        probes.allow_iface(*key)?;
    }
    let cgroups = points
        .iter()
        .map(|d| cgroup::open_dir(d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Socket hooks first, then counters, then moves and the scan: a socket created at any
    // point is stamped either by a hook or by the scan.
    for cg in &cgroups {
        probes.attach_sock_hooks(cg)?;
    }
    for cg in &cgroups {
        probes.attach_counters(cg)?;
    }
    if cfg.isolate
        && let Some(st) = state.as_mut()
    {
        // Attached at the original cgroups, which contain the dedicated ones: sockets made
        // before and after the move are all covered, and none is counted twice.
        for (t, from) in idents.iter().zip(&dirs) {
            let to = st.isolate(t, from)?;
            log::info!("process {} moved to {}", t.pid, to.display());
        }
    }
    let mut spawned = None;
    let targets_len_before_spawn = idents.len();
    let mut idents = idents;
    let mut ifaces = ifaces;
    if let (Some(cg), true) = (&spawn_cg, spawn_mode) {
        let child = spawn_in(&cfg.command, cg)?;
        let pid = child.id();
        let pidfd = procs::PidFd::open(pid).context("pidfd_open for the command")?;
        idents.push(procs::identify(pid).unwrap_or(ProcIdentity {
            pid,
            comm: cfg.command[0].clone(),
            start_ticks: 0,
        }));
        ifaces.push(HashMap::new());
        spawned = Some((child, pidfd, cg.clone()));
    }
    let mut old_sockets = Vec::new();
    let mut targets = Vec::with_capacity(idents.len());
    for (slot, (ident, ifaces)) in idents.into_iter().zip(ifaces).enumerate() {
        let slot = slot as u32;
        let mut preexisting = stamp_existing(&mut probes, &ident, slot, knobs, &mut old_sockets);
        for (root, kid) in &kids {
            if *root == ident.pid
                && let Ok(kid_ident) = procs::identify(*kid)
            {
                let (t, u) = stamp_existing(&mut probes, &kid_ident, slot, knobs, &mut old_sockets);
                preexisting = (preexisting.0 + t, preexisting.1 + u);
            }
        }
        // Its cgroup, read once: container identity and workload name both come from it.
        let cg_path = procs::cgroup_path(ident.pid);
        let container = cg_path
            .as_deref()
            .and_then(crate::host::identity::parse_cgroup_path)
            .map(|mut c| {
                crate::host::identity::enrich(&mut c, &meta_roots);
                c
            });
        let nspid = procs::nspid(ident.pid);
        let unit = cg_path
            .as_deref()
            .map_or_else(String::new, crate::host::identity::workload_name);
        targets.push(Target {
            unit,
            slot,
            ident,
            series: Series::new(Traffic::default(), Instant::now()),
            exited: None,
            last: Traffic::default(),
            preexisting,
            connections: (0, 0),
            ifaces,
            container,
            nspid,
            cgroup: None,
        });
    }
    for (i, dir) in cgroup_dirs.iter().enumerate() {
        let slot = first_cgroup_slot + i as u32;
        let info = crate::host::workloads::describe(&mount, dir, &meta_roots);
        let mut preexisting = (0, 0);
        for pid in cgroup::procs_in_subtree(dir) {
            if let Ok(ident) = procs::identify(pid) {
                let (t, u) = stamp_existing(&mut probes, &ident, slot, knobs, &mut old_sockets);
                preexisting = (preexisting.0 + t, preexisting.1 + u);
            }
        }
        targets.push(Target {
            unit: info.workload.clone(),
            slot,
            ident: ProcIdentity {
                pid: 0,
                comm: info.workload.clone(),
                start_ticks: 0,
            },
            series: Series::new(Traffic::default(), Instant::now()),
            exited: None,
            last: Traffic::default(),
            preexisting,
            connections: (0, 0),
            ifaces: HashMap::new(),
            container: None,
            nspid: None,
            cgroup: Some((dir.clone(), info)),
        });
    }
    // Counting starts now: baselines. A spawned command is counted from its first
    // instruction: its slot was empty before it started, so its baseline is zero.
    let now = Instant::now();
    for t in &mut targets {
        let spawned_slot = spawn_mode && t.slot as usize == targets_len_before_spawn;
        t.last = if spawned_slot {
            Traffic::default()
        } else {
            probes.totals(t.slot)?.into()
        };
        t.series = Series::new(t.last, now);
    }
    let mut aggregate = Series::new(sum_traffic(targets.iter().map(|t| &t.last)), now);
    let untracked_base = Counters::from(probes.untracked()?);
    let events_base = probes.untracked_events()?;
    let mut detail_tracker = DetailTracker::default();
    // --all: counters at the start, per (cgroup, protocol), so reports show the run's traffic.
    let all_base: HashMap<(u64, u32), Counters> = if cfg.all {
        probes
            .cgroup_totals()
            .into_iter()
            .map(|(k, c)| ((k.cgroup_id, k.proto), c.into()))
            .collect()
    } else {
        HashMap::new()
    };
    let mut all_workloads: HashMap<String, AllWorkload> = HashMap::new();
    let run_start = Instant::now();
    let mut names = CgroupNames::new(mount.clone(), meta_roots.clone());
    // Tests and scripts wait for this line (RUST_LOG=info): counting starts here.
    log::info!(
        "attached at {} cgroup(s) {points:?}; counting {} process(es)",
        points.len(),
        targets.len()
    );

    let status = rt.block_on(async {
        let mut spawned = match spawned {
            Some((child, pidfd, cgroup)) => {
                // SAFETY: `pidfd` is owned by the AsyncFd and stays open until it is dropped.
                let pidfd = unsafe { tokio::io::unix::AsyncFd::register(pidfd) }
                    .map_err(|e| anyhow::anyhow!("watch the command's pidfd: {e}"))?;
                Some(Spawned {
                    child,
                    pidfd,
                    cgroup,
                })
            }
            None => None,
        };
        // --metrics-addr: the OpenMetrics server runs beside the sampling loop.
        let registry = cfg.metrics_addr.map(|_| {
            MetricsRegistry::new(Limits {
                max_series: cfg.max_series,
                grace: cfg.series_grace,
            })
        });
        let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = match (cfg.metrics_addr, &registry) {
            (Some(addr), Some(reg)) => {
                let srv = MetricsServer::bind(addr)
                    .await
                    .with_context(|| format!("bind --metrics-addr {addr}"))?;
                Some(tokio::spawn(srv.run(reg.clone(), async move {
                    let _ = server_stopped.await;
                })))
            }
            _ => None,
        };
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
        let mut exit_status = 0_u8;
        loop {
            let command_exited = async {
                match spawned.as_ref() {
                    Some(s) => {
                        let _ = s.pidfd.readable().await;
                    }
                    None => std::future::pending().await,
                }
            };
            // (stop, command ended)
            let (stop, ended) = tokio::select! {
                _ = ticker.tick() => (false, false),
                () = &mut sleep_deadline => (true, false),
                () = command_exited => (true, true),
                _ = sigint.recv() => (true, false),
                _ = sigterm.recv() => (true, false),
                _ = sighup.recv() => (true, false),
            };
            if let Some(s) = spawned.as_mut() {
                if ended {
                    let st = s.child.wait()?;
                    exit_status = st
                        .code()
                        .map_or_else(|| 128 + st.signal().unwrap_or(0) as u8, |c| c as u8);
                    // Its children may still run in the cgroup: they are part of it and end now.
                    if let Some(state) = state.as_ref() {
                        state.stop_cgroup(&s.cgroup, Duration::from_secs(2));
                    }
                    spawned = None;
                } else if stop {
                    // -t expiry or a signal with the command still running: stop it.
                    if let Some(state) = state.as_ref() {
                        state.stop_cgroup(&s.cgroup, Duration::from_secs(2));
                    }
                    let _ = s.child.wait();
                    spawned = None;
                }
            }
            sample(&probes, &mut targets, &mut aggregate)?;
            let cgroup_keys = cfg.all.then(|| {
                sample_all(
                    &probes,
                    &mut names,
                    &all_base,
                    &mut all_workloads,
                    run_start,
                )
            });
            if let Some(reg) = &registry {
                feed_metrics(
                    reg,
                    &probes,
                    &targets,
                    &all_workloads,
                    cgroup_keys,
                    &cfg.pids,
                );
            }
            if !cfg.interfaces.is_empty() {
                watch_ifaces(&mut probes, &mut targets, &cfg.interfaces);
            }
            // (With no targets at all, e.g. `--all` alone, nothing can be "all gone".)
            let all_gone = !targets.is_empty() && targets.iter().all(|t| t.exited.is_some());
            let untracked = Counters::from(probes.untracked()?).minus(untracked_base);
            let (report_now, is_final, done) = if ended {
                // The command ended first: the final report covers the run so far.
                (true, cfg.window.is_some(), true)
            } else if stop {
                // The window's report (also on a signal during a window: the part seen so far).
                (cfg.window.is_some(), true, true)
            } else if all_gone && cfg.window.is_none() && cfg.metrics_addr.is_none() {
                log::info!("all targets have exited");
                (true, false, true)
            } else {
                (cfg.continuous, false, false)
            };
            if report_now {
                let details = cfg.details.then(|| {
                    refresh_old_sockets(&mut probes, &old_sockets);
                    let rows = detail_tracker.update(
                        Instant::now(),
                        monotonic_ns(),
                        probes.connections(),
                        knobs.iface_filter,
                    );
                    for c in &rows.forget {
                        probes.forget_connection(*c);
                    }
                    rows.by_slot
                });
                let src = Sources {
                    targets: &targets,
                    aggregate: &aggregate,
                    all: &all_workloads,
                    untracked,
                    untracked_events: {
                        let (s, p) = probes.untracked_events()?;
                        (
                            s.saturating_sub(events_base.0),
                            p.saturating_sub(events_base.1),
                        )
                    },
                };
                emit(cfg, &mut output, &src, is_final, details)?;
            }
            if done {
                break;
            }
        }
        // Stop the metrics server (it drains in-flight scrapes) before the programs detach.
        drop(stop_server);
        if let Some(server) = server {
            server.await.context("metrics server task")??;
        }
        anyhow::Ok(exit_status)
    })?;
    drop(probes); // detaches every program
    drop(state); // moves processes back, removes dedicated cgroups
    Ok(status)
}

/// Stamps every inet socket `t` holds now with its owner and state, through `pidfd_getfd`
/// copies that are closed at once (holding one would delay the target's own close).
/// Returns the connections it counted (tcp established, udp bound or connected).
fn stamp_existing(
    probes: &mut Probes,
    t: &ProcIdentity,
    slot: u32,
    knobs: Knobs,
    old: &mut Vec<OldSocket>,
) -> (i64, i64) {
    let mut counted = (0, 0);
    let Ok(pidfd) = procs::PidFd::open(t.pid) else {
        return counted;
    };
    // The pidfd pins the process; check it is still the one we identified.
    if !t.is_alive() {
        return counted;
    }
    let fds = match procs::socket_fds(t.pid) {
        Ok(f) => f,
        Err(e) => {
            log::warn!("cannot list sockets of {}: {e}", t.pid);
            return counted;
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
        let proto = proto_index(info.protocol as u32);
        let detail = procs::sock_detail(&copy, info.protocol);
        let established = proto == PROTO_TCP && detail.tcp_state == TCP_ESTABLISHED;
        let udp_active = proto == PROTO_UDP && (detail.local.1 != 0 || detail.remote.1 != 0);
        let mut flags = 0;
        if established {
            flags |= FLAG_ESTABLISHED;
        }
        if udp_active {
            flags |= FLAG_UDP_ACTIVE;
        }
        // Without -i it qualifies now and the agent counts it; with -i, its first packet
        // through a chosen interface counts it in the kernel.
        let count_now = !knobs.iface_filter && (established || udp_active);
        if !knobs.iface_filter {
            flags |= FLAG_IFACE_OK;
        }
        let stats = SockStats {
            slot,
            tgid: t.pid,
            proto,
            family: info.domain as u8,
            flags,
            counted: if count_now {
                COUNT_ACTIVE
            } else {
                COUNT_NOT_YET
            },
            ..SockStats::default()
        };
        let owner = SockOwner {
            tgid: t.pid,
            slot,
            proto,
            family: info.domain as u8,
            _pad: [0; 6],
        };
        match probes.stamp_socket(&copy, owner, stats) {
            Ok(installed) => {
                stamped += 1;
                if installed && count_now {
                    if proto == PROTO_TCP {
                        counted.0 += 1;
                    } else {
                        counted.1 += 1;
                    }
                }
            }
            Err(e) => log::warn!("socket {fd} of {}: {e:#}", t.pid),
        }
        if knobs.details {
            let rec = ConnRecord {
                // Its real opening time is unknown: its age counts from the run's start.
                open_ns: monotonic_ns(),
                local_ip: detail.local.0,
                remote_ip: detail.remote.0,
                local_port: detail.local.1,
                remote_port: detail.remote.1,
                tgid: t.pid,
                slot,
                srtt_us: detail.rtt_us,
                retrans: detail.retrans,
                proto,
                family: info.domain as u8,
                state: detail.tcp_state,
                iface_ok: u8::from(!knobs.iface_filter),
                ..ConnRecord::default()
            };
            if let Err(e) = probes.put_connection(info.cookie, rec) {
                log::warn!("{e:#}");
            }
            if proto == PROTO_TCP {
                old.push(OldSocket {
                    pid: t.pid,
                    fd,
                    cookie: info.cookie,
                });
            }
        }
    }
    log::info!(
        "process {}: {stamped} existing socket(s) stamped, {counted:?} connections open",
        t.pid
    );
    counted
}

/// `--details` for connections that predate the run: sock_ops callbacks cannot be armed on
/// them, so re-read their TCP_INFO through a fresh descriptor copy (checked by cookie, since
/// the descriptor number may have been reused).
fn refresh_old_sockets(probes: &mut Probes, old: &[OldSocket]) {
    for s in old {
        let Ok(pidfd) = procs::PidFd::open(s.pid) else {
            continue;
        };
        let Ok(copy) = pidfd.get_fd(s.fd) else {
            continue;
        };
        if procs::sock_info(&copy).map(|i| i.cookie).ok() != Some(s.cookie) {
            continue;
        }
        let d = procs::sock_detail(&copy, libc::IPPROTO_TCP);
        probes.refresh_connection(s.cookie, d.rtt_us, d.retrans, d.tcp_state);
    }
}

/// Re-resolves `-i` names in each live target's namespace: warns when an interface goes away,
/// comes back or is recreated, and updates the kernel's filter so counting continues on what
/// remains and resumes on re-add.
fn watch_ifaces(probes: &mut Probes, targets: &mut [Target], names: &[String]) {
    for t in targets.iter_mut().filter(|t| t.exited.is_none()) {
        let Ok(links): anyhow::Result<NetnsLinks> = netns::links_of(t.ident.pid) else {
            continue;
        };
        for n in names {
            let now = links.index_of(n).map(|ifindex| IfaceKey {
                netns_cookie: links.cookie,
                ifindex,
                _pad: 0,
            });
            let before = t.ifaces.get(n).copied();
            match (before, now) {
                (Some(b), Some(k)) if b == k => {}
                (Some(b), None) => {
                    log::warn!(
                        "interface {n} is gone from the namespace of process {}; counting continues on the others",
                        t.ident.pid
                    );
                    probes.deny_iface(&b);
                    t.ifaces.remove(n);
                }
                (before, Some(k)) => {
                    if let Some(b) = before {
                        probes.deny_iface(&b);
                    }
                    log::warn!(
                        "interface {n} is back in the namespace of process {} (ifindex {}); counting it again",
                        t.ident.pid,
                        k.ifindex
                    );
                    if let Err(e) = probes.allow_iface(k) {
                        log::warn!("{e:#}");
                    }
                    t.ifaces.insert(n.clone(), k);
                }
                (None, None) => {}
            }
        }
    }
}

/// The metrics labels of a workload: namespace/pod/container on Kubernetes (when the
/// runtime's metadata named it), else the cgroup (systemd unit or path).
fn metrics_key(
    container: Option<&crate::host::identity::ContainerIdentity>,
    unit: &str,
) -> WorkloadKey {
    match container {
        Some(c) => match (&c.namespace, &c.pod, &c.name) {
            (Some(ns), Some(pod), Some(name)) => {
                WorkloadKey::kubernetes(ns.clone(), pod.clone(), name.clone())
            }
            _ => WorkloadKey::cgroup(c.workload()),
        },
        None => WorkloadKey::cgroup(if unit.is_empty() { "/" } else { unit }),
    }
}

/// Pushes this tick's cumulative traffic per workload, the live set, and self-metrics into
/// the registry `/metrics` reads at scrape time.
fn feed_metrics(
    reg: &MetricsRegistry,
    probes: &Probes,
    targets: &[Target],
    all: &HashMap<String, AllWorkload>,
    cgroup_keys: Option<usize>,
    named: &[u32],
) {
    let all_mode = cgroup_keys.is_some();
    // `procnetmon_target_info` for the PIDs named with -p that are still running.
    reg.set_targets(
        targets
            .iter()
            .filter(|t| t.cgroup.is_none() && t.exited.is_none() && named.contains(&t.ident.pid))
            .map(|t| TargetInfo {
                pid: t.ident.pid,
                comm: t.ident.comm.clone(),
                labels: metrics_key(t.container.as_ref(), &t.unit).labels().to_vec(),
            })
            .collect(),
    );
    let now = Instant::now();
    let mut sums: HashMap<WorkloadKey, Traffic> = HashMap::new();
    let mut live: std::collections::HashSet<WorkloadKey> = std::collections::HashSet::new();
    let mut add = |k: WorkloadKey, t: &Traffic, alive: bool| {
        let e = sums.entry(k.clone()).or_default();
        *e = sum_traffic([&*e, t]);
        if alive {
            live.insert(k);
        }
    };
    if all_mode {
        for w in all.values() {
            add(
                metrics_key(w.info.container.as_ref(), &w.info.workload),
                &w.series.since_start(),
                !w.exited,
            );
        }
    } else {
        for t in targets {
            let container = t
                .cgroup
                .as_ref()
                .map_or(t.container.as_ref(), |(_, i)| i.container.as_ref());
            add(
                metrics_key(container, &t.unit),
                &t.series.since_start(),
                t.exited.is_none(),
            );
        }
    }
    // A gone workload is no longer fed (an update would revive it): its series keep their
    // last values until the grace period ends.
    for (k, t) in sums.iter().filter(|(k, _)| live.contains(*k)) {
        reg.update_workload(k, t);
    }
    reg.mark_gone_unless(|k| live.contains(k), now);
    reg.expire(now);
    let tracked: u64 = targets
        .iter()
        .map(|t| u64::from(t.connections.0) + u64::from(t.connections.1))
        .sum();
    let untracked = probes
        .untracked()
        .map(|c| c.bytes_in + c.bytes_out)
        .unwrap_or(0);
    let mut maps = Vec::new();
    // TARGET_PIDS holds only -p targets and their children: walk it only when there are some.
    if !named.is_empty() {
        maps.push(MapFill {
            map: "TARGET_PIDS".into(),
            entries: probes.target_pid_count(),
            max_entries: procnetmon2_common::target::MAX_TARGET_PIDS,
        });
    }
    // CGROUP_TOTALS was walked once this tick already (sample_all): reuse its size.
    if let Some(keys) = cgroup_keys {
        maps.push(MapFill {
            map: "CGROUP_TOTALS".into(),
            entries: keys as u32,
            max_entries: procnetmon2_common::knobs::MAX_CGROUP_KEYS,
        });
    }
    reg.set_self_stats(SelfStats {
        tracked_sockets: tracked,
        untracked_bytes: untracked,
        maps,
    });
}

/// `--all`: reads the per-cgroup counters, groups them by workload and advances each
/// workload's rate series. A workload whose cgroups are all gone is marked exited.
fn sample_all(
    probes: &Probes,
    names: &mut CgroupNames,
    base: &HashMap<(u64, u32), Counters>,
    workloads: &mut HashMap<String, AllWorkload>,
    run_start: Instant,
) -> usize {
    let now = Instant::now();
    let mut cur: HashMap<String, (Traffic, CgroupInfo, Vec<u64>)> = HashMap::new();
    let totals = probes.cgroup_totals();
    let keys = totals.len();
    for (k, c) in totals {
        let c = Counters::from(c).minus(
            base.get(&(k.cgroup_id, k.proto))
                .copied()
                .unwrap_or_default(),
        );
        let info = names
            .get(k.cgroup_id)
            .cloned()
            .unwrap_or_else(|| CgroupInfo {
                path: format!("cgroup-id:{}", k.cgroup_id),
                container: None,
                workload: format!("cgroup-id:{}", k.cgroup_id),
            });
        let e = cur
            .entry(info.workload.clone())
            .or_insert_with(|| (Traffic::default(), info, Vec::new()));
        match k.proto {
            0 => e.0.tcp = e.0.tcp.plus(c),
            1 => e.0.udp = e.0.udp.plus(c),
            _ => e.0.other = e.0.other.plus(c),
        }
        if !e.2.contains(&k.cgroup_id) {
            e.2.push(k.cgroup_id);
        }
    }
    for (name, (traffic, info, ids)) in cur {
        // A workload first seen now has been counted since the run started.
        let w = workloads.entry(name).or_insert_with(|| AllWorkload {
            info,
            series: Series::new(Traffic::default(), run_start),
            ids: Vec::new(),
            exited: false,
        });
        w.series.update_at(now, traffic);
        w.ids = ids;
    }
    for w in workloads.values_mut() {
        w.exited = !w.ids.iter().any(|id| names.alive(*id));
    }
    keys
}

/// Reads every target's totals and gauges and advances the rate series.
fn sample(probes: &Probes, targets: &mut [Target], aggregate: &mut Series) -> anyhow::Result<()> {
    let now = Instant::now();
    for t in targets.iter_mut() {
        let cur: Traffic = probes.totals(t.slot)?.into();
        t.series.update_at(now, cur);
        t.last = cur;
        if t.exited.is_none() {
            if t.alive() {
                let (tcp, udp) = probes.gauges(t.slot)?;
                t.connections = (
                    (tcp + t.preexisting.0).clamp(0, i64::from(u32::MAX)) as u32,
                    (udp + t.preexisting.1).clamp(0, i64::from(u32::MAX)) as u32,
                );
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

/// What a report is built from.
struct Sources<'a> {
    targets: &'a [Target],
    aggregate: &'a Series,
    all: &'a HashMap<String, AllWorkload>,
    untracked: Counters,
    /// (sockets, processes) that could not be attributed during the run.
    untracked_events: (u64, u64),
}

fn emit(
    cfg: &Config,
    out: &mut Output,
    src: &Sources<'_>,
    is_final: bool,
    mut details: Option<HashMap<u32, Vec<crate::model::ConnDetail>>>,
) -> anyhow::Result<()> {
    let Sources {
        targets,
        aggregate,
        all,
        untracked,
        untracked_events,
    } = *src;
    let mut workloads: Vec<WorkloadReport> = targets
        .iter()
        .filter_map(|t| {
            let (_, info) = t.cgroup.as_ref()?;
            Some(WorkloadReport {
                name: info.workload.clone(),
                cgroup: info.path.clone(),
                container: info.container.clone(),
                exited: t.exited.is_some(),
                row: row_of(&t.series, t.connections, is_final),
                traffic: t.series.since_start(),
            })
        })
        .collect();
    let mut names: Vec<&String> = all.keys().collect();
    names.sort();
    for name in names {
        let w = &all[name];
        workloads.push(WorkloadReport {
            name: name.clone(),
            cgroup: w.info.path.clone(),
            container: w.info.container.clone(),
            exited: w.exited,
            row: row_of(&w.series, (0, 0), is_final),
            traffic: w.series.since_start(),
        });
    }
    let processes: Vec<ProcessReport> = targets
        .iter()
        .filter(|t| t.cgroup.is_none())
        .map(|t| ProcessReport {
            container: t.container.clone(),
            nspid: t.nspid,
            pid: t.ident.pid,
            name: t.ident.comm.clone(),
            runtime: t.exited.unwrap_or_else(|| t.ident.runtime()),
            exited: t.exited.is_some(),
            row: row_of(&t.series, t.connections, is_final),
            traffic: t.series.since_start(),
            connections: details
                .as_mut()
                .map(|d| d.remove(&t.slot).unwrap_or_default()),
        })
        .collect();
    let aggregated = cfg.aggregate.then(|| {
        let conns = targets.iter().fold((0, 0), |(a, b), t| {
            (a + t.connections.0, b + t.connections.1)
        });
        row_of(aggregate, conns, is_final)
    });
    let report = Report {
        timestamp: chrono::Local::now().fixed_offset(),
        processes,
        aggregated,
        workloads,
        untracked,
        untracked_sockets: untracked_events.0,
        untracked_processes: untracked_events.1,
        is_final,
    };
    if cfg.json {
        render::json::write(&mut *out.w, &report)?;
    } else {
        render::table::write(&mut *out.w, &report, out.tty && cfg.continuous && !is_final)?;
    }
    Ok(())
}
