//! Render tests: each view drawn on ratatui's `TestBackend` from fake reports at a fixed
//! clock, compared line by line with the text it must show.

use std::time::{Duration, Instant};

use ratatui::{Terminal, backend::TestBackend};

use super::{
    fixtures::scene,
    keys::{Action, View},
    state::State,
    view::{draw, spark},
};

/// The screen as text, one line per terminal row, trailing blanks cut.
fn screen(s: &State, now: Instant, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
    t.draw(|f| draw(f, s, now)).expect("draw");
    let buf = t.backend().buffer();
    (0..h)
        .map(|y| {
            let line: String = (0..w).map(|x| buf[(x, y)].symbol().to_owned()).collect();
            line.trim_end().to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A view of the standard scene after three snapshots a second apart, 10 s into a 60 s window.
fn scene_state() -> (State, Instant) {
    let t0 = Instant::now();
    let mut s = State::new(Duration::from_secs(1), Some(t0 + Duration::from_secs(60)));
    for i in 0_u32..3 {
        let mut r = scene();
        r.processes[0].row.rate_in *= f64::from(i + 1) / 3.0;
        s.ingest(r, t0 + Duration::from_secs(u64::from(i)));
    }
    s.apply(Action::Home);
    (s, t0 + Duration::from_secs(10))
}

fn assert_screen(got: &str, want: &str) {
    let want = want.strip_prefix('\n').unwrap_or(want);
    assert_eq!(
        got,
        want.trim_end(),
        "\n--- got ---\n{got}\n--- want ---\n{want}"
    );
}

#[test]
fn rows_view() {
    let (s, now) = scene_state();
    assert_screen(
        &screen(&s, now, 120, 8),
        "
procnetmon2  rows 3  in 1.0 MiB 800.0 Kbps  out 512.0 KiB 425.6 Kbps  every 1s  window 50s left

 Processes and workloads ───────────────────────────────────────────────────────────────────────────────────────────────
 PID      NAME         CONTAINER   RATE IN    RATE OUT   TOTAL IN   TOTAL OUT  TCP  UDP  PEAK       RATE 60s▼
>100      curl                     800.0 Kbps 16.0 Kbps  1.0 MiB    10.0 KiB   2    0    1.6 Mbps   ▃▆█
 -        /system.slic             0 bps      409.6 Kbps 0 B        500.0 KiB  1    0    819.2 Kbps ███
 200      nginx        web/nginx-7 0 bps      0 bps      4.0 KiB    2.0 KiB    1    0    0 bps
sort: rate ▼  1 rows 2 connections 3 hosts  ? keys  q quit
",
    );
}

/// The scene after curl's second connection closed, seen 10 s into the run.
fn with_closed() -> (State, Instant) {
    let (mut s, now) = scene_state();
    let mut r = scene();
    r.processes[0].connections.as_mut().unwrap()[1].state = "CLOSED";
    s.ingest(r, now - Duration::from_secs(7));
    (s, now)
}

#[test]
fn connections_view_keeps_the_closed_one() {
    let (mut s, now) = with_closed();
    s.apply(Action::Open);
    assert_screen(
        &screen(&s, now, 120, 8),
        "
procnetmon2  rows 3  in 1.0 MiB 800.0 Kbps  out 512.0 KiB 425.6 Kbps  every 1s  window 50s left

 TCP health of 100 curl: no failed connect, no retransmission, no RTT sample yet
 Connections of 100 curl: 1 open, 1 closed ─────────────────────────────────────────────────────────────────────────────
 PROTO LOCAL          REMOTE       STATE       IN         OUT        RATE IN    RATE OUT   AGE     RTT     RETX
>tcp   10.0.0.1:40000 10.0.0.2:443 ESTABLISHED 976.6 KiB  8.0 KiB    800.0 Kbps 16.0 Kbps  42s     1.5ms   0
 tcp   10.0.0.1:40001 10.0.0.3:80  CLOSED      47.4 KiB   2.0 KiB    0 bps      0 bps      42s     1.5ms   0
sort: rate ▼  1 rows 2 connections 3 hosts  ? keys  q quit
",
    );
}

#[test]
fn hosts_view_sums_live_and_closed() {
    let (mut s, now) = with_closed();
    s.apply(Action::Show(View::Hosts));
    assert_screen(
        &screen(&s, now, 100, 7),
        "
procnetmon2  rows 3  in 1.0 MiB 800.0 Kbps  out 512.0 KiB 425.6 Kbps  every 1s  window 50s left

 Remote hosts of 100 curl (a: every row) ───────────────────────────────────────────────────────────
 REMOTE          IN         OUT        RATE IN    RATE OUT   CONNS     LAST SEEN
>10.0.0.2        976.6 KiB  8.0 KiB    800.0 Kbps 16.0 Kbps  1/1       3s ago
 10.0.0.3        47.4 KiB   2.0 KiB    0 bps      0 bps      0/1       3s ago
sort: rate ▼  1 rows 2 connections 3 hosts  ? keys  q quit
",
    );
}

#[test]
fn header_shows_pause_untracked_and_bytes_per_second() {
    let t0 = Instant::now();
    let mut s = State::new(Duration::from_millis(500), None);
    let mut r = scene();
    r.untracked.bytes_in = 2048;
    r.untracked_sockets = 3;
    s.ingest(r, t0);
    s.apply(Action::Bits);
    s.apply(Action::Pause);
    let text = screen(&s, t0, 120, 6);
    let head: Vec<&str> = text.lines().take(2).collect();
    assert_eq!(
        head,
        [
            "procnetmon2  rows 3  in 1.0 MiB 97.7 KiB/s  out 512.0 KiB 52.0 KiB/s  every 500ms  PAUSED",
            "untracked: in 2.0 KiB out 0 B (3 sockets whose owner could not be recorded)",
        ]
    );
}

#[test]
fn help_lists_every_key() {
    let (mut s, now) = scene_state();
    s.apply(Action::Help);
    let text = screen(&s, now, 100, 20);
    for (key, what) in super::keys::HELP {
        assert!(
            text.lines().any(|l| l.contains(key) && l.contains(what)),
            "{key}: {what}\n{text}"
        );
    }
}

#[test]
fn filter_line_and_no_match() {
    let (mut s, now) = scene_state();
    s.apply(Action::FilterStart);
    for c in "zzz".chars() {
        s.apply(Action::FilterChar(c));
    }
    let text = screen(&s, now, 100, 6);
    assert!(text.contains("none match the filter"), "{text}");
    assert_eq!(
        text.lines().last(),
        Some("filter: zzz█  (Enter keep, Esc drop)")
    );
}

#[test]
fn sparklines() {
    assert_eq!(spark(&[], 5), "");
    assert_eq!(spark(&[0.0, 0.0], 5), "  ");
    assert_eq!(spark(&[1.0, 2.0, 4.0, 8.0], 10), "▁▂▄█");
    // Squeezed: the highest of each pair, newest on the right.
    assert_eq!(spark(&[8.0, 0.0, 0.0, 4.0, 2.0, 2.0], 3), "█▄▂");
}

/// The scene with TCP health on curl's row: 2 failed connects, 7 retransmissions, RTT samples
/// in (32, 64] µs ×9 and (512, 1024] µs ×1.
fn with_health() -> (State, Instant) {
    let t0 = Instant::now();
    let mut s = State::new(Duration::from_secs(1), None);
    let mut r = scene();
    let h = &mut r.processes[0].row.health;
    h.connect_failures = 2;
    h.retransmitted_segments = 7;
    h.rtt.buckets[6] = 9;
    h.rtt.buckets[10] = 1;
    s.ingest(r, t0);
    s.apply(Action::Home);
    (s, t0)
}

#[test]
fn health_column_and_drill_down_histogram() {
    let (mut s, now) = with_health();
    let rows = screen(&s, now, 140, 8);
    assert!(rows.contains("FAIL/RETX/RTT"), "{rows}");
    assert!(rows.contains("2/7/64µs"), "{rows}");
    // Rows without health show a dash.
    assert!(
        rows.lines().nth(5).is_some_and(|l| l.contains(" - ")),
        "{rows}"
    );
    s.apply(Action::Open);
    let conns = screen(&s, now, 140, 10);
    let lines: Vec<&str> = conns.lines().collect();
    assert_eq!(
        lines[2],
        " TCP health of 100 curl: 2 failed connects, 7 retransmitted segments; RTT p50 64µs p90 64µs p99 1.0ms max 1.0ms (10 samples)"
    );
    assert_eq!(lines[3], format!("  ≤   64µs {} 9", "█".repeat(30)));
    assert_eq!(lines[4], format!("  ≤  1.0ms {:<30} 1", "████"));
    assert!(lines[5].contains("Connections of 100 curl"), "{conns}");
}

/// A process named `ESC ] 0 ; PWNED BEL` (an OSC sequence that retitles a terminal) reads the
/// same, escaped by `render::printable`, in the table and in the view, and no escape sequence
/// of the name reaches the terminal from either: the bytes each writes are searched for the
/// OSC introducer and the BEL, and every ESC left must be one of the view's own CSI sequences.
#[test]
fn hostile_names_read_the_same_in_the_table_and_the_view() {
    const HOSTILE: &str = "\x1b]0;PWNED\x07";
    const SHOWN: &str = "\\u{1b}]0;PWNED\\u{7}";
    let mut r = scene();
    r.processes[0].name = HOSTILE.into();
    r.processes[1].name = "x\x1b[2J\ry".into();

    let mut table = Vec::new();
    crate::render::table::write(&mut table, &r, false, false).expect("table");
    let table = String::from_utf8(table).expect("utf-8");
    // The same escaped text, cut to the table's 16-character name column.
    assert!(table.contains(&SHOWN[..16]), "{table}");
    assert!(table.contains("x\\u{1b}[2J\\ry"), "{table}");

    let mut s = State::new(Duration::from_secs(1), None);
    let t0 = Instant::now();
    s.ingest(r, t0);
    let text = screen(&s, t0, 160, 8);
    assert!(text.contains(SHOWN), "{text}");
    assert!(text.contains("x\\u{1b}[2J\\ry"), "{text}");

    // The bytes the view writes to a real terminal backend.
    /// What the backend writes, kept where the test can read it.
    #[derive(Clone, Default)]
    struct Tty(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
    impl std::io::Write for Tty {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let tty = Tty::default();
    let mut term = Terminal::with_options(
        ratatui::backend::CrosstermBackend::new(tty.clone()),
        ratatui::TerminalOptions {
            viewport: ratatui::Viewport::Fixed(ratatui::layout::Rect::new(0, 0, 160, 8)),
        },
    )
    .expect("term");
    term.draw(|f| draw(f, &s, t0)).expect("draw");
    drop(term);
    let bytes = tty.0.borrow().clone();
    assert!(String::from_utf8_lossy(&bytes).contains(SHOWN));
    for (what, out) in [("table", table.as_bytes()), ("view", &bytes[..])] {
        assert!(!out.contains(&0x07), "{what}: BEL reached the terminal");
        assert!(!out.contains(&b'\r'), "{what}: CR reached the terminal");
        for (i, _) in out.iter().enumerate().filter(|(_, b)| **b == 0x1b) {
            // The view moves the cursor and sets styles with CSI (`ESC [`) sequences of its
            // own; the name's `ESC [2J` was escaped, so it shows as text, not as a CSI.
            assert_eq!(out.get(i + 1), Some(&b'['), "{what}: ESC not a CSI at {i}");
        }
        assert!(
            !String::from_utf8_lossy(out).contains("\x1b[2J"),
            "{what}: the name's clear-screen reached the terminal"
        );
    }
}
