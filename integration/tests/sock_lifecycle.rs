//! Connection lifetimes: live TCP/UDP counts (kernel gauges), short connections whose bytes
//! land after release, and `--details` against `ss`.
//!
//! Each gauge and byte test watches its target two ways at once, with two agents side by
//! side: by PID (the socket path: each socket's state names its target) and as its whole
//! cgroup (`--cgroup`: from 5.15 the cgroup path, counted in the cgroup's own storage with no
//! per-socket state; before, the socket path too).

use std::{collections::BTreeSet, path::Path};

use procnetmon2_integration::{
    Counts, Monitor, Peer, Proc, Scenario, between, current, env_count, num, workload,
};
use serde_json::Value;

/// How a monitor names its target.
#[derive(Clone, Copy, Debug)]
enum Watch<'a> {
    /// `-p PID`.
    Pid(u32),
    /// `--cgroup PATH` (relative to the cgroup2 mount).
    Cgroup(&'a str),
}

impl Watch<'_> {
    /// Starts a monitor of this target with `extra` arguments.
    fn start(self, extra: &[&str]) -> Monitor {
        let pid;
        let mut args = match self {
            Watch::Pid(p) => {
                pid = p.to_string();
                vec!["-p", pid.as_str()]
            }
            Watch::Cgroup(rel) => vec!["--cgroup", rel],
        };
        args.extend_from_slice(extra);
        Monitor::start(&args)
    }

    /// The target's `current` object in a report.
    fn row(self, report: &Value) -> &Value {
        match self {
            Watch::Pid(p) => current(report, p),
            Watch::Cgroup(rel) => {
                let w = workload(report, rel).unwrap_or_else(|| panic!("no {rel} in {report}"));
                &w["current"]
            }
        }
    }

    /// (TCP, UDP) connections now.
    fn conns(self, report: &Value) -> [u64; 2] {
        let c = self.row(report);
        [num(c, "tcp_connections"), num(c, "udp_connections")]
    }
}

/// N TCP connections and M UDP sockets opened before the monitor: exactly N and M, falling
/// as they close (every report on the way shows the old count or one between).
#[test]
fn preexisting_connections_are_counted_and_fall_as_they_close() {
    let Some(s) = Scenario::new() else { return };
    for (addr, ns) in [("127.0.0.1:5101", s.netns()), ("[::1]:5102", s.netns_v6())] {
        let cg = s.cgroup();
        let rel = cg.rel();
        s.background(Peer::tcp_server(addr).in_netns(&ns));
        let mut holder = Peer::hold_sockets(addr, 4, 3)
            .in_cgroup(&cg)
            .in_netns(&ns)
            .start();
        let mut mons: Vec<(Watch<'_>, Monitor)> = [Watch::Pid(holder.pid()), Watch::Cgroup(&rel)]
            .into_iter()
            .map(|w| (w, w.start(&["--json", "--interval", "300ms"])))
            .collect();
        for (w, mon) in &mut mons {
            let r = mon.next_report();
            assert_eq!(w.conns(&r), [4, 3], "{w:?}: {r}");
        }
        for (from, to) in [([4, 3], [3, 2]), ([3, 2], [2, 1])] {
            holder.send_line("close one");
            holder.expect_line("closed");
            for (w, mon) in &mut mons {
                mon.report_until(|r| between(w.conns(r), from, to), |r| w.conns(r) == to);
            }
        }
        for (w, mon) in mons {
            let run = mon.stop_ok();
            assert!(!run.logged("ERROR"), "{w:?}: {:?}", run.err);
        }
    }
}

/// Connections accepted by a server count for the server, opened before and during the run.
#[test]
fn accepted_connections_count_for_the_server() {
    let Some(s) = Scenario::new() else { return };
    let (ns, cg) = (s.netns(), s.cgroup());
    let rel = cg.rel();
    let addr = "127.0.0.1:5103";
    let server = Peer::tcp_server(addr).in_cgroup(&cg).in_netns(&ns).start();
    let mut early = Peer::hold_sockets(addr, 2, 0).in_netns(&ns).start();
    let mut mons: Vec<(Watch<'_>, Monitor)> = [Watch::Pid(server.pid()), Watch::Cgroup(&rel)]
        .into_iter()
        .map(|w| (w, w.start(&["--json", "--interval", "300ms"])))
        .collect();
    // Every monitor's reports on the way from `from` TCP connections to `to`.
    let all_until = |mons: &mut Vec<(Watch<'_>, Monitor)>, from: u64, to: u64| {
        for (w, mon) in mons.iter_mut() {
            let tcp = |r: &Value| w.conns(r)[0];
            mon.report_until(|r| between([tcp(r)], [from], [to]), |r| tcp(r) == to);
        }
    };
    all_until(&mut mons, 0, 2);
    let late = Peer::hold_sockets(addr, 3, 0).in_netns(&ns).start();
    all_until(&mut mons, 2, 5);
    // The client closes: the server's sockets leave ESTABLISHED (CLOSE_WAIT) and stop counting.
    drop(late);
    all_until(&mut mons, 5, 2);
    early.close_stdin();
    for (_, mon) in mons {
        mon.stop_ok();
    }
}

/// UDP sockets made during the run count once each however they become bound or connected
/// (bind, bind then connect, connect alone, which binds; sends with and without an address
/// add nothing), and leave as they close. On the cgroup path this is the one state it
/// allocates per UDP socket, at its first bind or connect.
#[test]
fn new_udp_sockets_count_once_and_leave_at_close() {
    let Some(s) = Scenario::new() else { return };
    let (ns, cg) = (s.netns(), s.cgroup());
    let rel = cg.rel();
    let addr = "127.0.0.1:5107";
    s.background(Peer::udp_sink(addr).in_netns(&ns));
    let w = Watch::Cgroup(&rel);
    let mut mon = w.start(&["--json", "--interval", "300ms"]);
    let mut senders: Vec<Proc> = [false, true]
        .into_iter()
        .map(|connected| {
            let p = Peer::udp_send(addr, 3, 100);
            let p = if connected { p.connected() } else { p };
            p.on_go().hold().in_cgroup(&cg).in_netns(&ns).start()
        })
        .collect();
    // bash's /dev/udp: connect() on an unbound socket, which binds it.
    let mut bash = Proc::spawn(
        Path::new("bash"),
        &[
            "-c",
            "exec 3>/dev/udp/127.0.0.1/5107; echo connected; read x; echo hi >&3; echo done; read y",
        ],
        Some(&cg),
        Some(&ns),
    );
    bash.expect_line("connected");
    mon.report_until(|r| w.conns(r)[1] <= 3, |r| w.conns(r)[1] == 3);
    for p in &mut senders {
        p.go("done");
    }
    bash.go("done");
    let r = mon.report_until(
        |r| w.conns(r)[1] == 3,
        |r| num(w.row(r), "packets_out") == 7,
    );
    // Six 100-byte datagrams and bash's "hi\n", 28 bytes of headers each.
    assert_eq!(num(w.row(&r), "bytes_out"), 6 * 128 + 3 + 28, "{r}");
    drop(senders);
    drop(bash);
    mon.report_until(|r| w.conns(r)[1] <= 3, |r| w.conns(r)[1] == 0);
    mon.stop_ok();
}

/// 2,000 short connections in a few seconds: every byte lands in the totals, including the
/// FIN each socket sends after the process released it (the server closes first, so the
/// target's close comes after its last read, and its FIN leaves after sock_release).
/// `PNM_SHORT_CONNECTIONS` lowers the count in emulated VMs (scripts/test-kernels: 200): each
/// connection checks the same thing, and 2,000 take minutes under TCG.
#[test]
fn two_thousand_short_connections_are_exact() {
    let Some(s) = Scenario::new() else { return };
    let n = env_count("PNM_SHORT_CONNECTIONS", 2000);
    let (link, cg) = (s.link(11), s.cgroup());
    let rel = cg.rel();
    s.background(Peer::tcp_server(&link.addr_b(5104)).in_netns(&link.b));
    let mut target = Peer::tcp_client(&link.addr_b(5104), 1000, 3000)
        .server_closes_first()
        .connections(n)
        .on_go()
        .hold()
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();
    let window = ["--json", "-t", "8s", "--interval", "500ms"];
    let mons: Vec<(Watch<'_>, Monitor)> = [Watch::Pid(target.pid()), Watch::Cgroup(&rel)]
        .into_iter()
        .map(|w| (w, w.start(&window)))
        .collect();
    let before = link.stats();
    target.go("done");
    // Let the last FINs and ACKs cross.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mid = link.stats();
    let runs: Vec<_> = mons.into_iter().map(|(w, m)| (w, m.finish_ok())).collect();
    let delta = link.since(&before);
    assert_eq!(
        mid.since(&before),
        delta,
        "traffic after the connections ended"
    );
    for (w, run) in &runs {
        let c = w.row(run.last());
        assert_eq!(Counts::of(c), delta.ip(), "{w:?}: {c}");
        assert!(num(c, "packets_out") >= n * 4, "{w:?}: {c}");
        assert_eq!(num(c, "tcp_connections"), 0, "{w:?}: {c}");
    }
}

/// Normalizes an `ss` address (`0.0.0.0:*`, `*:*`, `[::]:*`, `*:5000`) to ours.
fn norm(a: &str) -> String {
    if a.ends_with(":*") {
        return "*".into();
    }
    a.replacen("*:", "[::]:", 1)
        .replace("[::ffff:", "[")
        .to_string()
}

/// The `--details` rows of process `pid` in a report.
fn details(r: &Value, pid: u32) -> &Vec<Value> {
    r["processes"][pid.to_string()]["connections"]
        .as_array()
        .unwrap_or_else(|| panic!("connections of {pid}: {r}"))
}

/// How many of them are CLOSED.
fn closed(r: &Value, pid: u32) -> usize {
    details(r, pid)
        .iter()
        .filter(|c| c["state"] == "CLOSED")
        .count()
}

/// `--details` lists what `ss -tuanp` shows for the process (unconnected UDP: remote `*`).
#[test]
fn details_match_ss() {
    let Some(s) = Scenario::new() else { return };
    let (ns, cg) = (s.netns_v6(), s.cgroup());
    s.background(Peer::tcp_server("127.0.0.1:5105").in_netns(&ns));
    s.background(Peer::tcp_server("[::1]:5106").in_netns(&ns));
    // Before the run: 2 TCP connections and 2 bound UDP sockets.
    let mut holder = Peer::hold_sockets("127.0.0.1:5105", 2, 2)
        .in_cgroup(&cg)
        .in_netns(&ns)
        .start();
    let pid = holder.pid();
    let mut mon = Monitor::start(&[
        "-p",
        &pid.to_string(),
        "--json",
        "--details",
        "--interval",
        "300ms",
    ]);
    let r = mon.next_report();
    let field = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_owned();
    let ours: BTreeSet<(String, String, String)> = details(&r, pid)
        .iter()
        .map(|c| (field(c, "protocol"), field(c, "local"), field(c, "remote")))
        .collect();
    let ss = ns.exec(&["ss", "-tuanpH"]);
    let theirs: BTreeSet<(String, String, String)> = ss
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_owned(), norm(f[4]), norm(f[5]))
        })
        .collect();
    assert_eq!(ours, theirs, "ss said:\n{ss}\nwe said: {r}");
    assert_eq!(details(&r, pid).len(), 4, "{r}");
    // Established TCP connections carry RTT and retransmits.
    for c in details(&r, pid) {
        if c["protocol"] == "tcp" {
            assert_eq!(c["state"], "ESTABLISHED", "{c}");
            assert!(c["rtt_us"].is_u64() && c["retransmits"].is_u64(), "{c}");
        } else {
            assert_eq!(c["state"], "UNCONN", "{c}");
            assert_eq!(c["remote"], "*", "{c}");
        }
    }
    // A closed connection shows once as CLOSED, then leaves the list; until then the four
    // stay as they were.
    holder.send_line("close one");
    holder.expect_line("closed");
    let listed = |r: &Value| details(r, pid).len();
    let closing = mon.report_until(
        |r| listed(r) == 4 && closed(r, pid) == 0,
        |r| closed(r, pid) > 0,
    );
    assert_eq!(
        closed(&closing, pid),
        2,
        "one TCP and one UDP closed: {closing}"
    );
    assert_eq!(listed(&closing), 4, "{closing}");
    let after = mon.next_report();
    assert_eq!(
        closed(&after, pid),
        0,
        "closed connections leave the list: {after}"
    );
    assert_eq!(listed(&after), 2, "{after}");
    mon.stop_ok();
    holder.close_stdin();
}
