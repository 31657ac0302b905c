//! Byte accounting against the kernel's own counters: veth statistics (IP bytes = frame bytes
//! less 14 per frame, when only the target uses the link), loopback statistics, and the
//! UDP header formulas. Never against numbers procnetmon2 produced itself.

use std::path::Path;

use procnetmon2_integration::{
    Cgroup, Monitor, Netns, Proc, Veth, bin, current, kernel_version, num, skip_for_kernel,
    skip_unless_root, time_scale, udp4_bytes, udp6_bytes,
};

/// Target: a TCP server (listening before the monitor starts) in its own cgroup and
/// namespace; peer: a client in another namespace. Three connections, 1 MB up and 3 MB down
/// each; the client closes first. Every byte crosses the veth once.
#[test]
fn tcp_server_accepted_connections_match_veth_counters() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 1);
    let cg = Cgroup::new();
    let addr = format!("{}:5001", v.ip_a);
    let server = Proc::peer(&["tcp-server", &addr], Some(&cg), Some(&a));
    server.expect_line("ready");

    let mon = Monitor::start(&["-p", &server.pid().to_string(), "--json", "-t", "3s"]);
    let before = a.link_stats("eth0");
    let mut client = Proc::peer(
        &["tcp-client", &addr, "1000000", "3000000", "0", "3"],
        None,
        Some(&b),
    );
    client.expect_line("done");
    client.wait();
    let (status, reports, err) = mon.finish();
    let delta = a.link_stats("eth0").since(&before);
    assert!(status.success(), "{err:?}");
    let c = current(reports.last().expect("a report"), server.pid());
    assert_eq!(
        num(c, "bytes_in"),
        delta.ip_rx(),
        "bytes_in vs veth rx; {c}"
    );
    assert_eq!(
        num(c, "bytes_out"),
        delta.ip_tx(),
        "bytes_out vs veth tx; {c}"
    );
    assert_eq!(num(c, "packets_in"), delta.rx_packets);
    assert_eq!(num(c, "packets_out"), delta.tx_packets);
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
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 2);
    let cg = Cgroup::new();
    let addr = format!("{}:5002", v.ip_b);
    let server = Proc::peer(&["tcp-server", &addr], None, Some(&b));
    server.expect_line("ready");
    let sink_addr = format!("{}:6002", v.ip_b);
    let sink = Proc::peer(&["udp-recv", &sink_addr, "500"], None, Some(&b));
    sink.expect_line("ready");
    // The target connects now (before the monitor) and moves data only when told.
    let mut target = Proc::peer(
        &[
            "tcp-client",
            &addr,
            "2000000",
            "500000",
            "1",
            "1",
            "wait",
            "hold",
        ],
        Some(&cg),
        Some(&a),
    );
    target.expect_line("connected");
    let mut other = Proc::peer(
        &["udp-send", &sink_addr, "500", "700", "unconnected", "wait"],
        Some(&cg),
        Some(&a),
    );
    other.expect_line("bound");

    let mon = Monitor::start(&["-p", &target.pid().to_string(), "--json", "-t", "3s"]);
    let before = a.link_stats("eth0");
    target.send_line("go");
    other.send_line("go");
    target.expect_line("done");
    other.expect_line("done");
    sink.expect_line("done");
    let (status, reports, err) = mon.finish();
    let delta = a.link_stats("eth0").since(&before);
    assert!(status.success(), "{err:?}");
    let c = current(reports.last().expect("a report"), target.pid());
    let other_bytes = 500 * udp4_bytes(700);
    assert_eq!(num(c, "bytes_out"), delta.ip_tx() - other_bytes, "{c}");
    assert_eq!(num(c, "packets_out"), delta.tx_packets - 500, "{c}");
    assert_eq!(num(c, "bytes_in"), delta.ip_rx(), "{c}");
    let p = &reports.last().expect("report")["processes"][target.pid().to_string()]["protocols"];
    assert_eq!(
        p["udp"]["bytes_out"], 0,
        "the other process's UDP is not the target's"
    );
    target.close_stdin();
}

/// UDP, unconnected and connected sends, and receives: exact by the header formula.
#[test]
fn udp_send_and_receive_match_the_formula() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 3);
    let cg = Cgroup::new();
    let to_b = format!("{}:6003", v.ip_b);
    let to_a = format!("{}:6004", v.ip_a);
    let sink = Proc::peer(&["udp-recv", &to_b, "600"], None, Some(&b));
    sink.expect_line("ready");
    let receiver = Proc::peer(&["udp-recv", &to_a, "250", "hold"], Some(&cg), Some(&a));
    receiver.expect_line("ready");
    let mut unconnected = Proc::peer(
        &[
            "udp-send",
            &to_b,
            "300",
            "512",
            "unconnected",
            "wait",
            "hold",
        ],
        Some(&cg),
        Some(&a),
    );
    unconnected.expect_line("bound");
    let mut connected = Proc::peer(
        &[
            "udp-send",
            &to_b,
            "300",
            "1200",
            "connected",
            "wait",
            "hold",
        ],
        Some(&cg),
        Some(&a),
    );
    connected.expect_line("bound");

    let pids = format!(
        "{},{},{}",
        unconnected.pid(),
        connected.pid(),
        receiver.pid()
    );
    let mon = Monitor::start(&["-p", &pids, "--json", "-t", "3s"]);
    let before = a.link_stats("eth0");
    unconnected.send_line("go");
    connected.send_line("go");
    let mut feeder = Proc::peer(
        &["udp-send", &to_a, "250", "333", "unconnected"],
        None,
        Some(&b),
    );
    feeder.expect_line("done");
    feeder.wait();
    unconnected.expect_line("done");
    connected.expect_line("done");
    receiver.expect_line("done");
    let (status, reports, err) = mon.finish();
    let delta = a.link_stats("eth0").since(&before);
    assert!(status.success(), "{err:?}");
    let r = reports.last().expect("a report");
    let u = current(r, unconnected.pid());
    assert_eq!(
        (num(u, "bytes_out"), num(u, "packets_out")),
        (300 * udp4_bytes(512), 300)
    );
    let c = current(r, connected.pid());
    assert_eq!(
        (num(c, "bytes_out"), num(c, "packets_out")),
        (300 * udp4_bytes(1200), 300)
    );
    let rc = current(r, receiver.pid());
    assert_eq!(
        (num(rc, "bytes_in"), num(rc, "packets_in")),
        (250 * udp4_bytes(333), 250)
    );
    // And the link agrees with the sum.
    assert_eq!(
        delta.ip_tx(),
        300 * udp4_bytes(512) + 300 * udp4_bytes(1200)
    );
    assert_eq!(delta.ip_rx(), 250 * udp4_bytes(333));
    assert_eq!(
        r["processes"][unconnected.pid().to_string()]["protocols"]["udp"]["bytes_out"],
        300 * udp4_bytes(512)
    );
    for p in [&mut unconnected, &mut connected] {
        p.close_stdin();
    }
}

/// IPv6 over loopback: every packet on `lo` belongs to the target's connections or the known
/// datagrams, so the target's in + out equals lo's bytes (each loopback packet is counted once
/// on lo's rx, from the IP header). The server's replies stay under 64 KiB: an IPv6 TCP skb
/// above that carries an 8-byte jumbo option and reaches the device split, so the device
/// counts more headers than the socket handed over (seen here; README explains).
#[test]
fn ipv6_tcp_and_udp_over_loopback() {
    if skip_unless_root() {
        return;
    }
    let ns = Netns::new(true);
    let cg = Cgroup::new();
    let server = Proc::peer(&["tcp-server", "[::1]:5005"], Some(&cg), Some(&ns));
    server.expect_line("ready");
    let udp_rx = Proc::peer(&["udp-recv", "[::1]:6005", "200"], Some(&cg), Some(&ns));
    udp_rx.expect_line("ready");

    let pids = format!("{},{}", server.pid(), udp_rx.pid());
    let mon = Monitor::start(&["-p", &pids, "--json", "-t", "3s"]);
    let before = ns.link_stats("lo");
    let mut client = Proc::peer(
        &["tcp-client", "[::1]:5005", "1500000", "40000", "0", "2"],
        None,
        Some(&ns),
    );
    client.expect_line("done");
    client.wait();
    let mut sender = Proc::peer(
        &["udp-send", "[::1]:6005", "200", "100", "connected"],
        None,
        Some(&ns),
    );
    sender.expect_line("done");
    sender.wait();
    udp_rx.expect_line("done");
    let (status, reports, err) = mon.finish();
    let lo = ns.link_stats("lo").since(&before);
    assert!(status.success(), "{err:?}");
    let r = reports.last().expect("a report");
    let s = current(r, server.pid());
    if kernel_version() < (6, 6) {
        // Before upstream 223f5f79f2ce ("bpf, net: Check skb ownership against full socket",
        // ~6.6) the server's IPv6 SYN-ACK never passes the cgroup egress hook (measured on
        // Debian's 5.10 and 6.1): the TCP side cannot be exact there. UDP still is.
        skip_for_kernel(
            "ipv6_tcp_and_udp_over_loopback",
            "IPv6 SYN-ACK skips cgroup egress before Linux 6.6 (TCP part; UDP checked)",
        );
    } else {
        // lo carried the TCP connections and the 200 datagrams, nothing else.
        assert_eq!(
            num(s, "bytes_in") + num(s, "bytes_out"),
            lo.rx_bytes - 200 * udp6_bytes(100),
            "{s}"
        );
        assert_eq!(
            num(s, "packets_in") + num(s, "packets_out"),
            lo.rx_packets - 200,
            "{s}"
        );
    }
    let u = current(r, udp_rx.pid());
    assert_eq!(
        (num(u, "bytes_in"), num(u, "packets_in")),
        (200 * udp6_bytes(100), 200)
    );
}

/// A connection opened before the monitor started: counted from the start on, exactly.
/// The target is the client; the server closes first.
#[test]
fn connection_opened_before_the_monitor_counts_from_the_start() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 6);
    let cg = Cgroup::new();
    let addr = format!("{}:5006", v.ip_b);
    let server = Proc::peer(&["tcp-server", &addr], None, Some(&b));
    server.expect_line("ready");
    let mut target = Proc::peer(
        &[
            "tcp-client",
            &addr,
            "3000000",
            "700000",
            "1",
            "1",
            "wait",
            "hold",
        ],
        Some(&cg),
        Some(&a),
    );
    target.expect_line("connected");
    // Some traffic before the monitor: must not be counted.
    let mon = Monitor::start(&["-p", &target.pid().to_string(), "--json", "-t", "3s"]);
    let before = a.link_stats("eth0");
    target.send_line("go");
    target.expect_line("done");
    let (status, reports, err) = mon.finish();
    let delta = a.link_stats("eth0").since(&before);
    assert!(status.success(), "{err:?}");
    let c = current(reports.last().expect("a report"), target.pid());
    assert_eq!(num(c, "bytes_out"), delta.ip_tx(), "{c}");
    assert_eq!(num(c, "bytes_in"), delta.ip_rx(), "{c}");
    assert!(num(c, "bytes_out") > 3_000_000);
    target.close_stdin();
}

/// The "done when": curl downloading from a local HTTP server, watched with
/// `--json -t`, shows the download's bytes exactly (veth counters).
#[test]
fn curl_download_is_exact() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 7);
    let cg = Cgroup::new();
    let dir = std::env::temp_dir().join(procnetmon2_integration::unique("pnm-www"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let body: Vec<u8> = (0..4_000_000_u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("blob.bin"), &body).expect("write blob");
    let server = Proc::spawn(
        std::path::Path::new("python3"),
        &[
            "-u",
            "-c",
            &format!(
                "import http.server,functools,sys\n\
             h=functools.partial(http.server.SimpleHTTPRequestHandler,directory='{}')\n\
             h.log_message=lambda *a:None\n\
             s=http.server.HTTPServer(('{}',8007),h)\nprint('ready',flush=True)\ns.serve_forever()",
                dir.display(),
                v.ip_b
            ),
        ],
        None,
        Some(&b),
    );
    server.expect_line("ready");
    // curl waits for one line on stdin (via sh read) so the monitor can start first.
    let url = format!("http://{}:8007/blob.bin", v.ip_b);
    let mut curl = Proc::spawn(
        std::path::Path::new("sh"),
        &[
            "-c",
            &format!("echo started; read go; exec curl -s -o /dev/null {url}"),
        ],
        Some(&cg),
        Some(&a),
    );
    curl.expect_line("started");
    // The window is ended by Ctrl-C once curl has exited, never by its clock: a 3 s window
    // raced curl's exit (under emulation the download ended inside the window and curl
    // exited just after it, so its row was not yet marked exited). SIGINT during a window
    // prints the window's report so far, after one last look at the counters and the target.
    let mon = Monitor::start(&["-p", &curl.pid().to_string(), "--json", "-t", "10m"]);
    let before = a.link_stats("eth0");
    curl.send_line("go");
    assert!(curl.wait().success());
    // The connection's last packets (the server's FIN, our ACK) may cross after curl has
    // exited; once its socket is gone or in TIME-WAIT, nothing more is sent for it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30 * time_scale());
    while !a
        .exec(&["ss", "-Htn", "state", "connected", "exclude", "time-wait"])
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "curl's connection never closed"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    mon.signal(libc::SIGINT);
    let (status, reports, err) = mon.finish();
    let delta = a.link_stats("eth0").since(&before);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "{err:?}");
    let c = current(reports.last().expect("a report"), curl.pid());
    assert_eq!(num(c, "bytes_in"), delta.ip_rx(), "{c}");
    assert_eq!(num(c, "bytes_out"), delta.ip_tx(), "{c}");
    assert!(num(c, "bytes_in") > 4_000_000, "{c}");
    let r = reports.last().expect("a report");
    assert_eq!(
        r["processes"][curl.pid().to_string()]["exited"],
        true,
        "{r}"
    );
}

/// Without CAP_DAC_READ_SEARCH (the least-privilege set), /proc/PID/fd of another user's
/// process cannot be listed: its pre-existing sockets are found by trying each descriptor
/// number with pidfd_getfd, and counted exactly (they were once missed silently).
#[test]
fn another_users_sockets_found_without_dac_read_search() {
    if skip_unless_root() {
        return;
    }
    let sink = Proc::peer(&["udp-recv", "127.0.0.1:7235", "1000000"], None, None);
    sink.expect_line("ready");
    let peer = bin("pnm-peer");
    let peer = peer.to_str().expect("utf8");
    // A process of user nobody with a UDP socket connected before the monitor starts.
    let mut target = Proc::spawn(
        Path::new("setpriv"),
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            peer,
            "udp-send",
            "127.0.0.1:7235",
            "60",
            "200",
            "connected",
            "wait",
            "hold",
        ],
        None,
        None,
    );
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
    target.send_line("go");
    target.expect_line("done");
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let r = reports.last().expect("report");
    let cur = current(r, target.pid());
    assert_eq!(num(cur, "bytes_out"), 60 * udp4_bytes(200), "{r}");
    assert_eq!(cur["udp_connections"], 1, "{r}");
    assert!(
        err.iter()
            .any(|l| l.contains("cannot list the descriptors")),
        "the fd directory was unreadable, as without CAP_DAC_READ_SEARCH: {err:?}"
    );
    target.close_stdin();
}
