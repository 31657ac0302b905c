//! A command run under procnetmon2 on a terminal (issue #30), driven in a `tmux` pane as a
//! person would: the command gets the terminal (it reads what is typed, Ctrl-C and Ctrl-Z
//! reach it as they would without procnetmon2) and the report comes at its exit; with
//! `--view` it runs in the view's pane, whose rows its output never reaches. User space
//! only: host-only in the kernel matrix (docs/kernels.md).

mod tmux;

use procnetmon2_integration::{bin, skip_unless_root, unique};
use tmux::{Tmux, wait_exit};

/// The command reads a line typed into the pane; the report (the table of its whole run)
/// appears after its own output once it exits; the exit status is the command's.
#[test]
fn the_command_reads_the_terminal_and_the_report_follows_its_exit() {
    if skip_unless_root() {
        return;
    }
    let cmd = format!(
        "exec {} -- sh -c 'echo hello; read x; echo got $x; exit $x'",
        bin("procnetmon2").display()
    );
    let t = Tmux::start(&cmd, 150, 30);
    t.wait_for("the command's hello", |s| s.contains("hello"));
    // Only the command's group may read the terminal: were it in the background, `read`
    // would stop it (SIGTTIN) and nothing below would come.
    t.type_text("7");
    t.keys(&["Enter"]);
    let s = t.wait_for("the report", |s| s.contains("(window total)"));
    assert_eq!(wait_exit(&t), "7", "the command's status:\n{s}");
    let s = t.history();
    let at = |what: &str| {
        s.find(what)
            .unwrap_or_else(|| panic!("no {what:?} on the screen:\n{s}"))
    };
    assert!(at("hello") < at("got 7"), "{s}");
    assert!(at("got 7") < at("(window total)"), "{s}");
    let row = s
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("sh"))
        .unwrap_or_else(|| panic!("no row for the command:\n{s}"));
    assert!(row.contains("(exited)"), "{row}");
    // No view was opened: the terminal stayed the command's, on the normal screen.
    assert_eq!(t.var("alternate_on"), "0");
}

/// Ctrl-C reaches the command (its process group has the terminal), not procnetmon2, which
/// prints the report of the run — JSON with --json, on standard error — and exits with the
/// command's status (130: SIGINT), not killed by the signal.
#[test]
fn ctrl_c_ends_the_command_and_the_report_still_prints() {
    if skip_unless_root() {
        return;
    }
    let err = std::env::temp_dir().join(format!("{}.stderr", unique("pnmcc")));
    let cmd = format!(
        "exec {} --json -- sh -c 'echo ready; sleep 100' 2>{}",
        bin("procnetmon2").display(),
        err.display()
    );
    let t = Tmux::start(&cmd, 150, 30);
    t.wait_for("the command", |s| s.contains("ready"));
    t.keys(&["C-c"]);
    // The status, not a signal: procnetmon2 exited on its own (pane_dead_signal is empty).
    assert_eq!(wait_exit(&t), "130");
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let _ = std::fs::remove_file(&err);
    let reports: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(reports.len(), 1, "one report, at the end:\n{stderr}");
    let procs = reports[0]["processes"]
        .as_object()
        .unwrap_or_else(|| panic!("no processes:\n{stderr}"));
    assert_eq!(procs.len(), 1, "{stderr}");
    let p = procs.values().next().expect("the command's row");
    assert_eq!(p["name"], "sh", "{stderr}");
    assert_eq!(p["exited"], true, "{stderr}");
    // Nothing but the command's output on the terminal.
    assert!(!t.screen().contains("processes"), "{}", t.screen());
}

/// Ctrl-Z stops the command, and procnetmon2 with it, so that the shell gets the terminal
/// back and lists the job as stopped; `fg` continues both, the command has the terminal
/// again and reads from it; the status is the command's.
#[test]
fn ctrl_z_stops_the_job_and_fg_continues_it() {
    if skip_unless_root() {
        return;
    }
    let t = Tmux::start("PS1='$ ' exec bash --norc --noprofile -i", 150, 30);
    t.wait_for("the shell", |s| s.lines().any(|l| l.trim_end() == "$"));
    t.type_text(&format!(
        "{} -- sh -c 'echo hi; read x; echo got $x; exit 4'",
        bin("procnetmon2").display()
    ));
    t.keys(&["Enter"]);
    t.wait_for("the command", |s| s.lines().any(|l| l == "hi"));
    t.keys(&["C-z"]);
    t.wait_for("the stopped job", |s| s.contains("Stopped"));
    t.type_text("fg");
    t.keys(&["Enter"]);
    // `fg` echoes the job's command line; then the command reads again.
    t.wait_for("the job in the foreground", |s| {
        s.lines().filter(|l| l.contains("exit 4'")).count() >= 3
    });
    t.type_text("5");
    t.keys(&["Enter"]);
    t.wait_for("the report", |s| {
        s.contains("got 5") && s.contains("(window total)")
    });
    t.type_text("echo status=$?");
    t.keys(&["Enter"]);
    t.wait_for("the job's status", |s| s.contains("status=4"));
}

/// `--view -- CMD`: keys go to the view until Tab hands them to the command; the command's
/// output (a thousand lines) shows in the pane only, never in the view's rows, whose header
/// and columns stay intact; its exit closes the view with its status.
#[test]
fn the_view_keeps_the_command_in_its_pane() {
    if skip_unless_root() {
        return;
    }
    let script = "read x; i=0; while [ $i -lt 1000 ]; do echo \"line $i\"; i=$((i+1)); done; echo \"got:$x:\"; read y; exit 6";
    let cmd = format!(
        "exec {} --view --interval 300ms -- sh -c '{script}' 2>/dev/null",
        bin("procnetmon2").display()
    );
    let t = Tmux::start(&cmd, 150, 30);
    t.wait_for("the view and the pane", |s| {
        s.contains("Processes and workloads") && s.contains("Tab: keys to the command")
    });
    assert_eq!(t.var("alternate_on"), "1");
    // A key for the view (rates in bytes), not for the command.
    t.keys(&["b"]);
    t.wait_for("rates in bytes", |s| s.contains("B/s"));
    t.keys(&["Tab"]);
    t.wait_for("keys to the command", |s| {
        s.contains("keys go to the command")
    });
    t.type_text("go");
    t.keys(&["Enter"]);
    // Every screen while it prints: the view's lines intact, the output in the pane only.
    let s = t.wait_for("the last lines in the pane", |s| {
        view_intact(s);
        s.contains("line 999") && s.contains("got:")
    });
    // `read x` got "go", not the `b` meant for the view.
    assert!(s.contains("got:go:"), "{s}");
    t.keys(&["Enter"]);
    assert_eq!(wait_exit(&t), "6");
    assert_eq!(t.var("alternate_on"), "0", "the alternate screen was left");
    let s = t.history();
    assert!(s.contains("line 999"), "the pane's last lines stay:\n{s}");
    assert!(s.contains("Total In") && s.contains("(exited)"), "{s}");
}

/// The view's lines on a capture of the pane: the header and the column titles as drawn,
/// and none of the command's output above the pane's title line.
fn view_intact(s: &str) {
    let lines: Vec<&str> = s.lines().collect();
    assert!(lines[0].starts_with("procnetmon2  rows "), "header:\n{s}");
    assert!(lines[2].starts_with(" Processes and workloads ─"), "{s}");
    let cols: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        cols[..6],
        ["PID", "NAME", "RATE", "IN", "RATE", "OUT"],
        "column titles:\n{s}"
    );
    let pane = lines
        .iter()
        .position(|l| l.contains("keys go to the command"))
        .unwrap_or_else(|| panic!("no pane title:\n{s}"));
    for l in &lines[..pane] {
        assert!(
            !l.contains("line ") && !l.contains("got:"),
            "the command's output in the view's rows: {l:?}\n{s}"
        );
    }
}
