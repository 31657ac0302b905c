//! Nothing is lost when workloads come and go. `--all` under cgroup churn: many short-lived
//! cgroups, each carrying a little loopback UDP from a process placed in it, are created and
//! removed while the agent runs at 1 s ticks; every byte sent reaches /metrics and the kernel's
//! per-cgroup map is drained as the cgroups go. And a `-p` target that sends and exits within
//! one interval: its final interval reaches /metrics before its series expire.
//!
//! `PNM_CHURN_CGROUPS` sets how many cgroups (default 600, well under a minute). Speed and
//! memory at 20,000 are measured by `scripts/bench churn`, not here (BENCHMARKS.md).

use std::{
    collections::VecDeque,
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{
    Cgroup, Monitor, Peer, Scenario, env_count,
    metrics::{CLASSIC, free_port, sample_sum, scrape_until},
    udp4_bytes,
};

/// Long-lived workloads (systemd-like units) that most churn cgroups live under.
const UNITS: usize = 8;
/// Datagrams and payload per churn cgroup.
const DATAGRAMS: u64 = 5;
const PAYLOAD: u64 = 100;
/// Churn cgroups started together.
const BATCH: usize = 50;
/// A churn cgroup is removed this long after its traffic ended (two ticks and a walk).
const LINGER: Duration = Duration::from_millis(2500);
/// The transmitted-bytes counter of the metrics page.
const TX_BYTES: &str = "procnetmon_network_transmit_bytes_total";

/// UDP bytes of the workloads whose cgroup names contain `tag`, on the page.
fn udp_tx(text: &str, tag: &str) -> u64 {
    sample_sum(text, TX_BYTES, &[tag, "protocol=\"udp\""])
}

/// Keys left in the kernel's per-cgroup map (its fill ratio of 16,384 entries).
fn cgroup_keys(text: &str) -> Option<usize> {
    text.lines()
        .find(|l| l.starts_with("procnetmon_map_fill_ratio{") && l.contains("CGROUP_TOTALS"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|fill| (fill * 16384.0).round() as usize)
}

/// A UDP sink on loopback in this process, drained by a thread until dropped.
struct Sink {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Sink {
    fn new() -> Self {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let port = s.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0_u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                let _ = s.recv(&mut buf);
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `n` cgroups in batches, each with one sender placed in it that sends to `dest`;
/// every cgroup is removed `LINGER` after its batch's traffic ended. Every fourth is a child
/// of `parent` (a workload that ends with its cgroup), the rest children of the `units`.
/// Returns the bytes sent.
fn churn(n: usize, parent: &Cgroup, units: &[Cgroup], dest: &str) -> u64 {
    let mut sent = 0;
    let mut lingering: VecDeque<(Instant, Vec<Cgroup>)> = VecDeque::new();
    let mut made = 0;
    while made < n {
        let batch: Vec<Cgroup> = (made..n.min(made + BATCH))
            .map(|i| {
                let home = if i % 4 == 0 {
                    parent
                } else {
                    &units[i % UNITS]
                };
                home.child(&format!("c{i}"))
            })
            .collect();
        made += batch.len();
        // Placed in its cgroup before it execs (one process start each: under emulation
        // every start costs 0.3-0.9 s), so all of its sockets are the cgroup's.
        let senders: Vec<_> = batch
            .iter()
            .map(|cg| Peer::udp_send(dest, DATAGRAMS, PAYLOAD).in_cgroup(cg))
            .collect();
        for p in senders {
            p.run();
            sent += DATAGRAMS * udp4_bytes(PAYLOAD);
        }
        lingering.push_back((Instant::now(), batch));
        while lingering
            .front()
            .is_some_and(|(at, _)| at.elapsed() >= LINGER)
        {
            drop(lingering.pop_front()); // removes those cgroups
        }
    }
    while let Some((at, batch)) = lingering.pop_front() {
        thread::sleep(LINGER.saturating_sub(at.elapsed()));
        drop(batch);
    }
    sent
}

#[test]
fn all_under_cgroup_churn_exports_every_byte_and_drains_the_map() {
    let Some(s) = Scenario::new() else { return };
    let n = env_count("PNM_CHURN_CGROUPS", 600) as usize;
    let parent = s.cgroup();
    let tag = parent.name();
    // Most cgroups are children of a few long-lived units (like pods' containers); every
    // fourth is a workload of its own that ends with its cgroup.
    let units: Vec<Cgroup> = (0..UNITS)
        .map(|k| parent.child(&format!("{tag}-u{k}.service")))
        .collect();
    let sink = Sink::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mon = Monitor::start(&[
        "--all",
        "--metrics-addr",
        &addr,
        "--interval",
        "1s",
        "--series-grace",
        "1h",
        "--max-series",
        "100000",
    ]);
    let sent = churn(n, &parent, &units, &format!("127.0.0.1:{}", sink.port));
    // Every byte reaches the page, and the kernel's map holds live cgroups only: ours are all
    // gone once the last removals are drained and fed (a tick or two).
    let drained = |t: &str| cgroup_keys(t).is_some_and(|k| k < 200.min(n / 2));
    let text = scrape_until(port, CLASSIC, 10, |t| udp_tx(t, &tag) == sent && drained(t));
    assert_eq!(udp_tx(&text, &tag), sent, "bytes exported vs sent\n{text}");
    let keys = cgroup_keys(&text).expect("CGROUP_TOTALS fill");
    assert!(
        drained(&text),
        "{keys} keys left in CGROUP_TOTALS after {n} cgroups came and went"
    );
    mon.stop_ok();
    drop(units);
}

#[test]
fn a_targets_final_interval_reaches_metrics() {
    let Some(s) = Scenario::new() else { return };
    let sink = Sink::new();
    let cg = s.cgroup();
    let dest = format!("127.0.0.1:{}", sink.port);
    let mut w = Peer::udp_send(&dest, 3000, 1000)
        .connected()
        .on_go()
        .in_cgroup(&cg)
        .start();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let pid = w.pid().to_string();
    let mon = Monitor::start(&["-p", &pid, "--metrics-addr", &addr, "--interval", "1s"]);
    // It sends everything and exits within one interval.
    w.go("done");
    assert!(w.wait().success());
    let want = 3000 * udp4_bytes(1000);
    let text = scrape_until(port, CLASSIC, 10, |t| udp_tx(t, &cg.name()) == want);
    assert_eq!(udp_tx(&text, &cg.name()), want, "{text}");
    mon.stop_ok();
}
