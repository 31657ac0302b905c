//! Where the bytes go (issue 17): per-remote-host totals, destination classes counted in the
//! kernel, the per-target cap's `other` bucket, names from a DNS answer the target received,
//! and the `destination_class` metrics label. Expected values come from the payloads sent and
//! the IPv4/UDP header formula, never from procnetmon2's own output.

use std::{process::Command, thread, time::Duration};

use procnetmon2_integration::{
    Cgroup, Monitor, Netns, Proc, Veth, current, num, skip_unless_root, udp4_bytes,
};

const SIZE: u64 = 300;

/// `10.X.0.0/16` of the test network, from a peer address `10.X.Y.2`.
fn net16(ip: &str) -> String {
    let o: Vec<&str> = ip.split('.').collect();
    format!("{}.{}.0.0/16", o[0], o[1])
}

/// `10.X.Y.0/24` of a peer address.
fn net24(ip: &str) -> String {
    let o: Vec<&str> = ip.split('.').collect();
    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
}

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

fn promtool_accepts(text: &str) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup installs Debian's prometheus)");
    std::io::Write::write_all(p.stdin.as_mut().expect("stdin"), text.as_bytes()).expect("write");
    let out = p.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target with one unconnected UDP socket sends to three peers in three /24s and to
/// loopback. Per host: exactly each peer's datagrams; classes from `--class` (a /16 and an
/// overlapping /24: the /24 wins) give the same sums; the metrics page splits the counters
/// by `destination_class` and promtool accepts it. A second run with `--destinations-max 2`
/// keeps the first two hosts apart and sums the rest in `other`.
#[test]
fn per_host_classes_metrics_and_the_cap() {
    if skip_unless_root() {
        return;
    }
    let a = Netns::new(false);
    let peers: Vec<(Netns, Veth)> = (81..=83)
        .map(|subnet| {
            let b = Netns::new(false);
            let v = Veth::new(&a, &format!("eth{subnet}"), &b, "eth0", subnet);
            (b, v)
        })
        .collect();
    let mut sinks = Vec::new();
    for (b, v) in &peers {
        let s = Proc::peer(
            &["udp-recv", &format!("{}:7001", v.ip_b), "1000000"],
            None,
            Some(b),
        );
        s.expect_line("ready");
        sinks.push(s);
    }
    let lo = Proc::peer(&["udp-recv", "127.0.0.1:7001", "1000000"], None, Some(&a));
    lo.expect_line("ready");
    let ips: Vec<String> = peers.iter().map(|(_, v)| v.ip_b.clone()).collect();
    let counts = [10_u64, 20, 30];
    let lo_count = 5_u64;
    let mut send_args = vec!["udp-multi".to_string(), SIZE.to_string()];
    for (ip, n) in ips.iter().zip(counts) {
        send_args.push(format!("{ip}:7001={n}"));
    }
    send_args.push(format!("127.0.0.1:7001={lo_count}"));
    let cg = Cgroup::new();
    let args: Vec<&str> = send_args.iter().map(String::as_str).collect();
    let mut target = Proc::peer(&args, Some(&cg), Some(&a));
    target.expect_line("ready");
    let pid = target.pid().to_string();

    // Run 1: hosts, classes, metrics.
    let port = 19_500 + (std::process::id() % 400) as u16;
    let zone = format!("zone={}", net16(&ips[0]));
    let rack = format!("rack={}", net24(&ips[1]));
    let maddr = format!("127.0.0.1:{port}");
    let mon = Monitor::start(&[
        "-p",
        &pid,
        "--json",
        "-t",
        "3s",
        "--interval",
        "200ms",
        "--destinations",
        "--class",
        &zone,
        "--class",
        &rack,
        "--metrics-addr",
        &maddr,
    ]);
    target.send_line("go");
    target.expect_line("done");
    thread::sleep(Duration::from_millis(700));
    let om = scrape(port, "application/openmetrics-text;version=1.0.0");
    let classic = scrape(port, "text/plain");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let report = reports.last().expect("a report");
    let p = &report["processes"][&pid];
    let d = &p["destinations"];
    let each = udp4_bytes(SIZE);
    for (ip, (n, class)) in ips.iter().zip(counts.iter().zip(["zone", "rack", "zone"])) {
        assert_eq!(num(&d[ip], "bytes_out"), n * each, "{ip}: {d}");
        assert_eq!(num(&d[ip], "packets_out"), *n, "{ip}: {d}");
        assert_eq!(num(&d[ip], "bytes_in"), 0, "{ip}: {d}");
        assert_eq!(d[ip]["class"], class, "{ip}: {d}");
    }
    assert_eq!(num(&d["127.0.0.1"], "bytes_out"), lo_count * each, "{d}");
    assert_eq!(d["127.0.0.1"]["class"], "loopback", "{d}");
    assert!(d.get("other").is_none(), "{d}");
    let total: u64 = counts.iter().sum::<u64>() + lo_count;
    assert_eq!(
        num(current(report, target.pid()), "bytes_out"),
        total * each
    );
    let c = &p["classes"];
    assert_eq!(
        num(&c["zone"], "bytes_out"),
        (counts[0] + counts[2]) * each,
        "{c}"
    );
    assert_eq!(num(&c["rack"], "bytes_out"), counts[1] * each, "{c}");
    assert_eq!(num(&c["loopback"], "bytes_out"), lo_count * each, "{c}");
    assert!(c.get("private").is_none(), "{c}");
    let line = om
        .lines()
        .find(|l| {
            l.starts_with("procnetmon_network_transmit_bytes_total{")
                && l.contains("destination_class=\"rack\"")
                && l.contains("protocol=\"udp\"")
        })
        .unwrap_or_else(|| panic!("no rack series in\n{om}"));
    assert_eq!(
        line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()),
        Some(counts[1] * each),
        "{line}"
    );
    promtool_accepts(&classic);

    // Run 2: at most two hosts apart; the rest (sent after them) in `other`, summing up.
    let mon = Monitor::start(&[
        "-p",
        &pid,
        "--json",
        "-t",
        "2s",
        "--destinations",
        "--destinations-max",
        "2",
    ]);
    target.send_line("go");
    target.expect_line("done");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let report = reports.last().expect("a report");
    let d = &report["processes"][&pid]["destinations"];
    let hosts = d.as_object().expect("destinations object");
    assert_eq!(hosts.len(), 3, "{d}");
    assert_eq!(num(&d[&ips[0]], "bytes_out"), counts[0] * each, "{d}");
    assert_eq!(num(&d[&ips[1]], "bytes_out"), counts[1] * each, "{d}");
    assert!(d[&ips[0]].get("class").is_none(), "classes are off: {d}");
    assert_eq!(num(&d["other"], "hosts"), 2, "{d}");
    assert_eq!(
        num(&d["other"], "bytes_out"),
        (counts[2] + lo_count) * each,
        "{d}"
    );
    assert_eq!(num(&d["other"], "packets_out"), counts[2] + lo_count, "{d}");
    let sum: u64 = hosts.values().map(|h| num(h, "bytes_out")).sum();
    assert_eq!(sum, num(current(report, target.pid()), "bytes_out"));
    drop(target);
    drop(sinks);
    drop(lo);
}

/// The target asks a DNS server in another namespace for a name (from an unconnected UDP
/// socket), then sends to the address it got: the destination carries that name, and its
/// bytes are the query and datagrams out, the answer in.
#[test]
fn dns_answer_names_the_peer() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 84);
    let dns = Proc::peer(
        &[
            "dns-server",
            &format!("{}:53", v.ip_b),
            "peer.pnm.test",
            &v.ip_b,
        ],
        None,
        Some(&b),
    );
    dns.expect_line("ready");
    let sink = Proc::peer(
        &["udp-recv", &format!("{}:7801", v.ip_b), "1000000"],
        None,
        Some(&b),
    );
    sink.expect_line("ready");
    let cg = Cgroup::new();
    let mut target = Proc::peer(
        &[
            "resolve-send",
            &format!("{}:53", v.ip_b),
            "peer.pnm.test",
            "7801",
            "10",
            "200",
        ],
        Some(&cg),
        Some(&a),
    );
    target.expect_line("ready");
    let pid = target.pid().to_string();
    let mon = Monitor::start(&["-p", &pid, "--json", "-t", "2s", "--destinations"]);
    target.send_line("go");
    target.expect_line("done");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let d = &reports.last().expect("a report")["processes"][&pid]["destinations"][&v.ip_b];
    assert_eq!(d["name"], "peer.pnm.test", "{d}");
    // Query: 12-byte header + "peer.pnm.test" as labels (15) + type and class (4) = 31;
    // the answer adds 16 (pointer, type, class, TTL, length, address).
    assert_eq!(
        num(d, "bytes_out"),
        udp4_bytes(31) + 10 * udp4_bytes(200),
        "{d}"
    );
    assert_eq!(num(d, "bytes_in"), udp4_bytes(47), "{d}");
}

/// Issue 26, as an attacker would: targets A and B (`-p A,B --destinations`); A asks the
/// resolver for good.example (→ 127.0.0.66), then the resolver sends A an answer it never
/// asked for (evil.example → 127.0.0.77); A and B both send to both addresses. Only A's host
/// 127.0.0.66 is named; the unsolicited answer names nothing and is counted as unmatched (in
/// JSON and on /metrics).
#[test]
fn dns_names_are_per_target_and_only_for_questions_asked() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 91);
    let resolver = format!("{}:53", v.ip_b);
    let mut dns = Proc::peer(
        &["dns-server", &resolver, "good.example", "127.0.0.66"],
        None,
        Some(&b),
    );
    dns.expect_line("ready");
    let client = |bind: &str| {
        let p = Proc::peer(&["dns-client", &resolver, bind], None, Some(&a));
        p.expect_line("ready");
        p
    };
    let (mut ta, mut tb) = (client("0.0.0.0:5391"), client("0.0.0.0:0"));
    let pids = format!("{},{}", ta.pid(), tb.pid());
    let mon = Monitor::start(&[
        "-p",
        &pids,
        "--json",
        "-t",
        "3s",
        "--destinations",
        "--metrics-addr",
        "127.0.0.1:9891",
    ]);
    ta.send_line("ask good.example 9 5 100");
    ta.expect_line("done 127.0.0.66 0");
    // (0: nothing else reached its socket before the answer.)
    dns.send_line(&format!("evil {}:5391 evil.example 127.0.0.77", v.ip_a));
    dns.expect_line("sent");
    for t in [&mut ta, &mut tb] {
        for ip in ["127.0.0.66", "127.0.0.77"] {
            t.send_line(&format!("send {ip} 9 5 100"));
            t.expect_line("done");
        }
    }
    let metrics = scrape(9891, "text/plain");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let last = reports.last().expect("a report");
    let (pa, pb) = (
        &last["processes"][ta.pid().to_string()],
        &last["processes"][tb.pid().to_string()],
    );
    let name = |p: &serde_json::Value, ip: &str| p["destinations"][ip]["name"].clone();
    assert_eq!(name(pa, "127.0.0.66"), "good.example", "{pa}");
    assert!(
        name(pa, "127.0.0.77").is_null(),
        "unsolicited answer named a host: {pa}"
    );
    assert!(
        name(pb, "127.0.0.66").is_null(),
        "A's name leaked to B: {pb}"
    );
    assert!(name(pb, "127.0.0.77").is_null(), "{pb}");
    // Every host carries its bytes either way: 10 datagrams of 100 to each.
    for p in [pa, pb] {
        assert_eq!(
            num(&p["destinations"]["127.0.0.77"], "bytes_out"),
            5 * udp4_bytes(100)
        );
    }
    assert_eq!(
        (num(pa, "dns_unmatched"), num(pa, "dns_dropped")),
        (1, 0),
        "{pa}"
    );
    assert_eq!(
        (num(pb, "dns_unmatched"), num(pb, "dns_dropped")),
        (0, 0),
        "{pb}"
    );
    // /metrics was read after the unsolicited answer, at most one interval behind.
    assert!(
        metrics.contains("procnetmon_dns_unmatched_total 1\n")
            || metrics.contains("procnetmon_dns_unmatched_total 0\n"),
        "{metrics}"
    );
}

/// Resident memory of process `pid` in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// CPU time (user + system) of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// Issue 26: a flood of unsolicited answers from port 53 of the target's own resolver, each
/// with its own name and address (200,000; `PNM_DNS_FLOOD` lowers it in the emulated VMs),
/// adds under 16 MiB to the agent's resident memory, leaves the byte counts exact (the
/// target's totals equal its veth's IP bytes both ways) and the answers counted as
/// unmatched, and a real answer afterwards still names its host. The kernel never hands
/// those answers up (no query of that socket with that ID): the flood costs the agent nothing.
#[test]
fn a_flood_of_unsolicited_answers_names_nothing_and_costs_little() {
    if skip_unless_root() {
        return;
    }
    let flood: u64 = std::env::var("PNM_DNS_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 92);
    let resolver = format!("{}:53", v.ip_b);
    let mut dns = Proc::peer(
        &["dns-server", &resolver, "late.pnm.test", &v.ip_b],
        None,
        Some(&b),
    );
    dns.expect_line("ready");
    let sink = Proc::peer(
        &["udp-recv", &format!("{}:7892", v.ip_b), "1000000000"],
        None,
        Some(&b),
    );
    sink.expect_line("ready");
    let mut target = Proc::peer(&["dns-client", &resolver, "0.0.0.0:5392"], None, Some(&a));
    target.expect_line("ready");
    let pid = target.pid().to_string();
    let mut mon = Monitor::start(&[
        "-p",
        &pid,
        "--json",
        "-c",
        "-t",
        "120s",
        "--interval",
        "500ms",
        "--destinations",
    ]);
    mon.next_report();
    let (rss0, cpu0) = (rss_kib(mon.pid()), cpu_ticks(mon.pid()));
    let t0 = std::time::Instant::now();
    dns.send_line(&format!("flood {}:5392 {flood}", v.ip_a));
    dns.expect_line("sent");
    let flood_took = t0.elapsed();
    mon.next_report();
    mon.next_report();
    let (rss1, cpu1) = (rss_kib(mon.pid()), cpu_ticks(mon.pid()));
    target.send_line("ask late.pnm.test 7892 10 200");
    let done = target
        .next_line(Duration::from_secs(60))
        .expect("the real answer arrives");
    assert!(done.starts_with(&format!("done {} ", v.ip_b)), "{done}");
    let named = mon
        .report_where(|r| r["processes"][&pid]["destinations"][&v.ip_b]["name"] == "late.pnm.test");
    let unmatched = num(&named["processes"][&pid], "dns_unmatched");
    let (status, reports, err) = mon.stop();
    assert!(status.success(), "{err:?}");
    let p = &reports.last().expect("a report")["processes"][&pid];
    let link = a.link_stats("eth0");
    assert_eq!(num(current_of(p), "bytes_in"), link.ip_rx(), "{p}");
    assert_eq!(num(current_of(p), "bytes_out"), link.ip_tx(), "{p}");
    // What reached the target's socket was counted, and none of it named anything.
    assert!(
        unmatched > 0 && unmatched <= flood,
        "unmatched {unmatched} of {flood}"
    );
    assert_eq!(num(p, "dns_dropped"), 0, "{p}");
    let named_hosts = p["destinations"]
        .as_object()
        .expect("destinations")
        .values()
        .filter(|d| !d["name"].is_null())
        .count();
    assert_eq!(named_hosts, 1, "{p}");
    let grew = rss1.saturating_sub(rss0);
    eprintln!(
        "pnm-info: DNS flood of {flood} answers ({unmatched} reached the socket) in {flood_took:?}: agent RSS {rss0} → {rss1} KiB (+{grew} KiB), CPU {} ticks",
        cpu1 - cpu0
    );
    assert!(grew < 16 * 1024, "RSS grew {grew} KiB");
}

fn current_of(p: &serde_json::Value) -> &serde_json::Value {
    &p["current"]
}

/// TCP, like `curl` fetching from three servers: a shell (the target) runs a client against a
/// server behind each of three veths. Each server's bytes in the target's `destinations` equal
/// that veth's own IP bytes (nothing else crosses it), both ways, packets too.
#[test]
fn tcp_per_host_matches_each_veth() {
    if skip_unless_root() {
        return;
    }
    let a = Netns::new(false);
    let peers: Vec<(Netns, Veth)> = (85..=87)
        .map(|subnet| {
            let b = Netns::new(false);
            let v = Veth::new(&a, &format!("eth{subnet}"), &b, "eth0", subnet);
            (b, v)
        })
        .collect();
    let mut servers = Vec::new();
    for (b, v) in &peers {
        let s = Proc::peer(&["tcp-server", &format!("{}:7101", v.ip_b)], None, Some(b));
        s.expect_line("ready");
        servers.push(s);
    }
    let peer = procnetmon2_integration::bin("pnm-peer");
    let peer = peer.to_str().expect("utf8");
    let sizes = [
        (100_000_u64, 300_000_u64),
        (20_000, 700_000),
        (5_000, 50_000),
    ];
    let mut script = String::from("echo started; read go; ");
    for ((_, v), (up, down)) in peers.iter().zip(sizes) {
        script.push_str(&format!(
            "{peer} tcp-client {}:7101 {up} {down} 0 1 >/dev/null; ",
            v.ip_b
        ));
    }
    script.push_str("echo finished; read end");
    let cg = Cgroup::new();
    let mut sh = Proc::spawn(
        std::path::Path::new("sh"),
        &["-c", &script],
        Some(&cg),
        Some(&a),
    );
    sh.expect_line("started");
    let pid = sh.pid().to_string();
    let before: Vec<_> = peers.iter().map(|(_, v)| a.link_stats(&v.a)).collect();
    let mon = Monitor::start(&["-p", &pid, "--json", "-t", "3s", "--destinations"]);
    sh.send_line("go");
    sh.expect_line("finished");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let d = &reports.last().expect("a report")["processes"][&pid]["destinations"];
    for (((_, v), b), (up, down)) in peers.iter().zip(&before).zip(sizes) {
        let delta = a.link_stats(&v.a).since(b);
        let h = &d[&v.ip_b];
        assert_eq!(num(h, "bytes_out"), delta.ip_tx(), "{}: {h}", v.ip_b);
        assert_eq!(num(h, "bytes_in"), delta.ip_rx(), "{}: {h}", v.ip_b);
        assert_eq!(num(h, "packets_out"), delta.tx_packets, "{}: {h}", v.ip_b);
        assert_eq!(num(h, "packets_in"), delta.rx_packets, "{}: {h}", v.ip_b);
        assert!(
            num(h, "bytes_out") > up + 24 && num(h, "bytes_in") > down,
            "{h}"
        );
    }
    sh.close_stdin();
}

/// `--all` (node-wide) with classes: two workloads (cgroups this test creates), each sending
/// from one UDP socket to peers in two classes. Each workload's per-class bytes are its
/// datagrams to that class (payload + IPv4/UDP headers), its total their sum; the metrics page
/// splits the workloads' counters by `destination_class` and promtool accepts it.
#[test]
fn node_wide_workloads_per_class() {
    if skip_unless_root() {
        return;
    }
    let a = Netns::new(false);
    let peers: Vec<(Netns, Veth)> = (84..=85)
        .map(|subnet| {
            let b = Netns::new(false);
            let v = Veth::new(&a, &format!("eth{subnet}"), &b, "eth0", subnet);
            (b, v)
        })
        .collect();
    let mut sinks = Vec::new();
    for (b, v) in &peers {
        let s = Proc::peer(
            &["udp-recv", &format!("{}:7002", v.ip_b), "1000000"],
            None,
            Some(b),
        );
        s.expect_line("ready");
        sinks.push(s);
    }
    let ips: Vec<String> = peers.iter().map(|(_, v)| v.ip_b.clone()).collect();
    // Per workload: datagrams to (near, far).
    let plan = [(7_u64, 13_u64), (21, 4)];
    let cgroups = [Cgroup::new(), Cgroup::new()];
    let mut senders: Vec<Proc> = plan
        .iter()
        .zip(&cgroups)
        .map(|((near, far), cg)| {
            let args = [
                "udp-multi".to_string(),
                SIZE.to_string(),
                format!("{}:7002={near}", ips[0]),
                format!("{}:7002={far}", ips[1]),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let p = Proc::peer(&args, Some(cg), Some(&a));
            p.expect_line("ready");
            p
        })
        .collect();
    let port = 19_900 + (std::process::id() % 90) as u16;
    let maddr = format!("127.0.0.1:{port}");
    let near = format!("near={}", net24(&ips[0]));
    let far = format!("far={}", net24(&ips[1]));
    let mon = Monitor::start(&[
        "--all",
        "--json",
        "-t",
        "3s",
        "--interval",
        "200ms",
        "--class",
        &near,
        "--class",
        &far,
        "--metrics-addr",
        &maddr,
    ]);
    for s in &mut senders {
        s.send_line("go");
        s.expect_line("done");
    }
    thread::sleep(Duration::from_millis(700));
    let om = scrape(port, "application/openmetrics-text;version=1.0.0");
    let classic = scrape(port, "text/plain");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let report = reports.last().expect("a report");
    let workloads = report["workloads"].as_object().expect("workloads");
    let each = udp4_bytes(SIZE);
    for ((n_near, n_far), cg) in plan.iter().zip(&cgroups) {
        let rel = cg.rel();
        let (name, w) = workloads
            .iter()
            .find(|(_, v)| v["cgroup"] == rel.as_str())
            .unwrap_or_else(|| panic!("no workload for {rel}: {report}"));
        let c = &w["classes"];
        assert_eq!(num(&c["near"], "bytes_out"), n_near * each, "{name}: {c}");
        assert_eq!(num(&c["near"], "packets_out"), *n_near, "{name}: {c}");
        assert_eq!(num(&c["far"], "bytes_out"), n_far * each, "{name}: {c}");
        assert_eq!(num(&c["far"], "packets_out"), *n_far, "{name}: {c}");
        assert_eq!(c.as_object().map(|o| o.len()), Some(2), "{name}: {c}");
        assert_eq!(
            num(&w["current"], "bytes_out"),
            (n_near + n_far) * each,
            "{name}: {w}"
        );
        // The metrics page: this workload's UDP bytes towards `far`.
        let line = om
            .lines()
            .find(|l| {
                l.starts_with("procnetmon_network_transmit_bytes_total{")
                    && l.contains(&format!("cgroup=\"{name}\""))
                    && l.contains("destination_class=\"far\"")
                    && l.contains("protocol=\"udp\"")
            })
            .unwrap_or_else(|| panic!("no far series of {name} in\n{om}"));
        assert_eq!(
            line.rsplit(' ').next().and_then(|v| v.parse::<u64>().ok()),
            Some(n_far * each),
            "{line}"
        );
    }
    promtool_accepts(&classic);
    drop(senders);
    drop(sinks);
}

/// `--all --destinations`: two workloads (cgroups whose processes live in network namespaces
/// of their own) send from one UDP socket each to peers in different /24s, with at most two
/// hosts apart per workload. Each kept host's bytes are its datagrams (payload + IPv4/UDP
/// headers) and what its veth carried; the busy workload's third host is in its `other`, which
/// adds up to its total; the quiet workload keeps both its hosts (the busy one takes none of
/// its room). When the busy workload ends (its cgroup removed, its keys drained from the
/// kernel), its hosts stay as they were in the later reports.
#[test]
fn node_wide_destinations_per_workload() {
    if skip_unless_root() {
        return;
    }
    // (workload's datagrams per peer, peer subnets)
    let plan: [&[(u64, u8)]; 2] = [&[(10, 88), (20, 89), (30, 90)], &[(7, 91), (9, 92)]];
    let workloads: Vec<(Netns, Vec<(Netns, Veth)>)> = plan
        .iter()
        .map(|peers| {
            let w = Netns::new(false);
            let peers = peers
                .iter()
                .map(|(_, subnet)| {
                    let b = Netns::new(false);
                    let v = Veth::new(&w, &format!("eth{subnet}"), &b, "eth0", *subnet);
                    (b, v)
                })
                .collect();
            (w, peers)
        })
        .collect();
    let mut sinks = Vec::new();
    for (_, peers) in &workloads {
        for (b, v) in peers {
            let s = Proc::peer(
                &["udp-recv", &format!("{}:7003", v.ip_b), "1000000"],
                None,
                Some(b),
            );
            s.expect_line("ready");
            sinks.push(s);
        }
    }
    let mut cgroups = vec![Cgroup::new(), Cgroup::new()];
    let mut senders: Vec<Proc> = workloads
        .iter()
        .zip(plan)
        .zip(&cgroups)
        .map(|(((w, peers), counts), cg)| {
            let mut args = vec!["udp-multi".to_string(), SIZE.to_string()];
            for ((_, v), (n, _)) in peers.iter().zip(counts) {
                args.push(format!("{}:7003={n}", v.ip_b));
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let p = Proc::peer(&args, Some(cg), Some(w));
            p.expect_line("ready");
            p
        })
        .collect();
    let rels: Vec<String> = cgroups.iter().map(Cgroup::rel).collect();
    let before: Vec<Vec<_>> = workloads
        .iter()
        .map(|(w, peers)| peers.iter().map(|(_, v)| w.link_stats(&v.a)).collect())
        .collect();
    let mut mon = Monitor::start(&[
        "--all",
        "--json",
        "--interval",
        "200ms",
        "--destinations",
        "--destinations-max",
        "2",
    ]);
    for s in &mut senders {
        s.send_line("go");
        s.expect_line("done");
    }
    let each = udp4_bytes(SIZE);
    let sent: Vec<u64> = plan
        .iter()
        .map(|c| c.iter().map(|(n, _)| n * each).sum())
        .collect();
    let workload = |r: &serde_json::Value, i: usize| -> Option<serde_json::Value> {
        r["workloads"]
            .as_object()?
            .values()
            .find(|w| w["cgroup"] == rels[i].as_str())
            .cloned()
    };
    let all_counted = |r: &serde_json::Value| {
        (0..2).all(|i| workload(r, i).is_some_and(|w| num(&w["current"], "bytes_out") == sent[i]))
    };
    let report = mon.report_where(all_counted);
    let ips =
        |i: usize| -> Vec<String> { workloads[i].1.iter().map(|(_, v)| v.ip_b.clone()).collect() };
    // The busy workload: two hosts apart, the third in `other`.
    let busy = workload(&report, 0).expect("busy workload");
    let d = &busy["destinations"];
    let ip = ips(0);
    for (k, (n, _)) in plan[0].iter().take(2).enumerate() {
        let h = &d[&ip[k]];
        assert_eq!(num(h, "bytes_out"), n * each, "{}: {d}", ip[k]);
        assert_eq!(num(h, "packets_out"), *n, "{}: {d}", ip[k]);
        let veth = workloads[0]
            .0
            .link_stats(&workloads[0].1[k].1.a)
            .since(&before[0][k]);
        assert_eq!(
            num(h, "bytes_out"),
            veth.ip_tx(),
            "{}: veth {veth:?}",
            ip[k]
        );
    }
    assert!(d.get(&ip[2]).is_none(), "past the cap: {d}");
    assert_eq!(num(&d["other"], "hosts"), 2, "{d}");
    assert_eq!(num(&d["other"], "bytes_out"), plan[0][2].0 * each, "{d}");
    assert_eq!(num(&d["other"], "packets_out"), plan[0][2].0, "{d}");
    let rows = d.as_object().expect("destinations object");
    assert_eq!(rows.len(), 3, "{d}");
    let sum: u64 = rows.values().map(|h| num(h, "bytes_out")).sum();
    assert_eq!(sum, sent[0], "{d}");
    // The quiet workload keeps both of its hosts.
    let quiet = workload(&report, 1).expect("quiet workload");
    let d = &quiet["destinations"];
    let ip = ips(1);
    for (k, (n, _)) in plan[1].iter().enumerate() {
        let h = &d[&ip[k]];
        assert_eq!(num(h, "bytes_out"), n * each, "{}: {d}", ip[k]);
        let veth = workloads[1]
            .0
            .link_stats(&workloads[1].1[k].1.a)
            .since(&before[1][k]);
        assert_eq!(
            num(h, "bytes_out"),
            veth.ip_tx(),
            "{}: veth {veth:?}",
            ip[k]
        );
    }
    assert!(d.get("other").is_none(), "{d}");
    let kept = busy["destinations"].clone();

    // The busy workload ends: its cgroup goes, its keys are drained, its hosts stay.
    let mut busy_sender = senders.remove(0);
    busy_sender.close_stdin();
    assert!(busy_sender.wait().success());
    drop(cgroups.remove(0));
    let gone = mon.report_where(|r| workload(r, 0).is_some_and(|w| w["exited"] == true));
    let ended = workload(&gone, 0).expect("the ended workload");
    for (k, v) in kept.as_object().expect("object") {
        assert_eq!(
            num(&ended["destinations"][k], "bytes_out"),
            num(v, "bytes_out"),
            "{k}: {ended}"
        );
    }
    let (status, _, err) = mon.stop();
    assert!(status.success(), "{err:?}");
    drop(senders);
    drop(sinks);
}
