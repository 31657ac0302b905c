//! The interactive view, driven like a person would: the real binary in a `tmux` pane (a
//! real terminal), keys sent with `send-keys`, the screen read with `capture-pane`, against
//! real traffic between network namespaces. Byte totals are checked against the veth's own
//! counters and the UDP formula, never against procnetmon2's other outputs.

mod tmux;

use std::path::Path;

use procnetmon2_integration::{Cgroup, Link, Peer, Proc, Scenario, bin, sh, udp4_bytes, unique};
use tmux::{Tmux, wait_exit};

/// Bytes as the view prints them (binary units, one decimal).
fn shown(b: u64) -> String {
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    for u in ["KiB", "MiB", "GiB"] {
        if v < 1024.0 {
            return format!("{v:.1} {u}");
        }
        v /= 1024.0;
    }
    format!("{v:.1} TiB")
}

/// The first word of a table line, without the selection mark.
fn first_word(line: &str) -> Option<&str> {
    line.trim_start_matches('>').split_whitespace().next()
}

/// The screen line of the row of `pid`.
fn row_of(screen: &str, pid: u32) -> Option<&str> {
    screen
        .lines()
        .find(|l| first_word(l) == Some(&pid.to_string()))
}

/// PIDs of the rows, top to bottom.
fn pids_in(screen: &str, pids: &[u32]) -> Vec<u32> {
    screen
        .lines()
        .filter_map(|l| first_word(l)?.parse().ok())
        .filter(|p| pids.contains(p))
        .collect()
}

/// The two targets of the view test, in one cgroup and side a of `link`: a TCP client whose
/// connection is open before the view starts (300 kB up, 2 MB down over the veth), and a UDP
/// sender over loopback (100 datagrams of 1,000 bytes). Both move data on "go".
fn targets(s: &Scenario, link: &Link, cg: &Cgroup) -> (Proc, Proc) {
    s.background(Peer::tcp_server(&link.addr_b(5001)).in_netns(&link.b));
    s.background(Peer::udp_recv("127.0.0.1:6001", 100).in_netns(&link.a));
    let tcp = Peer::tcp_client(&link.addr_b(5001), 300_000, 2_000_000)
        .on_go()
        .hold()
        .in_cgroup(cg)
        .in_netns(&link.a)
        .start();
    let udp = Peer::udp_send("127.0.0.1:6001", 100, 1000)
        .on_go()
        .hold()
        .in_cgroup(cg)
        .in_netns(&link.a)
        .start();
    (tcp, udp)
}

/// Sorting: `s` eight times from the default (total rate) is PID, lowest first; `S`
/// reverses.
fn sorting(t: &Tmux, p1: u32, p2: u32) {
    t.keys(&["s"; 8]);
    let s = t.wait_for("PID sort", |s| s.contains("sort: pid"));
    let mut asc = vec![p1, p2];
    asc.sort_unstable();
    assert_eq!(pids_in(&s, &[p1, p2]), asc, "{s}");
    t.keys(&["S"]);
    let s = t.wait_for("reversed", |s| s.contains("sort: pid ▼"));
    asc.reverse();
    assert_eq!(pids_in(&s, &[p1, p2]), asc, "{s}");
}

/// Filtering: by the UDP sender's PID, then by port (only the TCP client has `port`), which
/// stays on.
fn filtering(t: &Tmux, tcp: u32, udp: u32, port: u16) {
    t.keys(&["/"]);
    t.type_text(&udp.to_string());
    t.keys(&["Enter"]);
    let s = t.wait_for("filter by pid", |s| row_of(s, tcp).is_none());
    assert!(row_of(&s, udp).is_some(), "{s}");
    t.keys(&["/", "Escape", "/"]);
    t.type_text(&format!("port:{port}"));
    t.keys(&["Enter"]);
    let s = t.wait_for("filter by port", |s| {
        row_of(s, udp).is_none() && row_of(s, tcp).is_some()
    });
    assert!(s.contains(&format!("filter: port:{port}")), "{s}");
}

/// Enter on the selected client: its connection to `server` (closed after the transfer,
/// still shown); `3`: the hosts view with `server_ip`; `?`: help, and back.
fn details_views(t: &Tmux, server: &str, server_ip: &str) {
    t.keys(&["Enter"]);
    let s = t.wait_for("connections", |s| s.contains("Connections of"));
    let line = s
        .lines()
        .find(|l| l.contains(server))
        .unwrap_or_else(|| panic!("no connection to {server}:\n{s}"));
    assert!(line.contains("tcp"), "{line}");
    t.save("connections");
    t.keys(&["3"]);
    let s = t.wait_for("hosts", |s| s.contains("Remote hosts of"));
    assert!(s.lines().any(|l| l.contains(server_ip)), "{s}");
    t.save("hosts");
    t.keys(&["?"]);
    t.wait_for("help", |s| s.contains("pause the figures"));
    t.save("help");
    t.keys(&["?", "Escape"]);
}

/// Two targets in one cgroup and namespace: a TCP client (its connection opened before the
/// view starts) downloading over a veth, and a UDP sender over loopback. The view shows the
/// veth's byte counts and the UDP formula; sorting, filtering, Enter, the hosts view and
/// `q` work; the terminal and the host are left clean.
#[test]
fn interactive_view_in_tmux() {
    let Some(s) = Scenario::new() else { return };
    let (link, cg) = (s.link(7), s.cgroup());
    let (mut tcp, mut udp) = targets(&s, &link, &cg);
    let (p1, p2) = (tcp.pid(), udp.pid());
    let err = std::env::temp_dir().join(format!("{}.stderr", unique("pnmtui")));
    let cmd = format!(
        "exec {} -p {p1},{p2} --interval 300ms 2>{}",
        bin("procnetmon2").display(),
        err.display()
    );
    let t = Tmux::start(&cmd, 120, 24);
    t.wait_for("both rows", |s| {
        row_of(s, p1).is_some() && row_of(s, p2).is_some()
    });
    assert_eq!(
        t.var("alternate_on"),
        "1",
        "the view is on the alternate screen"
    );

    // Traffic, measured by the veth.
    let before = link.stats();
    tcp.go("done");
    udp.go("done");
    let delta = link.since(&before);
    let (tin, tout) = (shown(delta.ip_rx()), shown(delta.ip_tx()));
    let uout = shown(100 * udp4_bytes(1000));
    let s = t.wait_for("the known totals", |s| {
        row_of(s, p1).is_some_and(|r| r.contains(&tin) && r.contains(&tout))
            && row_of(s, p2).is_some_and(|r| r.contains(&uout))
    });
    assert!(s.contains("procnetmon2"), "header:\n{s}");
    t.save("rows");
    assert!(delta.ip_rx() > 2_000_000, "{delta:?}");

    sorting(&t, p1, p2);
    filtering(&t, p1, p2, 5001);
    details_views(&t, &link.addr_b(5001), &link.veth.ip_b);

    // q: the run ends, the terminal is given back, nothing is left attached.
    t.keys(&["q"]);
    assert_eq!(wait_exit(&t), "0");
    assert_eq!(t.var("alternate_on"), "0", "the alternate screen was left");
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let attached = sh("bpftool", &["cgroup", "show", path(&cg.dir)]);
    assert!(
        attached.trim().is_empty(),
        "programs left on the cgroup: {attached}"
    );
    // The targets ran on, untouched.
    assert!(Path::new(&format!("/proc/{p1}")).exists());
    assert!(Path::new(&format!("/proc/{p2}")).exists());
}

/// SIGTERM while the view is open: the run stops, the terminal is given back.
#[test]
fn sigterm_restores_the_terminal() {
    let Some(s) = Scenario::new() else { return };
    let cg = s.cgroup();
    let mut target = Peer::udp_send("127.0.0.1:9", 1, 10)
        .on_go()
        .hold()
        .in_cgroup(&cg)
        .start();
    let cmd = format!(
        "exec {} -p {} 2>/dev/null",
        bin("procnetmon2").display(),
        target.pid()
    );
    let t = Tmux::start(&cmd, 120, 20);
    t.wait_for("the view", |s| s.contains("Processes and workloads"));
    assert_eq!(t.var("alternate_on"), "1");
    let pid = t.var("pane_pid");
    sh("kill", &["-TERM", &pid]);
    assert_eq!(wait_exit(&t), "0");
    assert_eq!(t.var("alternate_on"), "0");
    let attached = sh("bpftool", &["cgroup", "show", path(&cg.dir)]);
    assert!(attached.trim().is_empty(), "{attached}");
    target.close_stdin();
}

/// Spawn mode with `--view`: the command's exit ends the run; the view closes and its last
/// report is printed as the plain table; the exit status is the command's.
#[test]
fn spawned_command_exit_closes_the_view() {
    let Some(_s) = Scenario::new() else { return };
    let cmd = format!(
        "exec {} --view -- sh -c 'sleep 2; exit 3' 2>/dev/null",
        bin("procnetmon2").display(),
    );
    let t = Tmux::start(&cmd, 160, 20);
    t.wait_for("the view", |s| s.contains("Processes and workloads"));
    assert_eq!(wait_exit(&t), "3");
    assert_eq!(t.var("alternate_on"), "0");
    let s = t.screen();
    assert!(
        s.contains("Total In") && s.contains("(exited)"),
        "the last table:\n{s}"
    );
    assert!(!s.contains("Processes and workloads"), "{s}");
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The time the replay view's header shows (`REPLAY 2026-12-05 18:31:55.200+00:00`).
fn replay_time(screen: &str) -> String {
    let at = screen.find("REPLAY ").expect("REPLAY in the header") + "REPLAY ".len();
    let rest = &screen[at..];
    rest[..rest.find("  ").unwrap_or(rest.len())].to_owned()
}

/// `procnetmon2 replay DIR` opens the live view at the recording's end with REPLAY and the
/// frame's time in the header; ← steps back, `<` goes to the start, `J` jumps, `q` quits.
#[test]
fn replay_view_in_tmux() {
    let Some(_s) = Scenario::new() else { return };
    let dir = std::env::temp_dir().join(unique("pnm-rec-"));
    let agent = bin("procnetmon2");
    let out = std::process::Command::new(&agent)
        .args([
            "--no-tui",
            "--interval",
            "200ms",
            "--record",
            path(&dir),
            "--",
            "sleep",
            "2",
        ])
        .output()
        .expect("record");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cmd = format!("exec {} replay {} 2>/dev/null", agent.display(), path(&dir));
    let t = Tmux::start(&cmd, 160, 20);
    let s = t.wait_for("the replay view", |s| {
        s.contains("REPLAY") && s.contains("[end]")
    });
    assert!(
        s.contains("Processes and workloads") && s.contains("sleep"),
        "{s}"
    );
    let end = replay_time(&s);
    t.keys(&["Left"]);
    let s = t.wait_for("a step back", |s| !s.contains("[end]"));
    let back = replay_time(&s);
    assert!(back < end, "{back} before {end}");
    t.keys(&["<"]);
    let s = t.wait_for("the start", |s| s.contains("[start]"));
    let start = replay_time(&s);
    t.keys(&["J"]);
    t.wait_for("the jump prompt", |s| s.contains("jump to:"));
    t.type_text("+1s");
    t.keys(&["Enter"]);
    let s = t.wait_for("the jump", |s| {
        !s.contains("jump to:") && !s.contains("[start]")
    });
    assert!(replay_time(&s) > start, "{s}");
    t.keys(&["q"]);
    assert_eq!(wait_exit(&t), "0");
    assert_eq!(t.var("alternate_on"), "0");
    let _ = std::fs::remove_dir_all(&dir);
}
