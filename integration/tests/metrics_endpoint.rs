//! `--metrics-addr`: scraped with a real HTTP client (curl) during real traffic in namespaces.
//! Values equal the known payloads, counters never go down when connections close, a removed
//! workload's series leave after the grace period, and `promtool check metrics` accepts it.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{
    Cgroup, Monitor, Netns, Proc, Veth, bin, skip_unless_root, time_scale, udp4_bytes,
};

fn scrape(port: u16, accept: &str) -> String {
    let out = Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Accept: {accept}"),
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .expect("curl");
    assert!(out.status.success(), "scrape failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Scrapes until `done` holds for the text (every 100 ms, at most 3 s stretched by
/// `PNM_TIME_SCALE`), and returns the last text: the caller asserts on it either way.
fn scrape_until(port: u16, accept: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(3 * time_scale());
    loop {
        let text = scrape(port, accept);
        if done(&text) || Instant::now() >= deadline {
            return text;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The value of the sample whose line starts with `name{` and contains every `needles`.
fn value(text: &str, name: &str, needles: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && needles.iter().all(|n| l.contains(n)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn scrape_during_traffic() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 71);
    let udp_addr = format!("{}:7701", v.ip_b);
    let tcp_addr = format!("{}:7702", v.ip_b);
    let sink = Proc::peer(&["udp-recv", &udp_addr, "1000000"], None, Some(&b));
    sink.expect_line("ready");
    let server = Proc::peer(&["tcp-server", &tcp_addr], None, Some(&b));
    server.expect_line("ready");
    let cg = Cgroup::new();
    let cg_name = cg
        .dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let peer = bin("pnm-peer");
    let peer = peer.to_str().expect("utf8");
    // One workload (the test cgroup): UDP datagrams, then a TCP connection that closes.
    let script = format!(
        "echo started; read go; {peer} udp-send {udp_addr} 200 400 connected >/dev/null; echo udp-done; \
         read go; {peer} tcp-client {tcp_addr} 100000 20000 1 1 >/dev/null; echo tcp-done; read end"
    );
    let mut w = Proc::spawn(Path::new("sh"), &["-c", &script], Some(&cg), Some(&a));
    w.expect_line("started");
    let addr = format!("127.0.0.1:{port}");
    let mon = Monitor::start(&[
        "--all",
        "-p",
        &w.pid().to_string(),
        "--metrics-addr",
        &addr,
        "--series-grace",
        "1s",
        "--interval",
        "200ms",
    ]);
    w.send_line("go");
    w.expect_line("udp-done");
    let om = "application/openmetrics-text;version=1.0.0";
    let sel = [cg_name.as_str(), "protocol=\"udp\""];
    // Scraped until a 200 ms tick has read the totals (at most 3 s, stretched under
    // emulation), then checked exactly.
    let text = scrape_until(port, om, |t| {
        value(t, "procnetmon_network_transmit_packets_total", &sel) == Some(200)
    });
    assert_eq!(
        value(&text, "procnetmon_network_transmit_bytes_total", &sel),
        Some(200 * udp4_bytes(400)),
        "{text}"
    );
    assert_eq!(
        value(&text, "procnetmon_network_transmit_packets_total", &sel),
        Some(200)
    );
    assert!(
        text.contains(&format!("procnetmon_target_info{{pid=\"{}\"", w.pid())),
        "{text}"
    );
    assert!(text.contains("procnetmon_build_info{"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
    // TCP: the connection opens, moves data and closes; scraped before, during and after,
    // its counters never go down.
    w.send_line("go");
    let mut last = 0;
    for _ in 0..10 {
        let t = scrape(port, om);
        let v = value(
            &t,
            "procnetmon_network_transmit_bytes_total",
            &[cg_name.as_str(), "protocol=\"tcp\""],
        )
        .unwrap_or(0);
        assert!(v >= last, "a counter went down: {last} -> {v}");
        last = v;
        thread::sleep(Duration::from_millis(100));
    }
    w.expect_line("tcp-done");
    let tcp = |t: &str| {
        value(
            t,
            "procnetmon_network_transmit_bytes_total",
            &[cg_name.as_str(), "protocol=\"tcp\""],
        )
    };
    let after = tcp(&scrape_until(port, om, |t| {
        tcp(t).is_some_and(|v| v > 100_000)
    }));
    assert!(after.is_some_and(|v| v >= last && v > 100_000), "{after:?}");
    // promtool (Prometheus' own linter) accepts the classic text format.
    let classic = scrape(port, "text/plain");
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup installs Debian's prometheus)");
    std::io::Write::write_all(p.stdin.as_mut().expect("stdin"), classic.as_bytes()).expect("write");
    let out = p.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{classic}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The workload goes away: its series leave after the grace period.
    w.close_stdin();
    w.wait();
    drop(w);
    drop(cg);
    let gone = (0..40).any(|_| {
        thread::sleep(Duration::from_millis(150));
        !scrape(port, om).contains(&cg_name)
    });
    assert!(gone, "series of a removed workload stayed");
    let health = Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{port}/healthz")])
        .output()
        .expect("curl");
    assert!(health.status.success());
    // Daemon: still running after its -p target exited; SIGTERM ends it cleanly.
    let (status, _, err) = mon.stop();
    assert!(status.success(), "{err:?}");
    assert!(
        err.iter()
            .any(|l| l.contains("level=info") && l.contains("msg=")),
        "logfmt logs: {err:?}"
    );
}
