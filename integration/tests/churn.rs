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
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{Cgroup, Monitor, Proc, bin, skip_unless_root, udp4_bytes};

/// Long-lived workloads (systemd-like units) that most churn cgroups live under.
const UNITS: usize = 8;
/// Datagrams and payload per churn cgroup.
const DATAGRAMS: u64 = 5;
const PAYLOAD: u64 = 100;
/// Churn cgroups started together.
const BATCH: usize = 50;
/// A churn cgroup is removed this long after its traffic ended (two ticks and a walk).
const LINGER: Duration = Duration::from_millis(2500);

fn scrape(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .expect("curl");
    assert!(out.status.success(), "scrape failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sum of the samples of `name` whose line contains every needle.
fn sum(text: &str, name: &str, needles: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
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

#[test]
fn all_under_cgroup_churn_exports_every_byte_and_drains_the_map() {
    if skip_unless_root() {
        return;
    }
    let n: usize = std::env::var("PNM_CHURN_CGROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let parent = Cgroup::new();
    let tag = parent
        .dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    // Most cgroups are children of a few long-lived units (like pods' containers); every
    // fourth is a workload of its own that ends with its cgroup.
    let units: Vec<Cgroup> = (0..UNITS)
        .map(|k| {
            let dir = parent.dir.join(format!("{tag}-u{k}.service"));
            std::fs::create_dir(&dir).expect("mkdir unit");
            Cgroup { dir }
        })
        .collect();
    let sink = Sink::new();
    let port = 21_000 + (std::process::id() % 1000) as u16;
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
    let dest = format!("127.0.0.1:{}", sink.port);
    let mut sent = 0;
    let mut lingering: VecDeque<(Instant, Vec<Cgroup>)> = VecDeque::new();
    let mut made = 0;
    while made < n {
        let batch: Vec<Cgroup> = (made..n.min(made + BATCH))
            .map(|i| {
                let dir = if i % 4 == 0 {
                    parent.dir.join(format!("c{i}"))
                } else {
                    units[i % UNITS].dir.join(format!("c{i}"))
                };
                std::fs::create_dir(&dir).expect("mkdir");
                Cgroup { dir }
            })
            .collect();
        made += batch.len();
        let (datagrams, payload) = (DATAGRAMS.to_string(), PAYLOAD.to_string());
        let children: Vec<Proc> = batch
            .iter()
            // Placed in its cgroup before it execs (one process start each: under emulation
            // every start costs 0.3-0.9 s), so all of its sockets are the cgroup's.
            .map(|cg| Proc::peer(&["udp-send", &dest, &datagrams, &payload], Some(cg), None))
            .collect();
        for mut c in children {
            assert!(c.wait().success(), "sender failed");
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
    // Two ticks for the last removals to be drained and fed.
    thread::sleep(Duration::from_millis(2500));
    let text = scrape(port);
    let exported = sum(
        &text,
        "procnetmon_network_transmit_bytes_total",
        &[&tag, "protocol=\"udp\""],
    );
    assert_eq!(exported, sent, "bytes exported vs sent\n{text}");
    // The kernel's map holds live cgroups only: ours are all gone.
    let fill = text
        .lines()
        .find(|l| l.starts_with("procnetmon_map_fill_ratio{") && l.contains("CGROUP_TOTALS"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .expect("CGROUP_TOTALS fill");
    let keys = (fill * 16384.0).round() as usize;
    assert!(
        keys < 200.min(n / 2),
        "{keys} keys left in CGROUP_TOTALS after {n} cgroups came and went"
    );
    let (status, _, err) = mon.stop();
    assert!(status.success(), "{err:?}");
    drop(units);
    drop(parent);
}

#[test]
fn a_targets_final_interval_reaches_metrics() {
    if skip_unless_root() {
        return;
    }
    let sink = Sink::new();
    let cg = Cgroup::new();
    let tag = cg
        .dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let dest = format!("127.0.0.1:{}", sink.port);
    let mut w = Proc::spawn(
        &bin("pnm-peer"),
        &["udp-send", &dest, "3000", "1000", "connected", "wait"],
        Some(&cg),
        None,
    );
    w.expect_line("bound");
    let port = 22_000 + (std::process::id() % 1000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let mon = Monitor::start(&[
        "-p",
        &w.pid().to_string(),
        "--metrics-addr",
        &addr,
        "--interval",
        "1s",
    ]);
    // It sends everything and exits within one interval.
    w.send_line("go");
    w.expect_line("done");
    assert!(w.wait().success());
    thread::sleep(Duration::from_millis(2500));
    let text = scrape(port);
    assert_eq!(
        sum(
            &text,
            "procnetmon_network_transmit_bytes_total",
            &[&tag, "protocol=\"udp\""]
        ),
        3000 * udp4_bytes(1000),
        "{text}"
    );
    let (status, _, err) = mon.stop();
    assert!(status.success(), "{err:?}");
    drop(w);
    drop(cg);
}
