//! Byte accounting against the kernel's own counters: veth statistics (IP bytes = frame bytes
//! less 14 per frame, when only the target uses the link), loopback statistics, and the
//! UDP header formulas. Never against numbers procnetmon2 produced itself.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use procnetmon2_integration::{
    Counts, Monitor, Peer, Proc, Scenario, ipv6_synack_passes_cgroup_egress, num, pids, skip,
    time_scale, udp6_bytes, unique,
};

/// Target: a TCP server (listening before the monitor starts) in its own cgroup and
/// namespace; peer: a client in another namespace. Three connections, 1 MB up and 3 MB down
/// each; the client closes first. Every byte crosses the veth once.
#[test]
fn tcp_server_accepted_connections_match_veth_counters() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(1), s.cgroup());
    let addr = link.addr_a(5001);
    let server = Peer::tcp_server(&addr)
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();

    let mon = Monitor::start(&["-p", &server.pid().to_string(), "--json", "-t", "3s"]);
    let before = link.stats();
    Peer::tcp_client(&addr, 1_000_000, 3_000_000)
        .connections(3)
        .in_netns(&link.b)
        .run();
    let run = mon.finish_ok();
    let c = run.current(server.pid());
    assert_eq!(
        Counts::of(c),
        link.since(&before).ip(),
        "veth counters; {c}"
    );
    assert!(
        num(c, "bytes_in") > 3_000_000 && num(c, "bytes_out") > 9_000_000,
        "{c}"
    );
}

/// Target: a TCP client; in the same cgroup and namespace a process that is not a target sends
/// UDP over the same link. The target's bytes are the link's less the other process's
/// datagrams (formula), and none of the other process's bytes are the target's.
#[test]
fn tcp_client_excludes_a_non_target_in_the_same_cgroup_and_netns() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(2), s.cgroup());
    s.background(Peer::tcp_server(&link.addr_b(5002)).in_netns(&link.b));
    let sink = Peer::udp_recv(&link.addr_b(6002), 500)
        .in_netns(&link.b)
        .start();
    // The target connects now (before the monitor) and moves data only when told.
    let mut target = Peer::tcp_client(&link.addr_b(5002), 2_000_000, 500_000)
        .server_closes_first()
        .on_go()
        .hold()
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();
    let mut other = Peer::udp_send(&link.addr_b(6002), 500, 700)
        .on_go()
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();

    let mon = Monitor::start(&["-p", &target.pid().to_string(), "--json", "-t", "3s"]);
    let before = link.stats();
    target.go("done");
    other.go("done");
    sink.expect_line("done");
    let run = mon.finish_ok();
    let link_counts = link.since(&before).ip();
    let other_counts = Counts::udp4_out(500, 700);
    let want = Counts {
        bytes_out: link_counts.bytes_out - other_counts.bytes_out,
        packets_out: link_counts.packets_out - other_counts.packets_out,
        ..link_counts
    };
    let c = run.current(target.pid());
    assert_eq!(Counts::of(c), want, "{c}");
    let p = &run.last()["processes"][target.pid().to_string()]["protocols"];
    assert_eq!(
        p["udp"]["bytes_out"], 0,
        "the other process's UDP is not the target's"
    );
}

/// UDP, unconnected and connected sends, and receives: exact by the header formula.
#[test]
fn udp_send_and_receive_match_the_formula() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(3), s.cgroup());
    let (to_b, to_a) = (link.addr_b(6003), link.addr_a(6004));
    s.background(Peer::udp_recv(&to_b, 600).in_netns(&link.b));
    let in_a = |p: Peer<'_>| p.in_cgroup(&cg).in_netns(&link.a).start();
    let receiver = in_a(Peer::udp_recv(&to_a, 250).hold());
    let mut unconnected = in_a(Peer::udp_send(&to_b, 300, 512).on_go().hold());
    let mut connected = in_a(Peer::udp_send(&to_b, 300, 1200).connected().on_go().hold());

    let all = pids(&[&unconnected, &connected, &receiver]);
    let mon = Monitor::start(&["-p", &all, "--json", "-t", "3s"]);
    let before = link.stats();
    unconnected.send_line("go");
    connected.send_line("go");
    Peer::udp_send(&to_a, 250, 333).in_netns(&link.b).run();
    unconnected.expect_line("done");
    connected.expect_line("done");
    receiver.expect_line("done");
    let run = mon.finish_ok();
    let delta = link.since(&before).ip();
    let (u, c, r) = (
        Counts::udp4_out(300, 512),
        Counts::udp4_out(300, 1200),
        Counts::udp4_in(250, 333),
    );
    assert_eq!(Counts::of(run.current(unconnected.pid())), u);
    assert_eq!(Counts::of(run.current(connected.pid())), c);
    assert_eq!(Counts::of(run.current(receiver.pid())), r);
    // And the link agrees with the sum.
    assert_eq!(
        delta,
        Counts {
            bytes_out: u.bytes_out + c.bytes_out,
            packets_out: 600,
            ..r
        }
    );
    assert_eq!(
        run.last()["processes"][unconnected.pid().to_string()]["protocols"]["udp"]["bytes_out"],
        u.bytes_out
    );
}

/// IPv6 over loopback: every packet on `lo` belongs to the target's connections or the known
/// datagrams, so the target's in + out equals lo's bytes (each loopback packet is counted once
/// on lo's rx, from the IP header). The server's replies stay under 64 KiB: an IPv6 TCP skb
/// above that carries an 8-byte jumbo option and reaches the device split, so the device
/// counts more headers than the socket handed over (seen here; README explains).
///
/// Where the kernel does not pass a server's IPv6 SYN-ACK through the cgroup egress hook
/// (before ~6.6: `ipv6_synack_passes_cgroup_egress` asks the kernel), the server's TCP
/// counts cannot be exact: the UDP part is checked and the test reported as skipped.
#[test]
fn ipv6_tcp_and_udp_over_loopback() {
    let Some(s) = Scenario::new() else { return };
    let (ns, cg) = (s.netns_v6(), s.cgroup());
    let synack_counted = ipv6_synack_passes_cgroup_egress(&ns);
    let server = Peer::tcp_server("[::1]:5005")
        .in_cgroup(&cg)
        .in_netns(&ns)
        .start();
    let udp_rx = Peer::udp_recv("[::1]:6005", 200)
        .in_cgroup(&cg)
        .in_netns(&ns)
        .start();

    let mon = Monitor::start(&["-p", &pids(&[&server, &udp_rx]), "--json", "-t", "3s"]);
    let before = ns.link_stats("lo");
    Peer::tcp_client("[::1]:5005", 1_500_000, 40_000)
        .connections(2)
        .in_netns(&ns)
        .run();
    Peer::udp_send("[::1]:6005", 200, 100)
        .connected()
        .in_netns(&ns)
        .run();
    udp_rx.expect_line("done");
    let run = mon.finish_ok();
    let lo = ns.link_stats("lo").since(&before);
    let u = run.current(udp_rx.pid());
    assert_eq!(
        (num(u, "bytes_in"), num(u, "packets_in")),
        (200 * udp6_bytes(100), 200)
    );
    if !synack_counted {
        skip(
            "the server's IPv6 SYN-ACK bypasses cgroup egress on this kernel (TCP part; UDP checked)",
        );
        return;
    }
    // lo carried the TCP connections and the 200 datagrams, nothing else.
    let c = run.current(server.pid());
    assert_eq!(
        num(c, "bytes_in") + num(c, "bytes_out"),
        lo.rx_bytes - 200 * udp6_bytes(100),
        "{c}"
    );
    assert_eq!(
        num(c, "packets_in") + num(c, "packets_out"),
        lo.rx_packets - 200,
        "{c}"
    );
}

/// A connection opened before the monitor started: counted from the start on, exactly.
/// The target is the client; the server closes first.
#[test]
fn connection_opened_before_the_monitor_counts_from_the_start() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(6), s.cgroup());
    s.background(Peer::tcp_server(&link.addr_b(5006)).in_netns(&link.b));
    let mut target = Peer::tcp_client(&link.addr_b(5006), 3_000_000, 700_000)
        .server_closes_first()
        .on_go()
        .hold()
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();
    // The handshake came before the monitor: it must not be counted.
    let mon = Monitor::start(&["-p", &target.pid().to_string(), "--json", "-t", "3s"]);
    let before = link.stats();
    target.go("done");
    let run = mon.finish_ok();
    let c = run.current(target.pid());
    assert_eq!(Counts::of(c), link.since(&before).ip(), "{c}");
    assert!(num(c, "bytes_out") > 3_000_000);
}

/// A static HTTP server (python3) in `ns` on `addr`, serving `body` as /blob.bin from a
/// temporary directory (removed with the returned guard).
fn http_server(ns: &procnetmon2_integration::Netns, ip: &str, body: &[u8]) -> (Proc, TempDir) {
    let dir = TempDir(std::env::temp_dir().join(unique("pnm-www")));
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::write(dir.0.join("blob.bin"), body).expect("write blob");
    let program = format!(
        "import http.server,functools\n\
         class Quiet(http.server.SimpleHTTPRequestHandler):\n    log_message=lambda *a:None\n\
         h=functools.partial(Quiet,directory='{}')\n\
         s=http.server.HTTPServer(('{ip}',8007),h)\nprint('ready',flush=True)\ns.serve_forever()",
        dir.0.display(),
    );
    let server = Proc::spawn(
        Path::new("python3"),
        &["-u", "-c", &program],
        None,
        Some(ns),
    );
    server.expect_line("ready");
    (server, dir)
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The "done when": curl downloading from a local HTTP server, watched with
/// `--json -t`, shows the download's bytes exactly (veth counters).
#[test]
fn curl_download_is_exact() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(7), s.cgroup());
    let body: Vec<u8> = (0..4_000_000_u32).map(|i| (i % 251) as u8).collect();
    let (_server, _www) = http_server(&link.b, &link.veth.ip_b, &body);
    // curl waits for one line on stdin (via sh read) so the monitor can start first.
    let url = format!("http://{}/blob.bin", link.addr_b(8007));
    let mut curl = Proc::spawn(
        Path::new("sh"),
        &[
            "-c",
            &format!("echo started; read go; exec curl -s -o /dev/null {url}"),
        ],
        Some(&cg),
        Some(&link.a),
    );
    curl.expect_line("started");
    // The window is ended by Ctrl-C once curl has exited, never by its clock: a 3 s window
    // raced curl's exit (under emulation the download ended inside the window and curl
    // exited just after it, so its row was not yet marked exited). SIGINT during a window
    // prints the window's report so far, after one last look at the counters and the target.
    let mon = Monitor::start(&["-p", &curl.pid().to_string(), "--json", "-t", "10m"]);
    let before = link.stats();
    curl.send_line("go");
    assert!(curl.wait().success());
    // The connection's last packets (the server's FIN, our ACK) may cross after curl has
    // exited; once its socket is gone or in TIME-WAIT, nothing more is sent for it.
    let deadline = Instant::now() + Duration::from_secs(30 * time_scale());
    while !link
        .a
        .exec(&["ss", "-Htn", "state", "connected", "exclude", "time-wait"])
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "curl's connection never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    mon.signal(libc::SIGINT);
    let run = mon.finish_ok();
    let c = run.current(curl.pid());
    assert_eq!(Counts::of(c), link.since(&before).ip(), "{c}");
    assert!(num(c, "bytes_in") > 4_000_000, "{c}");
    let p = &run.last()["processes"][curl.pid().to_string()];
    assert_eq!(p["exited"], true, "{p}");
}

/// Without CAP_DAC_READ_SEARCH (the least-privilege set), /proc/PID/fd of another user's
/// process cannot be listed: its pre-existing sockets are found by trying each descriptor
/// number with pidfd_getfd, and counted exactly (they were once missed silently).
#[test]
fn another_users_sockets_found_without_dac_read_search() {
    let Some(s) = Scenario::new() else { return };
    s.background(Peer::udp_sink("127.0.0.1:7235"));
    // A process of user nobody with a UDP socket connected before the monitor starts.
    let send = Peer::udp_send("127.0.0.1:7235", 60, 200)
        .connected()
        .on_go()
        .hold();
    let mut argv = vec![
        "--reuid=65534".to_owned(),
        "--regid=65534".into(),
        "--clear-groups".into(),
    ];
    argv.extend(send.argv());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut target = Proc::spawn(Path::new("setpriv"), &argv, None, None);
    target.expect_line("bound");
    let drop_dac = "-dac_read_search,-dac_override";
    let mon = Monitor::start_under(
        &[
            "setpriv",
            "--inh-caps",
            drop_dac,
            "--bounding-set",
            drop_dac,
        ],
        &["-p", &target.pid().to_string(), "--json", "-t", "2s"],
    );
    target.go("done");
    let run = mon.finish_ok();
    let cur = run.current(target.pid());
    assert_eq!(Counts::of(cur), Counts::udp4_out(60, 200), "{cur}");
    assert_eq!(cur["udp_connections"], 1, "{cur}");
    assert!(
        run.logged("cannot list the descriptors"),
        "the fd directory was unreadable, as without CAP_DAC_READ_SEARCH: {:?}",
        run.err
    );
}
