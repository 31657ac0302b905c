//! Where the bytes go (issue 17): per-remote-host totals, destination classes counted in the
//! kernel, the per-target cap's `other` bucket, names from a DNS answer the target received,
//! and the `destination_class` metrics label. Expected values come from the payloads sent and
//! the IPv4/UDP header formula, never from procnetmon2's own output.

use std::{collections::BTreeMap, rc::Rc, time::Duration};

use procnetmon2_integration::{
    Cgroup, Counts, Link, LinkStats, Monitor, Netns, Peer, Proc, Scenario, Script, Veth,
    metrics::{CLASSIC, OPENMETRICS, free_port, promtool_accepts, sample, scrape, scrape_until},
    num, skip_unless_root, udp4_bytes, workload,
};
use serde_json::Value;

/// Payload of every datagram here.
const SIZE: u64 = 300;
/// IP bytes of one such datagram.
const EACH: u64 = udp4_bytes(SIZE);
/// The transmitted-bytes counter of the metrics page.
const TX_BYTES: &str = "procnetmon_network_transmit_bytes_total";

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

/// Namespace `a` with a link to a new peer namespace on each of `subnets` (`eth<subnet>` on
/// a's side), each peer with a UDP sink on `port`.
fn star(s: &Scenario, a: &Rc<Netns>, subnets: &[u8], port: u16) -> Vec<Link> {
    subnets
        .iter()
        .map(|&n| {
            let link = s.link_from(a, &format!("eth{n}"), n);
            s.background(Peer::udp_sink(&link.addr_b(port)).in_netns(&link.b));
            link
        })
        .collect()
}

/// A UDP destination row's counts: `n` datagrams out.
fn sent(n: u64) -> Counts {
    Counts::udp4_out(n, SIZE)
}

/// The value of the UDP transmit series selected by `needles` on a metrics page.
fn udp_tx(page: &str, needles: &[&str]) -> Option<u64> {
    let mut all = vec!["protocol=\"udp\""];
    all.extend_from_slice(needles);
    sample(page, TX_BYTES, &all)
}

/// Datagrams to each of the three peers, in order, and to loopback.
const COUNTS: [u64; 3] = [10, 20, 30];
const LO_COUNT: u64 = 5;

/// Two agents side by side, one naming the target by PID, one as its whole cgroup `rel`
/// (from 5.15 the cgroup path, with no socket state: its classes come from the per-CPU cache,
/// DNS answers are handed up under its slot), each with `extra` arguments: (the report group
/// and key its row is under, the monitor).
fn by_pid_and_cgroup<'k>(
    pid: &'k str,
    rel: &'k str,
    extra: &[&str],
) -> [(&'static str, &'k str, Monitor); 2] {
    [
        ("processes", pid, ["-p", pid]),
        ("workloads", rel, ["--cgroup", rel]),
    ]
    .map(|(group, key, who)| {
        let mut args = who.to_vec();
        args.extend_from_slice(extra);
        (group, key, Monitor::start(&args))
    })
}

/// The row of a whole-cgroup target `rel` in a report.
fn workload_row<'r>(report: &'r Value, rel: &str) -> &'r Value {
    workload(report, rel).unwrap_or_else(|| panic!("no workload {rel} in {report}"))
}

/// Run 1 of `per_host_classes_metrics_and_the_cap`: hosts, classes (`zone` a /16 over the
/// first peer and the third, `rack` a /24 over the second), and the metrics page; the same
/// classes counted for the target's whole cgroup `rel` by a second agent beside it.
fn hosts_classes_and_metrics(target: &mut Proc, ips: &[String], rel: &str) {
    let (pid, port) = (target.pid().to_string(), free_port());
    let (zone, rack) = (
        format!("zone={}", net16(&ips[0])),
        format!("rack={}", net24(&ips[1])),
    );
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
    let whole = Monitor::start(&[
        "--cgroup", rel, "--json", "-t", "3s", "--class", &zone, "--class", &rack,
    ]);
    target.go("done");
    let rack_bytes = COUNTS[1] * EACH;
    let rack_series = |t: &str| udp_tx(t, &["destination_class=\"rack\""]);
    let om = scrape_until(port, OPENMETRICS, 3, |t| rack_series(t) == Some(rack_bytes));
    let classic = scrape_until(port, CLASSIC, 3, |t| !t.is_empty());
    let run = mon.finish_ok();
    let p = &run.last()["processes"][&pid];
    let d = &p["destinations"];
    for (ip, (n, class)) in ips.iter().zip(COUNTS.iter().zip(["zone", "rack", "zone"])) {
        assert_eq!(Counts::of(&d[ip]), sent(*n), "{ip}: {d}");
        assert_eq!(d[ip]["class"], class, "{ip}: {d}");
    }
    assert_eq!(Counts::of(&d["127.0.0.1"]), sent(LO_COUNT), "{d}");
    assert_eq!(d["127.0.0.1"]["class"], "loopback", "{d}");
    assert!(d.get("other").is_none(), "{d}");
    let total = COUNTS.iter().sum::<u64>() + LO_COUNT;
    assert_eq!(Counts::of(run.current(target.pid())), sent(total));
    let c = &p["classes"];
    assert_eq!(Counts::of(&c["zone"]), sent(COUNTS[0] + COUNTS[2]), "{c}");
    assert_eq!(Counts::of(&c["rack"]), sent(COUNTS[1]), "{c}");
    assert_eq!(Counts::of(&c["loopback"]), sent(LO_COUNT), "{c}");
    assert_eq!(c.as_object().map(|o| o.len()), Some(3), "{c}");
    let whole = whole.finish_ok();
    let w = workload_row(whole.last(), rel);
    for class in ["zone", "rack", "loopback"] {
        assert_eq!(
            Counts::of(&w["classes"][class]),
            Counts::of(&c[class]),
            "{class}: {w}"
        );
    }
    assert_eq!(Counts::of(&w["current"]), sent(total), "{w}");
    assert_eq!(rack_series(&om), Some(rack_bytes), "{om}");
    promtool_accepts(&classic);
}

/// Run 2: at most two hosts apart; the rest (sent after them) in `other`, summing up.
fn capped_hosts(target: &mut Proc, ips: &[String]) {
    let pid = target.pid().to_string();
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
    target.go("done");
    let run = mon.finish_ok();
    let d = &run.last()["processes"][&pid]["destinations"];
    assert_eq!(d.as_object().map(|o| o.len()), Some(3), "{d}");
    assert_eq!(Counts::of(&d[&ips[0]]), sent(COUNTS[0]), "{d}");
    assert_eq!(Counts::of(&d[&ips[1]]), sent(COUNTS[1]), "{d}");
    assert!(d[&ips[0]].get("class").is_none(), "classes are off: {d}");
    assert_eq!(num(&d["other"], "hosts"), 2, "{d}");
    assert_eq!(Counts::of(&d["other"]), sent(COUNTS[2] + LO_COUNT), "{d}");
    let total = COUNTS.iter().sum::<u64>() + LO_COUNT;
    assert_eq!(Counts::of(run.current(target.pid())), sent(total));
}

/// A target with one unconnected UDP socket sends to three peers in three /24s and to
/// loopback. Per host: exactly each peer's datagrams; classes from `--class` (a /16 and an
/// overlapping /24: the /24 wins) give the same sums; the metrics page splits the counters
/// by `destination_class` and promtool accepts it. A second run with `--destinations-max 2`
/// keeps the first two hosts apart and sums the rest in `other`.
#[test]
fn per_host_classes_metrics_and_the_cap() {
    let Some(s) = Scenario::new() else { return };
    let a = s.netns();
    let peers = star(&s, &a, &[81, 82, 83], 7001);
    s.background(Peer::udp_sink("127.0.0.1:7001").in_netns(&a));
    let ips: Vec<String> = peers.iter().map(|l| l.veth.ip_b.clone()).collect();
    let mut to: Vec<(String, u64)> = peers.iter().map(|l| l.addr_b(7001)).zip(COUNTS).collect();
    to.push(("127.0.0.1:7001".into(), LO_COUNT));
    let cg = s.cgroup();
    let mut target = Peer::udp_multi(SIZE, &to)
        .in_cgroup(&cg)
        .in_netns(&a)
        .start();
    hosts_classes_and_metrics(&mut target, &ips, &cg.rel());
    capped_hosts(&mut target, &ips);
}

/// The target asks a DNS server in another namespace for a name (from an unconnected UDP
/// socket), then sends to the address it got: the destination carries that name, and its
/// bytes are the query and datagrams out, the answer in.
#[test]
fn dns_answer_names_the_peer() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(84), s.cgroup());
    let ip_b = link.veth.ip_b.clone();
    s.background(Peer::dns_server(&link.addr_b(53), "peer.pnm.test", &ip_b).in_netns(&link.b));
    s.background(Peer::udp_sink(&link.addr_b(7801)).in_netns(&link.b));
    let mut target = Peer::resolve_send(&link.addr_b(53), "peer.pnm.test", 7801, 10, 200)
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();
    let (pid, rel) = (target.pid().to_string(), cg.rel());
    let mons = by_pid_and_cgroup(&pid, &rel, &["--json", "-t", "2s", "--destinations"]);
    target.go("done");
    for (group, key, mon) in mons {
        let run = mon.finish_ok();
        let row = if group == "workloads" {
            workload_row(run.last(), key)
        } else {
            &run.last()[group][key]
        };
        let d = &row["destinations"][&ip_b];
        assert_eq!(d["name"], "peer.pnm.test", "{group}: {d}");
        // Query: 12-byte header + "peer.pnm.test" as labels (15) + type and class (4) = 31;
        // the answer adds 16 (pointer, type, class, TTL, length, address).
        let want = Counts {
            bytes_out: udp4_bytes(31) + 10 * udp4_bytes(200),
            packets_out: 11,
            ..Counts::udp4_in(1, 47)
        };
        assert_eq!(Counts::of(d), want, "{group}: {d}");
    }
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
    let Some(s) = Scenario::new() else { return };
    let a = s.netns();
    let peers: Vec<Link> = [85, 86, 87]
        .into_iter()
        .map(|n| s.link_from(&a, &format!("eth{n}"), n))
        .collect();
    for l in &peers {
        s.background(Peer::tcp_server(&l.addr_b(7101)).in_netns(&l.b));
    }
    let sizes = [
        (100_000_u64, 300_000_u64),
        (20_000, 700_000),
        (5_000, 50_000),
    ];
    let clients: Vec<Peer<'_>> = peers
        .iter()
        .zip(sizes)
        .map(|(l, (up, down))| Peer::tcp_client(&l.addr_b(7101), up, down))
        .collect();
    let cg = s.cgroup();
    let mut sh = Script::new()
        .step("finished", &clients)
        .in_cgroup(&cg)
        .in_netns(&a)
        .start();
    let (pid, rel) = (sh.pid().to_string(), cg.rel());
    let before: Vec<_> = peers.iter().map(Link::stats).collect();
    // By PID and as its whole cgroup (the cgroup path from 5.15), side by side.
    let mons = by_pid_and_cgroup(&pid, &rel, &["--json", "-t", "3s", "--destinations"]);
    sh.go("finished");
    let runs: Vec<_> = mons
        .into_iter()
        .map(|(group, key, mon)| (group, key, mon.finish_ok()))
        .collect();
    for (group, key, run) in &runs {
        let row = if *group == "workloads" {
            workload_row(run.last(), key)
        } else {
            &run.last()[*group][*key]
        };
        let d = &row["destinations"];
        for ((l, b), (up, down)) in peers.iter().zip(&before).zip(sizes) {
            let h = &d[&l.veth.ip_b];
            assert_eq!(
                Counts::of(h),
                l.since(b).ip(),
                "{group} {}: {h}",
                l.veth.ip_b
            );
            assert!(
                num(h, "bytes_out") > up + 24 && num(h, "bytes_in") > down,
                "{group}: {h}"
            );
        }
    }
}

/// A workload for the node-wide tests: a cgroup of its own whose one `udp-multi` sender (in
/// namespace `ns`) sends `n` datagrams to each destination on every "go".
fn udp_workload(cg: &Cgroup, ns: &Netns, to: &[(String, u64)]) -> Proc {
    Peer::udp_multi(SIZE, to).in_cgroup(cg).in_netns(ns).start()
}

/// `--all` (node-wide) with classes: two workloads (cgroups this test creates), each sending
/// from one UDP socket to peers in two classes. Each workload's per-class bytes are its
/// datagrams to that class (payload + IPv4/UDP headers), its total their sum; the metrics page
/// splits the workloads' counters by `destination_class` and promtool accepts it.
#[test]
fn node_wide_workloads_per_class() {
    let Some(s) = Scenario::new() else { return };
    let a = s.netns();
    let peers = star(&s, &a, &[84, 85], 7002);
    // Per workload: datagrams to (near, far).
    let plan = [(7_u64, 13_u64), (21, 4)];
    let cgroups = [s.cgroup(), s.cgroup()];
    let mut senders: Vec<_> = plan
        .iter()
        .zip(&cgroups)
        .map(|((near, far), cg)| {
            let to = [
                (peers[0].addr_b(7002), *near),
                (peers[1].addr_b(7002), *far),
            ];
            udp_workload(cg, &a, &to)
        })
        .collect();
    let port = free_port();
    let maddr = format!("127.0.0.1:{port}");
    let near = format!("near={}", net24(&peers[0].veth.ip_b));
    let far = format!("far={}", net24(&peers[1].veth.ip_b));
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
    for w in &mut senders {
        w.go("done");
    }
    let far_series =
        |label_end: &str, page: &str| udp_tx(page, &[label_end, "destination_class=\"far\""]);
    // The `cgroup` label ends with the cgroup's own name.
    let name_of = |cg: &Cgroup| format!("{}\"", cg.name());
    let om = scrape_until(port, OPENMETRICS, 3, |t| {
        plan.iter()
            .zip(&cgroups)
            .all(|((_, far), cg)| far_series(&name_of(cg), t) == Some(far * EACH))
    });
    let classic = scrape_until(port, CLASSIC, 3, |t| !t.is_empty());
    let run = mon.finish_ok();
    let report = run.last();
    for ((n_near, n_far), cg) in plan.iter().zip(&cgroups) {
        let w = workload(report, &cg.rel()).unwrap_or_else(|| panic!("no workload: {report}"));
        let c = &w["classes"];
        assert_eq!(Counts::of(&c["near"]), sent(*n_near), "{c}");
        assert_eq!(Counts::of(&c["far"]), sent(*n_far), "{c}");
        assert_eq!(c.as_object().map(|o| o.len()), Some(2), "{c}");
        assert_eq!(Counts::of(&w["current"]), sent(n_near + n_far), "{w}");
        // The metrics page: this workload's UDP bytes towards `far`.
        assert_eq!(far_series(&name_of(cg), &om), Some(n_far * EACH), "{om}");
    }
    promtool_accepts(&classic);
}

/// The workload of cgroup `rel` in a report (cloned), if there.
fn workload_of(r: &Value, rel: &str) -> Option<Value> {
    workload(r, rel).cloned()
}

/// A workload's destination rows: the counts of each (rates left out: they move on).
fn hosts(w: &Value) -> BTreeMap<String, Counts> {
    w["destinations"]
        .as_object()
        .expect("destinations")
        .iter()
        .map(|(k, v)| (k.clone(), Counts::of(v)))
        .collect()
}

/// Each host behind `peers` has its own row in destinations `d`: exactly its datagrams
/// (`plan`, in the same order), which is also what its veth carried since `before`.
fn hosts_kept_exactly(d: &Value, peers: &[Link], before: &[LinkStats], plan: &[(u64, u8)]) {
    for ((l, b), (n, _)) in peers.iter().zip(before).zip(plan) {
        let row = Counts::of(&d[&l.veth.ip_b]);
        assert_eq!(row, sent(*n), "{}: {d}", l.veth.ip_b);
        assert_eq!(row, l.since(b).ip(), "{}: veth", l.veth.ip_b);
    }
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
    let Some(s) = Scenario::new() else { return };
    // Datagrams per peer of each workload (each peer on a subnet of its own).
    let plan: [&[(u64, u8)]; 2] = [&[(10, 88), (20, 89), (30, 90)], &[(7, 91), (9, 92)]];
    let homes: Vec<Rc<Netns>> = plan.iter().map(|_| s.netns()).collect();
    let peers: Vec<Vec<Link>> = plan
        .iter()
        .zip(&homes)
        .map(|(p, home)| {
            let subnets: Vec<u8> = p.iter().map(|(_, n)| *n).collect();
            star(&s, home, &subnets, 7003)
        })
        .collect();
    // The busy workload's cgroup is removed mid-test: not the scenario's.
    let mut cgroups = vec![Cgroup::new(), Cgroup::new()];
    let mut senders: Vec<_> = (0..2)
        .map(|i| {
            let to: Vec<(String, u64)> = peers[i]
                .iter()
                .zip(plan[i])
                .map(|(l, (n, _))| (l.addr_b(7003), *n))
                .collect();
            udp_workload(&cgroups[i], &homes[i], &to)
        })
        .collect();
    let rels: Vec<String> = cgroups.iter().map(Cgroup::rel).collect();
    let before: Vec<Vec<_>> = peers
        .iter()
        .map(|p| p.iter().map(Link::stats).collect())
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
    for w in &mut senders {
        w.go("done");
    }
    let total: Vec<u64> = plan
        .iter()
        .map(|p| p.iter().map(|(n, _)| n * EACH).sum())
        .collect();
    let out =
        |r: &Value, i: usize| workload(r, &rels[i]).map_or(0, |w| num(&w["current"], "bytes_out"));
    // Counted so far: never more than was sent.
    let report = mon.report_until(
        |r| (0..2).all(|i| out(r, i) <= total[i]),
        |r| (0..2).all(|i| out(r, i) == total[i]),
    );

    // The busy workload: two hosts apart (each also what its veth carried), the third in
    // `other`, all three adding up to its total.
    let busy = workload_of(&report, &rels[0]).expect("busy workload");
    let d = &busy["destinations"];
    hosts_kept_exactly(d, &peers[0][..2], &before[0], plan[0]);
    assert!(d.get(&peers[0][2].veth.ip_b).is_none(), "past the cap: {d}");
    assert_eq!(num(&d["other"], "hosts"), 2, "{d}");
    assert_eq!(Counts::of(&d["other"]), sent(plan[0][2].0), "{d}");
    let rows = d.as_object().expect("destinations object");
    assert_eq!(rows.len(), 3, "{d}");
    let sum: u64 = rows.values().map(|h| num(h, "bytes_out")).sum();
    assert_eq!(sum, total[0], "{d}");
    // The quiet workload keeps both of its hosts.
    let quiet = workload_of(&report, &rels[1]).expect("quiet workload");
    let d = &quiet["destinations"];
    hosts_kept_exactly(d, &peers[1], &before[1], plan[1]);
    assert!(d.get("other").is_none(), "{d}");

    // The busy workload ends: its cgroup goes, its keys are drained, its hosts stay.
    let kept = hosts(&busy);
    let mut busy_sender = senders.remove(0);
    busy_sender.close_stdin();
    assert!(busy_sender.wait().success());
    drop(cgroups.remove(0));
    let unchanged = |r: &Value| workload_of(r, &rels[0]).is_some_and(|w| hosts(&w) == kept);
    let gone = mon.report_until(unchanged, |r| {
        workload_of(r, &rels[0]).is_some_and(|w| w["exited"] == true)
    });
    assert!(unchanged(&gone), "the ended workload's hosts stay: {gone}");
    mon.stop_ok();
}
