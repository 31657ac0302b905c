//! `-i`: names resolved in each target's own network namespace, filtered in the kernel on
//! (namespace, ifindex); interfaces that go away and come back.

use std::{path::Path, rc::Rc, thread, time::Duration};

use procnetmon2_integration::{
    Cgroup, Counts, Link, Monitor, Netns, Peer, Proc, Scenario, Script, Veth, pids, run_monitor,
    skip_iface_without_netns_cookie, time_scale, workload,
};

/// A scenario, unless the test cannot run: not root, or `-i` unavailable (`SO_NETNS_COOKIE`,
/// 5.14: there the refusal of `-p SELF -i lo` is checked and the test skipped).
fn scenario(test: &str) -> Option<Scenario> {
    let s = Scenario::new()?;
    let me = std::process::id().to_string();
    let refused = skip_iface_without_netns_cookie(test, &["-p", &me, "-i", "lo", "-t", "1s"]);
    (!refused).then_some(s)
}

/// A shell target in `ns` and `cg` that, on "go", sends each (addr, count, size) in turn
/// from a connected socket (a child of the shell each), then prints "sent".
fn sender(ns: &Netns, cg: &Cgroup, sends: &[(&str, u64, u64)]) -> Proc {
    let peers: Vec<Peer<'_>> = sends
        .iter()
        .map(|(addr, n, size)| Peer::udp_send(addr, *n, *size).connected())
        .collect();
    Script::new()
        .step("sent", &peers)
        .in_cgroup(cg)
        .in_netns(ns)
        .start()
}

/// Namespace `a` with two links, eth0 (subnet `n`) and eth1 (subnet `n + 1`), each to a
/// peer with a UDP sink on port `7000 + subnet`; the sinks' addresses.
fn two_links(s: &Scenario, n: u8) -> (Rc<Netns>, [Link; 2], [String; 2]) {
    let a = s.netns();
    let links = [s.link_from(&a, "eth0", n), s.link_from(&a, "eth1", n + 1)];
    let to = [
        links[0].addr_b(7000 + u16::from(n)),
        links[1].addr_b(7001 + u16::from(n)),
    ];
    for (l, addr) in links.iter().zip(&to) {
        s.background(Peer::udp_sink(addr).in_netns(&l.b));
    }
    (a, links, to)
}

/// Two interfaces: only the chosen one counts, equal to its own counters.
#[test]
fn counts_only_the_chosen_interface() {
    let Some(s) = scenario("counts_only_the_chosen_interface") else {
        return;
    };
    let (a, links, to) = two_links(&s, 41);
    let cg = s.cgroup();
    let mut target = sender(&a, &cg, &[(&to[0], 120, 300), (&to[1], 80, 900)]);
    let pid = target.pid().to_string();
    let mon = Monitor::start(&["-p", &pid, "-i", "eth0", "--json", "-t", "3s"]);
    let before = links[0].stats();
    target.go("sent");
    let run = mon.finish_ok();
    let eth0 = links[0].since(&before).ip();
    assert_eq!(eth0, Counts::udp4_out(120, 300));
    assert_eq!(Counts::of(run.current(target.pid())), eth0);
}

/// Two targets in different namespaces, each with its own "eth0" (same ifindex): each counts
/// its own; traffic over lo is not eth0's.
#[test]
fn same_name_in_two_namespaces() {
    let Some(s) = scenario("same_name_in_two_namespaces") else {
        return;
    };
    let (ab, cd) = (s.link(43), s.link(44));
    let (to_b, to_d) = (ab.addr_b(7403), cd.addr_b(7404));
    s.background(Peer::udp_sink(&to_b).in_netns(&ab.b));
    s.background(Peer::udp_sink(&to_d).in_netns(&cd.b));
    s.background(Peer::udp_sink("127.0.0.1:7405").in_netns(&ab.a));
    let cg = s.cgroup();
    let mut t1 = sender(&ab.a, &cg, &[(&to_b, 100, 200), ("127.0.0.1:7405", 50, 50)]);
    let mut t2 = sender(&cd.a, &cg, &[(&to_d, 70, 1000)]);
    let mon = Monitor::start(&["-p", &pids(&[&t1, &t2]), "-i", "eth0", "--json", "-t", "3s"]);
    t1.go("sent");
    t2.go("sent");
    let run = mon.finish_ok();
    assert_eq!(
        Counts::of(run.current(t1.pid())),
        Counts::udp4_out(100, 200)
    );
    assert_eq!(
        Counts::of(run.current(t2.pid())),
        Counts::udp4_out(70, 1000)
    );
}

/// `-i lo`: only loopback traffic.
#[test]
fn loopback_only() {
    let Some(s) = scenario("loopback_only") else {
        return;
    };
    let link = s.link(45);
    let to_b = link.addr_b(7406);
    s.background(Peer::udp_sink(&to_b).in_netns(&link.b));
    s.background(Peer::udp_sink("127.0.0.1:7407").in_netns(&link.a));
    let cg = s.cgroup();
    let mut t = sender(
        &link.a,
        &cg,
        &[(&to_b, 100, 200), ("127.0.0.1:7407", 60, 500)],
    );
    let mon = Monitor::start(&["-p", &t.pid().to_string(), "-i", "lo", "--json", "-t", "3s"]);
    t.go("sent");
    let run = mon.finish_ok();
    assert_eq!(Counts::of(run.current(t.pid())), Counts::udp4_out(60, 500));
}

/// An interface deleted mid-run: a warning; counting continues on the rest and resumes when
/// an interface of that name comes back.
#[test]
fn interface_removed_and_re_added() {
    let Some(s) = scenario("interface_removed_and_re_added") else {
        return;
    };
    let (a, links, to) = two_links(&s, 46);
    let c = &links[1].b;
    let send = |to: &str, n| [Peer::udp_send(to, n, 100).connected()];
    let cg = s.cgroup();
    let mut t = Script::new()
        .step("phase1", &send(&to[1], 10))
        .step("phase2", &send(&to[0], 20))
        .step("phase3", &send(&to[1], 30))
        .in_cgroup(&cg)
        .in_netns(&a)
        .start();
    let mut mon = Monitor::start(&[
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
    t.go("phase1");
    // eth1 goes away: the agent says so once it noticed.
    c.exec(&["ip", "link", "del", "eth0"]);
    mon.expect_log("eth1 is gone");
    t.go("phase2");
    // eth1 comes back (a new veth, a new ifindex), and the agent says so once it counts it.
    let _v1b = Veth::new(&a, "eth1", c, "eth0", 47);
    mon.expect_log("eth1 is back");
    // Measured (2026-12, 6.18): a burst sent at once after that line lost exactly one
    // datagram of 30 in 2 of 4 runs; sent 600 ms after the interface came up, 9 of 9 runs
    // were exact. Which side (the agent's filter, the new device) is not found yet: the
    // pause stays, as before the line was waited for.
    thread::sleep(Duration::from_millis(600 * time_scale()));
    t.go("phase3");
    let run = mon.finish_ok();
    let cur = run.current(t.pid());
    assert_eq!(
        Counts::of(cur),
        Counts::udp4_out(10 + 20 + 30, 100),
        "{cur}"
    );
}

/// A name unknown in the target's namespace: one line listing that namespace's interfaces,
/// exit 2, nothing attached.
#[test]
fn unknown_interface_is_a_usage_error() {
    let Some(s) = scenario("unknown_interface_is_a_usage_error") else {
        return;
    };
    let link = s.link(48);
    let t = Proc::spawn(Path::new("sleep"), &["30"], None, Some(&link.a));
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
    let Some(s) = scenario("cgroup_target_counts_the_chosen_interface") else {
        return;
    };
    let (a, links, to) = two_links(&s, 46);
    let cg = s.cgroup();
    let mut target = sender(&a, &cg, &[(&to[0], 70, 300), (&to[1], 30, 900)]);
    let rel = cg.rel();
    let (status, _, err) = run_monitor(&["--cgroup", &rel, "-i", "eth9", "-t", "1s"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("eth9") && err.trim().lines().count() == 1,
        "{err}"
    );
    let mon = Monitor::start(&["--cgroup", &rel, "-i", "eth0", "--json", "-t", "3s"]);
    let before = links[0].stats();
    target.go("sent");
    let run = mon.finish_ok();
    let eth0 = links[0].since(&before).ip();
    let r = run.last();
    let w = workload(r, &rel).unwrap_or_else(|| panic!("the cgroup: {r}"));
    assert_eq!(eth0, Counts::udp4_out(70, 300));
    assert_eq!(Counts::of(&w["current"]), eth0, "{r}");
}
