//! `--metrics-addr`: scraped with a real HTTP client (curl) during real traffic in namespaces.
//! Values equal the known payloads and the veth's own counters, counters never go down when
//! connections close, a removed workload's series leave after the grace period, and
//! `promtool check metrics` accepts it.

use std::{thread, time::Duration};

use procnetmon2_integration::{
    Link, Monitor, Peer, Proc, Scenario, Script,
    metrics::{
        CLASSIC, OPENMETRICS, free_port, healthz_ok, promtool_accepts, sample, scrape, scrape_until,
    },
    udp4_bytes,
};

const TX_BYTES: &str = "procnetmon_network_transmit_bytes_total";
const TX_PACKETS: &str = "procnetmon_network_transmit_packets_total";
const RX_BYTES: &str = "procnetmon_network_receive_bytes_total";

/// The metrics page of one run, as seen for one workload (a cgroup).
struct Page {
    port: u16,
    /// The workload's series end with its cgroup's name (label `cgroup="…/NAME"`).
    label_end: String,
}

impl Page {
    /// The workload's sample of `name` for protocol `proto` on `text`.
    fn series(&self, text: &str, name: &str, proto: &str) -> Option<u64> {
        let proto = format!("protocol=\"{proto}\"");
        sample(text, name, &[self.label_end.as_str(), proto.as_str()])
    }

    /// Scrapes (OpenMetrics) until `done` holds, at most 3 s stretched under emulation.
    fn until(&self, done: impl Fn(&str) -> bool) -> String {
        scrape_until(self.port, OPENMETRICS, 3, done)
    }
}

/// UDP: scraped until a 200 ms tick has read the totals, then checked exactly; the target's
/// info and the build info are there, and the page ends as OpenMetrics requires.
fn udp_phase(page: &Page, w: &mut Proc) {
    w.go("udp-done");
    let text = page.until(|t| page.series(t, TX_PACKETS, "udp") == Some(200));
    assert_eq!(page.series(&text, TX_PACKETS, "udp"), Some(200), "{text}");
    let bytes = page.series(&text, TX_BYTES, "udp");
    assert_eq!(bytes, Some(200 * udp4_bytes(400)), "{text}");
    let info = format!("procnetmon_target_info{{pid=\"{}\"", w.pid());
    assert!(text.contains(&info), "{text}");
    assert!(text.contains("procnetmon_build_info{"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

/// TCP: the connection opens, moves data and closes; scraped before, during and after, its
/// counters never go down, and they end at what the veth carried, both ways.
fn tcp_phase(page: &Page, w: &mut Proc, link: &Link) {
    let before = link.stats();
    w.send_line("go");
    let mut last = 0;
    for _ in 0..10 {
        let v = page
            .series(&scrape(page.port, OPENMETRICS), TX_BYTES, "tcp")
            .unwrap_or(0);
        assert!(v >= last, "a counter went down: {last} -> {v}");
        last = v;
        thread::sleep(Duration::from_millis(100));
    }
    w.expect_line("tcp-done");
    let veth = link.since(&before).ip();
    let both = |t: &str| {
        (
            page.series(t, TX_BYTES, "tcp"),
            page.series(t, RX_BYTES, "tcp"),
        )
    };
    let want = (Some(veth.bytes_out), Some(veth.bytes_in));
    let text = page.until(|t| both(t) == want);
    assert_eq!(both(&text), want, "veth: {veth:?}\n{text}");
    assert!(
        veth.bytes_out > 100_000 && veth.bytes_out >= last,
        "{veth:?}"
    );
}

/// One workload (a test cgroup) moves UDP datagrams, then a TCP connection that closes, over
/// a veth; the page is scraped during and after. UDP equals the formula, TCP what the veth
/// carried both ways, and no counter ever goes down. Then the workload goes: its series leave
/// after the grace period; the agent (a daemon) runs on until SIGTERM.
#[test]
fn scrape_during_traffic() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(71), s.cgroup());
    let (udp, tcp) = (link.addr_b(7701), link.addr_b(7702));
    s.background(Peer::udp_sink(&udp).in_netns(&link.b));
    s.background(Peer::tcp_server(&tcp).in_netns(&link.b));
    let mut w = Script::new()
        .step("udp-done", &[Peer::udp_send(&udp, 200, 400).connected()])
        .step(
            "tcp-done",
            &[Peer::tcp_client(&tcp, 100_000, 20_000).server_closes_first()],
        )
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();
    let page = Page {
        port: free_port(),
        label_end: format!("{}\"", cg.name()),
    };
    let addr = format!("127.0.0.1:{}", page.port);
    let pid = w.pid().to_string();
    let mon = Monitor::start(&[
        "--all",
        "-p",
        &pid,
        "--metrics-addr",
        &addr,
        "--series-grace",
        "1s",
        "--interval",
        "200ms",
    ]);
    udp_phase(&page, &mut w);
    tcp_phase(&page, &mut w, &link);
    // promtool (Prometheus' own linter) accepts the classic text format.
    promtool_accepts(&scrape(page.port, CLASSIC));

    // The workload goes away: its series leave after the grace period.
    w.close_stdin();
    w.wait();
    drop((w, cg));
    drop(s);
    let text = scrape_until(page.port, OPENMETRICS, 6, |t| !t.contains(&page.label_end));
    assert!(
        !text.contains(&page.label_end),
        "series of a removed workload stayed"
    );
    assert!(healthz_ok(page.port));
    // Daemon: still running after its -p target exited; SIGTERM ends it cleanly.
    let run = mon.stop_ok();
    assert!(
        run.err
            .iter()
            .any(|l| l.contains("level=info") && l.contains("msg=")),
        "logfmt logs: {:?}",
        run.err
    );
}
