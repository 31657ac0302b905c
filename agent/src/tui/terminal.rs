//! The terminal while the view is open: raw mode and the alternate screen on the way in,
//! and always back out — when the view is dropped (q, Ctrl-C, a signal, the command's exit,
//! an error: every way out of the run loop drops it) and from a panic hook, which runs
//! before unwinding drops the run's set-up. Log records written while the view is open are
//! held and printed on stderr once the terminal is back, so none is lost or drawn over.

use std::{
    io::{self, Stdout, Write},
    sync::{
        Mutex, Once,
        atomic::{AtomicBool, Ordering},
    },
};

use crossterm::{
    cursor::{Hide, Show},
    execute,
    terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode},
};
use ratatui::{Terminal, backend::CrosstermBackend};

/// True while the view owns the terminal.
static OPEN: AtomicBool = AtomicBool::new(false);
/// Log output held while the view is open.
static HELD_LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// The terminal in raw mode on the alternate screen; restored on drop.
pub struct Screen {
    /// ratatui's terminal over stdout.
    pub term: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    /// Switches the terminal to the view.
    pub fn enter() -> anyhow::Result<Self> {
        install_panic_hook();
        OPEN.store(true, Ordering::SeqCst);
        enable_raw_mode().map_err(|e| anyhow::anyhow!("terminal raw mode: {e}"))?;
        let mut out = io::stdout();
        // From here on, a failure still restores (the guard exists before it can fail).
        let guard = Restore;
        execute!(out, EnterAlternateScreen, Hide)?;
        let term = Terminal::new(CrosstermBackend::new(out))?;
        std::mem::forget(guard);
        Ok(Self { term })
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

/// Restores on drop (a failed [`Screen::enter`]).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves raw mode and the alternate screen, shows the cursor, and prints the held log
/// records. Harmless when the view is not open.
pub fn restore() {
    if OPEN.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
    let held = std::mem::take(&mut *HELD_LOGS.lock().unwrap_or_else(|e| e.into_inner()));
    let _ = io::stderr().write_all(&held);
}

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // The message must land on the normal screen, readable; unwinding then drops
            // the run's set-up as usual.
            restore();
            previous(info);
        }));
    });
}

/// Where log records go: stderr, or held while the view is open.
pub struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if OPEN.load(Ordering::SeqCst) {
            HELD_LOGS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        } else {
            io::stderr().write(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::Read as _,
        os::fd::{AsFd as _, OwnedFd},
        process::{Command, Stdio},
    };

    use nix::{
        pty::openpty,
        sys::termios::{LocalFlags, tcgetattr},
    };

    use super::Screen;

    /// Set in the child: it opens the view on the pseudo-terminal it was given and panics.
    const CHILD: &str = "PNM_PANIC_HOOK_CHILD";
    const MESSAGE: &str = "a panic while the view is open";

    /// A panic while the view is open gives the terminal back before its message is printed:
    /// the message lands on the normal screen, after raw mode and the alternate screen are
    /// left and the cursor is shown again; the terminal is out of raw mode after. Run as a
    /// child of this test binary on a pseudo-terminal (a real terminal, whose bytes and
    /// modes the parent reads), since the panic ends it.
    #[test]
    fn panic_hook_restores_the_terminal() {
        if std::env::var_os(CHILD).is_some() {
            let _screen = Screen::enter().expect("open the view on the pseudo-terminal");
            panic!("{MESSAGE}");
        }
        let pty = openpty(None, None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the pty"));
        let status = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "tui::terminal::tests::panic_hook_restores_the_terminal",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            // The message alone, no backtrace: what is checked is where it lands.
            .env("RUST_BACKTRACE", "0")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave))
            .status()
            .expect("run the child");
        assert!(!status.success(), "the child panics: {status}");
        let modes = tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        assert!(
            modes
                .local_flags
                .contains(LocalFlags::ICANON | LocalFlags::ECHO),
            "raw mode left: {:?}",
            modes.local_flags
        );
        // With the last slave closed, reading the master ends (EIO) after what was written.
        drop(pty.slave);
        let mut out = Vec::new();
        let mut master = std::fs::File::from(pty.master);
        let _ = master.read_to_end(&mut out);
        let out = String::from_utf8_lossy(&out);
        let at = |what: &str| {
            out.find(what)
                .unwrap_or_else(|| panic!("no {what:?} in what the child wrote: {out:?}"))
        };
        let (entered, left, shown) = (at("\x1b[?1049h"), at("\x1b[?1049l"), at("\x1b[?25h"));
        let message = at(MESSAGE);
        assert!(entered < left, "{out:?}");
        assert!(
            left < message && shown < message,
            "the message is printed before the terminal is restored: {out:?}"
        );
    }
}
