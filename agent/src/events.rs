//! What wakes the main loop: the interval, the end of the `-t` window, the spawned
//! command's exit (its pidfd becomes readable) and, when it has the terminal, its stop
//! (SIGCHLD, then `waitid` on the pidfd says it is stopped), a target's move to another
//! cgroup (the kernel's ring buffer of moves becomes readable), fatal signals ([`Event`]s of
//! the run), and — with the interactive view — keys and resizes from the terminal
//! (crossterm's `EventStream`), which go to the view (`tui::Tui::input`, where keys are
//! handled) and become an event of the run only when they quit it, and what a command in
//! the view's pane writes on its pseudo-terminal. Signal handlers are
//! installed before anything on the host changes, so a signal during set-up is held until
//! the loop runs and ends the run through its one shutdown path.

use std::{
    future::poll_fn,
    os::fd::{AsFd as _, OwnedFd},
    task::Poll,
    time::Duration,
};

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures_core::Stream;
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{Signal, SignalKind, signal},
    time::{Instant, Interval, MissedTickBehavior},
};

use crate::{host::procs::PidFd, session::decide::Event, tui::keys::Input};

/// Every signal that ends a run and can be caught. (SIGPIPE stays ignored, as Rust sets
/// it: a closed reader shows up as `EPIPE` on the next report.)
const FATAL: [(SignalKind, &str); 7] = [
    (SignalKind::interrupt(), "SIGINT"),
    (SignalKind::terminate(), "SIGTERM"),
    (SignalKind::hangup(), "SIGHUP"),
    (SignalKind::quit(), "SIGQUIT"),
    (SignalKind::user_defined1(), "SIGUSR1"),
    (SignalKind::user_defined2(), "SIGUSR2"),
    (SignalKind::alarm(), "SIGALRM"),
];

/// The fatal signals, caught.
pub struct Signals(Vec<Signal>);

impl Signals {
    /// Installs the handlers (needs a runtime context: `Runtime::enter`).
    pub fn install() -> anyhow::Result<Self> {
        FATAL
            .iter()
            .map(|(k, name)| signal(*k).map_err(|e| anyhow::anyhow!("catch {name}: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()
            .map(Self)
    }

    /// Waits for any of them.
    async fn recv(&mut self) {
        poll_fn(|cx| {
            for s in &mut self.0 {
                if s.poll_recv(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await;
    }
}

/// What woke the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Something for the run (`session::step`).
    Event(Event),
    /// A key or resize for the interactive view.
    Input(Input),
    /// What the command in the view's pane wrote on its pseudo-terminal.
    Output(Vec<u8>),
}

/// The sources of events of one run.
pub struct Events {
    ticker: Interval,
    deadline: Option<Instant>,
    command: Option<AsyncFd<PidFd>>,
    moves: Option<AsyncFd<OwnedFd>>,
    signals: Signals,
    terminal: Option<EventStream>,
    /// SIGCHLD, while the command has the terminal (its stops are the run's business).
    stops: Option<Signal>,
    /// The master of the command's pseudo-terminal (`--view -- CMD`).
    pane: Option<AsyncFd<OwnedFd>>,
    /// Look whether the command is stopped before waiting for SIGCHLD.
    check_stop_now: bool,
}

impl Events {
    /// Ticks every `interval`; the window ends after `window`; `command` is the spawned
    /// command's pidfd.
    pub fn new(
        interval: Duration,
        window: Option<Duration>,
        command: Option<PidFd>,
        signals: Signals,
    ) -> anyhow::Result<Self> {
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let command = command
            // SAFETY: the pidfd is owned by the AsyncFd and stays open until it is dropped.
            .map(|fd| unsafe { AsyncFd::register(fd) })
            .transpose()
            .map_err(|e| anyhow::anyhow!("watch the command's pidfd: {e}"))?;
        Ok(Self {
            ticker,
            deadline: window.map(|w| Instant::now() + w),
            command,
            moves: None,
            signals,
            terminal: None,
            stops: None,
            pane: None,
            check_stop_now: false,
        })
    }

    /// Also wakes when `fd` (the kernel's ring buffer of moves) becomes readable.
    pub fn watch_moves(&mut self, fd: OwnedFd) -> anyhow::Result<()> {
        // SAFETY: the descriptor is owned by the AsyncFd and stays open until it is dropped.
        let fd = unsafe { AsyncFd::register(fd) }
            .map_err(|e| anyhow::anyhow!("watch the moves ring buffer: {e}"))?;
        self.moves = Some(fd);
        Ok(())
    }

    /// Also wakes on keys and resizes of the terminal (the interactive view).
    pub fn watch_terminal(&mut self) {
        self.terminal = Some(EventStream::new());
    }

    /// Also wakes when the command (which has the terminal) is stopped. A stop before this
    /// call is seen at the first `next`.
    pub fn watch_stops(&mut self) -> anyhow::Result<()> {
        let sigchld =
            signal(SignalKind::child()).map_err(|e| anyhow::anyhow!("catch SIGCHLD: {e}"))?;
        self.stops = Some(sigchld);
        self.check_stop_now = true;
        Ok(())
    }

    /// Also wakes on what the command writes on its pseudo-terminal (`master`, without
    /// blocking).
    pub fn watch_pane(&mut self, master: OwnedFd) -> anyhow::Result<()> {
        // SAFETY: the descriptor is owned by the AsyncFd and stays open until it is dropped.
        let fd = unsafe { AsyncFd::register(master) }
            .map_err(|e| anyhow::anyhow!("watch the command's pseudo-terminal: {e}"))?;
        self.pane = Some(fd);
        Ok(())
    }

    /// What comes next.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(next) = self.next_once().await {
                return next;
            }
        }
    }

    /// What comes next, or None when a source ended (the pane's pseudo-terminal closed).
    async fn next_once(&mut self) -> Option<Next> {
        let deadline = self.deadline;
        let window_end = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let command = self.command.as_ref();
        let command_exit = async move {
            match command {
                Some(fd) => {
                    let _ = fd.readable().await;
                }
                None => std::future::pending().await,
            }
        };
        let moves = self.moves.as_ref();
        let moved = async move {
            match moves {
                // Readiness is cleared before the step reads the ring: a move written after
                // that wakes the loop again (the kernel forces a wake-up per move).
                Some(fd) => match fd.readable().await {
                    Ok(mut ready) => ready.clear_ready(),
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let terminal = self.terminal.as_mut();
        let input = async move {
            match terminal {
                Some(t) => next_input(t).await,
                None => std::future::pending().await,
            }
        };
        let stops = self.stops.as_mut();
        let check_now = std::mem::take(&mut self.check_stop_now);
        let stopped = async move {
            match (stops, command) {
                (Some(sigchld), Some(fd)) => {
                    if !(check_now && is_stopped(fd.get_ref())) {
                        loop {
                            sigchld.recv().await;
                            if is_stopped(fd.get_ref()) {
                                break;
                            }
                        }
                    }
                }
                _ => std::future::pending().await,
            }
        };
        let pane = self.pane.as_ref();
        let output = async move {
            match pane {
                Some(fd) => read_pane(fd).await,
                None => std::future::pending().await,
            }
        };
        let event = tokio::select! {
            _ = self.ticker.tick() => Event::Tick,
            () = window_end => Event::WindowEnd,
            () = command_exit => Event::CommandExited,
            () = moved => Event::Moved,
            () = stopped => Event::CommandStopped,
            () = self.signals.recv() => Event::Signal,
            i = input => return Some(Next::Input(i)),
            out = output => {
                return match out {
                    Some(bytes) => Some(Next::Output(bytes)),
                    None => {
                        // Every copy of its slave side is closed: the command and all it
                        // started are gone.
                        self.pane = None;
                        None
                    }
                };
            }
        };
        match event {
            Event::WindowEnd => self.deadline = None,
            Event::CommandExited => self.command = None,
            _ => {}
        }
        Some(Next::Event(event))
    }
}

/// True when the command is stopped (and nobody has taken note of it yet: the stop stays
/// for `Command::suspend` to take, `WNOWAIT`).
fn is_stopped(pidfd: &PidFd) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    let how = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    matches!(
        waitid(Id::PIDFd(pidfd.as_fd()), how),
        Ok(WaitStatus::Stopped(..))
    )
}

/// Reads what the command wrote on its pseudo-terminal: what is there when it becomes
/// readable, up to 64 KiB (one redraw of the pane for all of it). None once it is closed
/// (EIO: no slave side is open any more).
async fn read_pane(fd: &AsyncFd<OwnedFd>) -> Option<Vec<u8>> {
    const MOST: usize = 64 * 1024;
    let mut out = Vec::new();
    let mut buf = [0_u8; 16 * 1024];
    loop {
        let mut guard = match fd.readable().await {
            Ok(g) => g,
            Err(_) => return None,
        };
        loop {
            match guard
                .try_io(|f| nix::unistd::read(f.get_ref(), &mut buf).map_err(std::io::Error::from))
            {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return (!out.is_empty()).then_some(out);
                }
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.len() >= MOST {
                        return Some(out);
                    }
                }
                // Nothing more for now.
                Err(_would_block) => {
                    if out.is_empty() {
                        break;
                    }
                    return Some(out);
                }
            }
        }
    }
}

/// The next key press or resize (mouse, focus and paste events are skipped). A terminal
/// that stops sending (closed, or an error) leaves the other sources to end the run.
async fn next_input(t: &mut EventStream) -> Input {
    loop {
        match poll_fn(|cx| std::pin::Pin::new(&mut *t).poll_next(cx)).await {
            Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => {
                return Input::Key(k);
            }
            Some(Ok(TermEvent::Resize(..))) => return Input::Resize,
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                log::warn!("reading the terminal: {e}; keys are ignored from now on");
                return std::future::pending().await;
            }
            None => return std::future::pending().await,
        }
    }
}
