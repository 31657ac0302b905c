//! `--metrics-addr` under hostile clients (issue 14): 1,000 concurrent scrapers (each about
//! once a second, more than 1,328 clients at once with the rest: beyond the server's 1,024
//! connection slots, so the listen-backlog queue is used), 200 slowloris connections, 64 idle
//! connections and 64 scrapers that never read, all at once on loopback (`pnm-hostile`), while a separate prober's `/healthz` and `/metrics` must each answer within
//! 1 s in at least 99% of tries; afterwards the agent's open files and RSS come back down.
//! About 45 s; everything it opens is closed when `pnm-hostile` exits.

use std::{process::Command, thread, time::Duration, time::Instant};

use procnetmon2_integration::{
    Monitor, Scenario, bin,
    metrics::{free_port, healthz_ok},
    skip, time_scale,
};

/// Open file descriptors and resident memory (KiB) of `pid`.
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (fds, rss)
}

/// Runs `pnm-hostile` against `addr` for 25 s while watching the agent `pid`: its report
/// (JSON) and the agent's peak (fds, RSS KiB).
fn hostile_load(addr: &str, pid: u32, before: (usize, u64)) -> (serde_json::Value, (usize, u64)) {
    let load = Command::new(bin("pnm-hostile"))
        .args([addr, "25"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("pnm-hostile");
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = done_tx.send(load.wait_with_output());
    });
    let mut peak = before;
    let started = Instant::now();
    let out = loop {
        let (fds, rss) = fds_and_rss(pid);
        peak = (peak.0.max(fds), peak.1.max(rss));
        match done.recv_timeout(Duration::from_millis(250)) {
            Ok(out) => break out.expect("pnm-hostile output"),
            Err(_) => assert!(
                started.elapsed() < Duration::from_secs(60),
                "pnm-hostile did not stop by itself"
            ),
        }
    };
    assert!(out.status.success(), "pnm-hostile failed");
    let stats = serde_json::from_slice(&out.stdout).expect("pnm-hostile prints JSON");
    (stats, peak)
}

/// The agent's fds once the hostile clients are gone (back within 2 of `before`, or the
/// last reading after 10 s).
fn back_down(pid: u32, before: (usize, u64)) -> (usize, u64) {
    let mut after = fds_and_rss(pid);
    for _ in 0..40 {
        if after.0 <= before.0 + 2 {
            break;
        }
        thread::sleep(Duration::from_millis(250));
        after = fds_and_rss(pid);
    }
    after
}

/// The load loaded, and each probe (`/healthz`, `/metrics`) answered within 1 s in at least
/// 99% of at least 200 tries.
fn probes_answered(stats: &serde_json::Value) {
    let hostile = &stats["hostile"];
    assert!(
        hostile["requests"].as_u64().unwrap_or(0) >= 1000,
        "the load did not load: {hostile}"
    );
    for probe in ["healthz", "metrics"] {
        let p = &stats[probe];
        let n = |k: &str| p[k].as_u64().unwrap_or(0);
        let (tries, ok) = (n("tries"), n("ok"));
        assert!(tries >= 200, "{probe}: only {tries} tries: {p}");
        assert!(
            ok * 100 >= tries * 99,
            "{probe}: {ok} of {tries} answered within 1 s: {p}"
        );
    }
}

#[test]
fn hostile_clients_do_not_starve_probes() {
    let Some(_s) = Scenario::new() else { return };
    // A load test of the agent's HTTP server: its 1 s answer deadline under 1,300 clients is
    // a property of the CPU it runs on, not of the kernel. In an emulated VM (PNM_TIME_SCALE
    // > 1: measured on 5.10 under TCG, 15 of 31 probes within 1 s) it cannot hold; the host
    // run checks it.
    if time_scale() > 1 {
        skip("1 s probe deadline under 1,300 clients measures the CPU; not under emulation");
        return;
    }
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mon = Monitor::start(&["--all", "--metrics-addr", &addr, "--interval", "1s"]);
    let pid = mon.pid();
    // Settled: a few ticks and scrapes have allocated what a quiet agent needs.
    for _ in 0..5 {
        assert!(healthz_ok(port));
        thread::sleep(Duration::from_millis(300));
    }
    let before = fds_and_rss(pid);
    let (stats, peak) = hostile_load(&addr, pid, before);
    // Back down: the hostile connections are gone once their clients are.
    let after = back_down(pid, before);
    eprintln!(
        "hostile: {stats}\nfds before {} peak {} after {}; RSS KiB before {} peak {} after {}",
        before.0, peak.0, after.0, before.1, peak.1, after.1
    );
    probes_answered(&stats);
    assert!(
        peak.0 >= before.0 + 300,
        "the hostile connections were never held open ({} -> {})",
        before.0,
        peak.0
    );
    assert!(
        after.0 <= before.0 + 2,
        "fds: {} before, {} after",
        before.0,
        after.0
    );
    // Allocator arenas may keep some of the peak; what matters is no growth per connection
    // (1,328 connections held and ~100,000 served would leave far more behind than this).
    assert!(
        after.1 <= before.1 + 16 * 1024,
        "RSS: {} KiB before, {} KiB after",
        before.1,
        after.1
    );
    assert!(healthz_ok(port));
    mon.stop_ok();
}
