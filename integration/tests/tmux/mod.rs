//! A tmux server of our own, driving a program in a real terminal as a person would: keys
//! with `send-keys`, the screen with `capture-pane`. Shared by the terminal tests
//! (`tui_view`, `terminal_command`), which check user space only and run on the host only
//! (docs/kernels.md).

#![allow(dead_code)]

use std::{
    path::Path,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{sh, unique};

/// A tmux server of our own (its own socket), with one pane running one command.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts `cmd` (a shell command line) in a `w`×`h` pane that stays after it exits.
    pub fn start(cmd: &str, w: u16, h: u16) -> Self {
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

    pub fn run(&self, args: &[&str]) -> String {
        let mut all = vec!["-L", self.socket.as_str(), "-f", "/dev/null"];
        all.extend_from_slice(args);
        sh("tmux", &all)
    }

    /// Sends keys (tmux key names: `Enter`, `Escape`, `q`, …).
    pub fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.run(&["send-keys", "-t", "main", k]);
            // One redraw per key, as a person types.
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "main", "-l", text]);
        thread::sleep(Duration::from_millis(50));
    }

    /// The screen's text.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "main"])
    }

    /// The screen's text with the lines scrolled off it (tmux scrolls a line into its
    /// history when a pane's process exits).
    pub fn history(&self) -> String {
        self.run(&["capture-pane", "-p", "-S", "-", "-t", "main"])
    }

    /// Saves the screen as `NAME.txt` under `$PNM_TUI_CAPTURES`, when set (README's captures).
    pub fn save(&self, name: &str) {
        if let Ok(dir) = std::env::var("PNM_TUI_CAPTURES") {
            let _ = std::fs::write(Path::new(&dir).join(format!("{name}.txt")), self.screen());
        }
    }

    /// A pane variable (`#{…}`).
    pub fn var(&self, name: &str) -> String {
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
    pub fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
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

/// Waits until the pane's process has exited; returns its exit status.
pub fn wait_exit(t: &Tmux) -> String {
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
