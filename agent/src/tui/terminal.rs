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
