//! `-i`: names resolved in each target's own network namespace, filtered in the kernel on
//! (namespace, ifindex); interfaces that go away and come back.

use std::{path::Path, thread, time::Duration};

use procnetmon2_integration::{
    Cgroup, Monitor, Netns, Proc, Veth, bin, current, num, run_monitor,
    skip_iface_without_netns_cookie, skip_unless_root, time_scale, udp4_bytes,
};

/// `-i` needs `SO_NETNS_COOKIE` (5.14): where it is missing, the refusal of `-p SELF -i lo` is
/// checked and the test skipped.
fn skip_without_netns_cookie(test: &str) -> bool {
    let me = std::process::id().to_string();
    skip_iface_without_netns_cookie(test, &["-p", &me, "-i", "lo", "-t", "1s"])
}

/// A shell target in `ns` that, on "go", runs each (addr, count, size) sender as a child in
/// turn, then prints "sent".
fn sender_shell(ns: &Netns, cg: &Cgroup, sends: &[(&str, u32, u32)]) -> Proc {
    let peer = bin("pnm-peer");
    let peer = peer.to_str().expect("utf8");
    let body: Vec<String> = sends
        .iter()
        .map(|(a, n, s)| format!("{peer} udp-send {a} {n} {s} connected >/dev/null"))
        .collect();
    let script = format!(
        "echo started; read go; {}; echo sent; read end",
        body.join("; ")
    );
    let p = Proc::spawn(Path::new("sh"), &["-c", &script], Some(cg), Some(ns));
    p.expect_line("started");
    p
}

fn sink(ns: &Netns, addr: &str) -> Proc {
    let p = Proc::peer(&["udp-recv", addr, "1000000"], None, Some(ns));
    p.expect_line("ready");
    p
}

/// A sender in namespace `a` with two links, eth0 (subnet `s`) and eth1 (subnet `s + 1`), to
/// a sink each; on "go" it sends `to_eth0` then `to_eth1` (count, size) datagrams.
/// Fields drop in order: the sender first, the namespaces last.
struct TwoLinks {
    target: Proc,
    cg: Cgroup,
    _rest: (Proc, Proc, Veth, Veth, Netns, Netns),
    a: Netns,
}

impl TwoLinks {
    fn new(s: u8, to_eth0: (u32, u32), to_eth1: (u32, u32)) -> Self {
        let (a, b, c) = (Netns::new(false), Netns::new(false), Netns::new(false));
        let v0 = Veth::new(&a, "eth0", &b, "eth0", s);
        let v1 = Veth::new(&a, "eth1", &c, "eth0", s + 1);
        let to_b = format!("{}:7{:03}", v0.ip_b, s);
        let to_c = format!("{}:7{:03}", v1.ip_b, s + 1);
        let (sb, sc) = (sink(&b, &to_b), sink(&c, &to_c));
        let cg = Cgroup::new();
        let target = sender_shell(
            &a,
            &cg,
            &[(&to_b, to_eth0.0, to_eth0.1), (&to_c, to_eth1.0, to_eth1.1)],
        );
        Self {
            target,
            cg,
            _rest: (sb, sc, v1, v0, c, b),
            a,
        }
    }
}

/// Two interfaces: only the chosen one counts, equal to its own counters.
#[test]
fn counts_only_the_chosen_interface() {
    if skip_unless_root() || skip_without_netns_cookie("counts_only_the_chosen_interface") {
        return;
    }
    let mut two = TwoLinks::new(41, (120, 300), (80, 900));
    let (a, target) = (&two.a, &mut two.target);
    let mon = Monitor::start(&[
        "-p",
        &target.pid().to_string(),
        "-i",
        "eth0",
        "--json",
        "-t",
        "3s",
    ]);
    let before = a.link_stats("eth0");
    target.send_line("go");
    target.expect_line("sent");
    let (status, reports, err) = mon.finish();
    let eth0 = a.link_stats("eth0").since(&before);
    assert!(status.success(), "{err:?}");
    let cur = current(reports.last().expect("report"), target.pid());
    assert_eq!(num(cur, "bytes_out"), eth0.ip_tx(), "{cur}");
    assert_eq!(num(cur, "bytes_out"), 120 * udp4_bytes(300));
    assert_eq!(num(cur, "packets_out"), eth0.tx_packets);
    target.close_stdin();
}

/// Two targets in different namespaces, each with its own "eth0" (same ifindex): each counts
/// its own; traffic over lo is not eth0's.
#[test]
fn same_name_in_two_namespaces() {
    if skip_unless_root() || skip_without_netns_cookie("same_name_in_two_namespaces") {
        return;
    }
    let (a, b, c, d) = (
        Netns::new(false),
        Netns::new(false),
        Netns::new(false),
        Netns::new(false),
    );
    let va = Veth::new(&a, "eth0", &b, "eth0", 43);
    let vc = Veth::new(&c, "eth0", &d, "eth0", 44);
    let (to_b, to_d) = (format!("{}:7403", va.ip_b), format!("{}:7404", vc.ip_b));
    let (_sb, _sd) = (sink(&b, &to_b), sink(&d, &to_d));
    let _la = sink(&a, "127.0.0.1:7405");
    let cg = Cgroup::new();
    let mut t1 = sender_shell(&a, &cg, &[(&to_b, 100, 200), ("127.0.0.1:7405", 50, 50)]);
    let mut t2 = sender_shell(&c, &cg, &[(&to_d, 70, 1000)]);
    let pids = format!("{},{}", t1.pid(), t2.pid());
    let mon = Monitor::start(&["-p", &pids, "-i", "eth0", "--json", "-t", "3s"]);
    t1.send_line("go");
    t2.send_line("go");
    t1.expect_line("sent");
    t2.expect_line("sent");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let r = reports.last().expect("report");
    assert_eq!(
        num(current(r, t1.pid()), "bytes_out"),
        100 * udp4_bytes(200)
    );
    assert_eq!(
        num(current(r, t2.pid()), "bytes_out"),
        70 * udp4_bytes(1000)
    );
    t1.close_stdin();
    t2.close_stdin();
}

/// `-i lo`: only loopback traffic.
#[test]
fn loopback_only() {
    if skip_unless_root() || skip_without_netns_cookie("loopback_only") {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 45);
    let to_b = format!("{}:7406", v.ip_b);
    let _sb = sink(&b, &to_b);
    let _lo = sink(&a, "127.0.0.1:7407");
    let cg = Cgroup::new();
    let mut t = sender_shell(&a, &cg, &[(&to_b, 100, 200), ("127.0.0.1:7407", 60, 500)]);
    let mon = Monitor::start(&["-p", &t.pid().to_string(), "-i", "lo", "--json", "-t", "3s"]);
    t.send_line("go");
    t.expect_line("sent");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    assert_eq!(
        num(
            current(reports.last().expect("report"), t.pid()),
            "bytes_out"
        ),
        60 * udp4_bytes(500)
    );
    t.close_stdin();
}

/// An interface deleted mid-run: a warning; counting continues on the rest and resumes when
/// an interface of that name comes back.
#[test]
fn interface_removed_and_re_added() {
    if skip_unless_root() || skip_without_netns_cookie("interface_removed_and_re_added") {
        return;
    }
    let (a, b, c) = (Netns::new(false), Netns::new(false), Netns::new(false));
    let v0 = Veth::new(&a, "eth0", &b, "eth0", 46);
    let v1 = Veth::new(&a, "eth1", &c, "eth0", 47);
    let (to_b, to_c) = (format!("{}:7408", v0.ip_b), format!("{}:7409", v1.ip_b));
    let (_sb, _sc) = (sink(&b, &to_b), sink(&c, &to_c));
    let cg = Cgroup::new();
    let peer = bin("pnm-peer");
    let peer = peer.to_str().expect("utf8");
    let script = format!(
        "echo started; read go; {peer} udp-send {to_c} 10 100 connected >/dev/null; echo phase1; \
         read go; {peer} udp-send {to_b} 20 100 connected >/dev/null; echo phase2; \
         read go; {peer} udp-send {to_c} 30 100 connected >/dev/null; echo phase3; read end"
    );
    let mut t = Proc::spawn(Path::new("sh"), &["-c", &script], Some(&cg), Some(&a));
    t.expect_line("started");
    let mon = Monitor::start(&[
        "-p",
        &t.pid().to_string(),
        "-i",
        "eth0,eth1",
        "--json",
        "-t",
        "5s",
        "--interval",
        "200ms",
    ]);
    t.send_line("go");
    t.expect_line("phase1");
    // eth1 goes away.
    c.exec(&["ip", "link", "del", "eth0"]);
    // A few 200 ms ticks for the monitor to notice (stretched under emulation).
    thread::sleep(Duration::from_millis(600 * time_scale()));
    t.send_line("go");
    t.expect_line("phase2");
    // eth1 comes back (a new veth, a new ifindex).
    let _v1b = Veth::new(&a, "eth1", &c, "eth0", 47);
    thread::sleep(Duration::from_millis(600 * time_scale()));
    t.send_line("go");
    t.expect_line("phase3");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    assert!(err.iter().any(|l| l.contains("eth1 is gone")), "{err:?}");
    assert!(err.iter().any(|l| l.contains("eth1 is back")), "{err:?}");
    let cur = current(reports.last().expect("report"), t.pid());
    assert_eq!(
        num(cur, "bytes_out"),
        (10 + 20 + 30) * udp4_bytes(100),
        "{cur}"
    );
    let _ = v1;
    t.close_stdin();
}

/// A name unknown in the target's namespace: one line listing that namespace's interfaces,
/// exit 2, nothing attached.
#[test]
fn unknown_interface_is_a_usage_error() {
    if skip_unless_root() || skip_without_netns_cookie("unknown_interface_is_a_usage_error") {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let _v = Veth::new(&a, "eth0", &b, "eth0", 48);
    let t = Proc::spawn(Path::new("sleep"), &["30"], None, Some(&a));
    let (status, _, err) = run_monitor(&["-p", &t.pid().to_string(), "-i", "wlan7", "-t", "1s"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("wlan7") && err.contains("lo") && err.contains("eth0"),
        "{err}"
    );
}

/// `-i` with a whole-cgroup target: the name is resolved in the namespaces of the cgroup's
/// processes (it once was not resolved at all, and the cgroup reported 0 bytes); a name that
/// none of them has is a usage error before anything is loaded.
#[test]
fn cgroup_target_counts_the_chosen_interface() {
    if skip_unless_root() || skip_without_netns_cookie("cgroup_target_counts_the_chosen_interface")
    {
        return;
    }
    let mut two = TwoLinks::new(46, (70, 300), (30, 900));
    let (a, target) = (&two.a, &mut two.target);
    let rel = two.cg.rel();
    let (status, _, err) = run_monitor(&["--cgroup", &rel, "-i", "eth9", "-t", "1s"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("eth9") && err.trim().lines().count() == 1,
        "{err}"
    );
    let mon = Monitor::start(&["--cgroup", &rel, "-i", "eth0", "--json", "-t", "3s"]);
    let before = a.link_stats("eth0");
    target.send_line("go");
    target.expect_line("sent");
    let (status, reports, err) = mon.finish();
    let eth0 = a.link_stats("eth0").since(&before);
    assert!(status.success(), "{err:?}");
    let r = reports.last().expect("report");
    let w = r["workloads"]
        .as_object()
        .expect("workloads")
        .values()
        .next()
        .expect("the cgroup");
    assert_eq!(num(&w["current"], "bytes_out"), eth0.ip_tx(), "{r}");
    assert_eq!(num(&w["current"], "bytes_out"), 70 * udp4_bytes(300));
    target.close_stdin();
}
