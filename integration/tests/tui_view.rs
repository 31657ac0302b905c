//! The interactive view, driven like a person would: the real binary in a `tmux` pane (a
//! real terminal), keys sent with `send-keys`, the screen read with `capture-pane`, against
//! real traffic between network namespaces. Byte totals are checked against the veth's own
//! counters and the UDP formula, never against procnetmon2's other outputs.

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{Cgroup, Netns, Proc, Veth, bin, sh, skip_unless_root, unique};

/// A tmux server of our own (its own socket), with one pane running one command.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `cmd` (a shell command line) in a `w`×`h` pane that stays after it exits.
    fn start(cmd: &str, w: u16, h: u16) -> Self {
        let t = Self {
            socket: unique("pnmtui"),
        };
        let (w, h) = (w.to_string(), h.to_string());
        t.run(&[
            "new-session",
            "-d",
            "-s",
            "main",
            "-x",
            &w,
            "-y",
            &h,
            cmd,
            ";",
            "set-option",
            "-t",
            "main",
            "remain-on-exit",
            "on",
        ]);
        t
    }

    fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["-L", self.socket.as_str(), "-f", "/dev/null"];
        all.extend_from_slice(args);
        sh("tmux", &all)
    }

    /// Sends keys (tmux key names: `Enter`, `Escape`, `q`, …).
    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", "main", k]);
            // One redraw per key, as a person types.
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "main", "-l", text]);
        thread::sleep(Duration::from_millis(50));
    }

    /// The screen's text.
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// Saves the screen as `NAME.txt` under `$PNM_TUI_CAPTURES`, when set (README's captures).
    fn save(&self, name: &str) {
        if let Ok(dir) = std::env::var("PNM_TUI_CAPTURES") {
            let _ = std::fs::write(Path::new(&dir).join(format!("{name}.txt")), self.screen());
        }
    }

    /// A pane variable (`#{…}`).
    fn var(&self, name: &str) -> String {
        self.run(&[
            "display-message",
            "-p",
            "-t",
            "main",
            &format!("#{{{name}}}"),
        ])
        .trim()
        .to_owned()
    }

    /// Waits until the screen satisfies `pred`; panics with the screen after 20 s.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; screen:\n{s}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

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

/// Two targets in one cgroup and namespace: a TCP client (its connection opened before the
/// view starts) downloading over a veth, and a UDP sender over loopback. The view shows the
/// veth's byte counts and the UDP formula; sorting, filtering, Enter, the hosts view and
/// `q` work; the terminal and the host are left clean.
#[test]
fn interactive_view_in_tmux() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 7);
    let cg = Cgroup::new();
    let addr = format!("{}:5001", v.ip_b);
    let server = Proc::peer(&["tcp-server", &addr], None, Some(&b));
    server.expect_line("ready");
    let mut tcp = Proc::peer(
        &[
            "tcp-client",
            &addr,
            "300000",
            "2000000",
            "0",
            "1",
            "wait",
            "hold",
        ],
        Some(&cg),
        Some(&a),
    );
    tcp.expect_line("connected");
    let sink = Proc::peer(&["udp-recv", "127.0.0.1:6001", "100"], None, Some(&a));
    sink.expect_line("ready");
    let mut udp = Proc::peer(
        &["udp-send", "127.0.0.1:6001", "100", "1000", "wait", "hold"],
        Some(&cg),
        Some(&a),
    );
    udp.expect_line("bound");
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
    let before = a.link_stats("eth0");
    tcp.send_line("go");
    udp.send_line("go");
    tcp.expect_line("done");
    udp.expect_line("done");
    let delta = a.link_stats("eth0").since(&before);
    let (tin, tout) = (shown(delta.ip_rx()), shown(delta.ip_tx()));
    let uout = shown(100 * (1000 + 28));
    let s = t.wait_for("the known totals", |s| {
        row_of(s, p1).is_some_and(|r| r.contains(&tin) && r.contains(&tout))
            && row_of(s, p2).is_some_and(|r| r.contains(&uout))
    });
    assert!(s.contains("procnetmon2"), "header:\n{s}");
    t.save("rows");
    assert!(delta.ip_rx() > 2_000_000, "{delta:?}");

    // Sorting: `s` eight times from the default (total rate) is PID, lowest first; `S`
    // reverses.
    t.keys(&["s"; 8]);
    let s = t.wait_for("PID sort", |s| s.contains("sort: pid"));
    let mut asc = vec![p1, p2];
    asc.sort_unstable();
    assert_eq!(pids_in(&s, &[p1, p2]), asc, "{s}");
    t.keys(&["S"]);
    let s = t.wait_for("reversed", |s| s.contains("sort: pid ▼"));
    asc.reverse();
    assert_eq!(pids_in(&s, &[p1, p2]), asc, "{s}");

    // Filtering: by PID, then by port (only the TCP client has port 5001), then none.
    t.keys(&["/"]);
    t.type_text(&p2.to_string());
    t.keys(&["Enter"]);
    let s = t.wait_for("filter by pid", |s| row_of(s, p1).is_none());
    assert!(row_of(&s, p2).is_some(), "{s}");
    t.keys(&["/", "Escape", "/"]);
    t.type_text("port:5001");
    t.keys(&["Enter"]);
    let s = t.wait_for("filter by port", |s| {
        row_of(s, p2).is_none() && row_of(s, p1).is_some()
    });
    assert!(s.contains("filter: port:5001"), "{s}");

    // Enter: the client's connection, to the server's address, closed after the transfer
    // and still shown.
    t.keys(&["Enter"]);
    let s = t.wait_for("connections", |s| s.contains("Connections of"));
    let line = s
        .lines()
        .find(|l| l.contains(&addr))
        .unwrap_or_else(|| panic!("no connection to {addr}:\n{s}"));
    assert!(line.contains("tcp"), "{line}");
    t.save("connections");
    // Hosts view: the server's address with what was exchanged.
    t.keys(&["3"]);
    let s = t.wait_for("hosts", |s| s.contains("Remote hosts of"));
    assert!(s.lines().any(|l| l.contains(&v.ip_b)), "{s}");
    t.save("hosts");
    // Help, then back.
    t.keys(&["?"]);
    t.wait_for("help", |s| s.contains("pause the figures"));
    t.save("help");
    t.keys(&["?", "Escape"]);

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

/// Waits until the pane's process has exited; returns its exit status.
fn wait_exit(t: &Tmux) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = format!("{}{}", t.var("pane_dead_status"), t.var("pane_dead_signal"));
        if t.var("pane_dead") == "1" {
            if !status.is_empty() {
                return status;
            }
            // The pane is dead (its terminal closed) but the status is not recorded yet. tmux
            // built with libutempter (Debian's is) runs the utempter helper when a pane's
            // terminal closes, with SIGCHLD set to its default until the helper ends: a pane
            // process that exits in that window is never reaped and its status never recorded
            // (tmux/tmux#311). The wider the gap between closing the terminal and the end of
            // the exit, the likelier: a run's exit is not instant. Another SIGCHLD makes the
            // server reap it, as tmux's maintainer suggests there.
            sh("kill", &["-CHLD", &t.var("pid")]);
        }
        assert!(
            Instant::now() < deadline,
            "procnetmon2 did not exit; screen:\n{}",
            t.screen()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM while the view is open: the run stops, the terminal is given back.
#[test]
fn sigterm_restores_the_terminal() {
    if skip_unless_root() {
        return;
    }
    let cg = Cgroup::new();
    let mut target = Proc::peer(
        &["udp-send", "127.0.0.1:9", "1", "10", "wait", "hold"],
        Some(&cg),
        None,
    );
    target.expect_line("bound");
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

/// Spawn mode: the command's exit ends the run; the view closes and its last report is
/// printed as the plain table; the exit status is the command's.
#[test]
fn spawned_command_exit_closes_the_view() {
    if skip_unless_root() {
        return;
    }
    let cmd = format!(
        "exec {} -- sh -c 'sleep 2; exit 3' 2>/dev/null",
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
    if skip_unless_root() {
        return;
    }
    let dir = std::env::temp_dir().join(unique("pnm-rec-"));
    let agent = bin("procnetmon2");
    let out = Command::new(&agent)
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
