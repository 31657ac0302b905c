//! Spawn mode: starts the command inside the cgroup made for it, so that no socket of the
//! command is ever created elsewhere, and hands out a pidfd that becomes readable when it
//! exits.
//!
//! How it meets the terminal (`config::CommandIo`):
//! - `Inherit`: procnetmon2's standard streams and process group, as always (scripts).
//! - `Foreground`: the terminal, as if run directly. The child makes its own process group
//!   and, before it executes, makes that group the terminal's foreground one (with SIGTTOU
//!   blocked: it asks from the background). Ctrl-C and Ctrl-Z then reach the command's
//!   group only: procnetmon2, in the background, never sees the terminal's SIGINT, so the
//!   report still prints when the command dies of it. procnetmon2 ignores SIGTTOU from then
//!   on, so that it may write (a log line, with `stty tostop`) and take the terminal back
//!   from the background without being stopped. The terminal goes back to procnetmon2's
//!   group when the command is reaped or dropped ([`Terminal`]'s drop: every exit path, an
//!   error or a panic included; after a SIGKILL the shell takes it back itself). When the
//!   command is stopped (Ctrl-Z), procnetmon2 stops too ([`Command::suspend`]). SIGTTIN never
//!   concerns procnetmon2: without the view it never reads the terminal.
//! - `Pane`: a pseudo-terminal of its own (`openpty`), in a new session whose controlling
//!   terminal it is; procnetmon2 keeps the master, reads what the command writes for the
//!   view's pane and writes the keys handed to it.

use std::{
    os::{
        fd::{BorrowedFd, OwnedFd},
        unix::process::{CommandExt as _, ExitStatusExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Stdio},
};

use anyhow::Context as _;
use nix::{
    sys::{
        signal::{SigHandler, SigSet, SigmaskHow, Signal, killpg, sigprocmask},
        wait::{Id, WaitPidFlag, WaitStatus, waitid},
    },
    unistd::{Pid, getpgrp, setpgid, setsid, tcgetpgrp, tcsetpgrp},
};

use crate::{config::CommandIo, error::SpawnError, host::procs::PidFd};

/// The running command of spawn mode.
#[derive(Debug)]
pub struct Command {
    child: Child,
    pidfd: Option<PidFd>,
    cgroup: PathBuf,
    /// The terminal, while the command has it (`Foreground`).
    terminal: Option<Terminal>,
    /// The master side of its pseudo-terminal (`Pane`), until taken.
    pty: Option<OwnedFd>,
}

impl Command {
    /// Starts `argv` in cgroup `cg`: the child moves itself there before it executes; `io`
    /// says how it meets the terminal, `pane` is the size of the pseudo-terminal of `Pane`
    /// (rows, columns).
    pub fn start(
        argv: &[String],
        cg: &Path,
        io: CommandIo,
        pane: (u16, u16),
    ) -> anyhow::Result<Self> {
        let procs_file =
            std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_encoded_bytes())
                .context("cgroup path")?;
        let io = match io {
            CommandIo::Foreground if !procnetmon2_has_the_terminal() => {
                // Started in the background (`&`): the command stays in procnetmon2's job,
                // where `fg` finds it, as it would run directly.
                log::info!(
                    "not in the terminal's foreground: the command shares procnetmon2's process group"
                );
                CommandIo::Inherit
            }
            io => io,
        };
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        let pty = match io {
            CommandIo::Pane => {
                let (master, slave) = open_pty(pane)?;
                cmd.stdin(Stdio::from(slave.try_clone().context("dup the pty")?))
                    .stdout(Stdio::from(slave.try_clone().context("dup the pty")?))
                    .stderr(Stdio::from(slave));
                Some(master)
            }
            CommandIo::Inherit | CommandIo::Foreground => None,
        };
        // SAFETY: only async-signal-safe calls (open, write, close, setpgid, sigprocmask,
        // tcsetpgrp, setsid, ioctl) between fork and exec, on data prepared before the fork
        // (no allocation in the child).
        unsafe {
            cmd.pre_exec(move || {
                join_cgroup(&procs_file)?;
                match io {
                    CommandIo::Inherit => Ok(()),
                    CommandIo::Foreground => take_the_terminal(),
                    CommandIo::Pane => own_session(),
                }
            });
        }
        let child = cmd.spawn().map_err(|e| {
            SpawnError(format!(
                "cannot run '{}': {e}; check the command name and PATH",
                argv[0]
            ))
        })?;
        let terminal = (io == CommandIo::Foreground).then(|| Terminal::handed_to(&child));
        let pidfd = PidFd::open(child.id()).context("pidfd_open for the command")?;
        Ok(Self {
            child,
            pidfd: Some(pidfd),
            cgroup: cg.to_path_buf(),
            terminal,
            pty,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its cgroup.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The pidfd to wait on (once).
    pub fn take_pidfd(&mut self) -> Option<PidFd> {
        self.pidfd.take()
    }

    /// The master side of its pseudo-terminal (`Pane`; once).
    pub fn take_pty(&mut self) -> Option<OwnedFd> {
        self.pty.take()
    }

    /// Reaps it and returns its exit status as a shell reports it (128 + signal).
    pub fn wait(&mut self) -> anyhow::Result<u8> {
        let st = self.child.wait().context("wait for the command")?;
        Ok(shell_status(st))
    }

    /// Its exit status if it has exited (reaped), without waiting.
    pub fn try_wait(&mut self) -> anyhow::Result<Option<u8>> {
        let st = self.child.try_wait().context("wait for the command")?;
        Ok(st.map(shell_status))
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// The command stopped while it has the terminal: takes the terminal back, stops
    /// procnetmon2's own process group the same way (so the shell sees the job stopped and
    /// takes the terminal), and once continued gives the terminal back to the command if
    /// procnetmon2 is in the foreground (`fg`; not after `bg`) and continues it. A stop
    /// signal to a group without a job-control shell above it (an orphaned one, e.g. a
    /// tmux pane's own process) is discarded by the kernel: then the command is continued
    /// at once, as a shell without job control would leave it.
    pub fn suspend(&mut self) -> anyhow::Result<()> {
        let Some(terminal) = &self.terminal else {
            return Ok(());
        };
        let pgid = self.pgid();
        let how = WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG;
        let signal = match waitid(Id::Pid(pgid), how) {
            Ok(WaitStatus::Stopped(_, s)) => s,
            // Continued already, or gone (its exit comes through the pidfd).
            _ => return Ok(()),
        };
        terminal.take_back(pgid);
        let mirror = match signal {
            Signal::SIGTTIN | Signal::SIGTTOU => signal,
            _ => Signal::SIGTSTP,
        };
        log::debug!("the command stopped ({signal}): stopping with it ({mirror})");
        // Returns once procnetmon2 is continued.
        killpg(getpgrp(), mirror).context("stop with the command")?;
        if procnetmon2_has_the_terminal() {
            let _ = tcsetpgrp(stdin(), pgid);
        }
        killpg(pgid, Signal::SIGCONT).context("continue the command")?;
        Ok(())
    }
}

/// How long a spawned command's cgroup gets to end after SIGTERM before `cgroup.kill`.
const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl crate::session::step::Command for Command {
    fn wait(&mut self) -> anyhow::Result<u8> {
        Command::wait(self)
    }

    fn try_wait(&mut self) -> anyhow::Result<Option<u8>> {
        Command::try_wait(self)
    }

    fn end(&mut self) -> std::time::Duration {
        let t = std::time::Instant::now();
        crate::host::lifecycle::stop_spawned(&self.cgroup, GRACE);
        t.elapsed()
    }

    fn suspend(&mut self) -> anyhow::Result<()> {
        Command::suspend(self)
    }
}

impl Drop for Command {
    fn drop(&mut self) {
        if let Some(t) = self.terminal.take() {
            t.take_back(self.pgid());
        }
    }
}

/// The terminal, handed to the command's process group.
#[derive(Debug)]
struct Terminal {
    /// procnetmon2's own process group, which the terminal goes back to.
    own: Pid,
}

impl Terminal {
    /// The child has made its group the terminal's foreground one (before it executed: the
    /// spawn returns after the exec). From now on procnetmon2 is in the background.
    fn handed_to(child: &Child) -> Self {
        // SAFETY: ignoring a signal changes no memory; the child has executed already, so
        // it keeps its own (default) disposition.
        if let Err(e) = unsafe { nix::sys::signal::signal(Signal::SIGTTOU, SigHandler::SigIgn) } {
            log::warn!("ignore SIGTTOU: {e}; writing to the terminal may stop procnetmon2");
        }
        log::debug!("the terminal is the command's ({})", child.id());
        Self { own: getpgrp() }
    }

    /// Takes the terminal back for procnetmon2's group if the command's group `pgid` has it,
    /// or if its foreground group is gone (a program that gave it to a group of its own, then
    /// died). Never from a group that took it since (the shell, after `bg`).
    fn take_back(&self, pgid: Pid) {
        let fg = match tcgetpgrp(stdin()) {
            Ok(fg) => fg,
            Err(_) => return,
        };
        let gone = fg != self.own && killpg(fg, None).is_err();
        if (fg == pgid || gone)
            && let Err(e) = tcsetpgrp(stdin(), self.own)
        {
            log::warn!("give the terminal back to procnetmon2: {e}");
        }
    }
}

/// Standard input (a terminal in `Foreground` mode).
fn stdin() -> BorrowedFd<'static> {
    // SAFETY: descriptor 0 stays open for the life of the process (nothing closes it).
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// True when procnetmon2's process group is the foreground group of the terminal on its
/// standard input (the terminal is its controlling one, and it was not started with `&`).
fn procnetmon2_has_the_terminal() -> bool {
    tcgetpgrp(stdin()).is_ok_and(|fg| fg == getpgrp())
}

/// In the child: joins the command's cgroup (writes "0" to its `cgroup.procs`).
fn join_cgroup(procs_file: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path prepared before the fork; open/write/close are
    // async-signal-safe.
    unsafe {
        let fd = libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
        libc::close(fd);
        if ok {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

/// In the child: a process group of its own, made the terminal's foreground group. The call
/// comes from the background, so SIGTTOU is blocked around it (std cleared the mask before
/// this runs, and the mask is restored before the exec). A terminal that refuses (it is
/// not the controlling one) leaves the command in the background of it, as `&` would.
fn take_the_terminal() -> std::io::Result<()> {
    setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    let mut old = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), Some(&mut old))?;
    // SAFETY: fd 0 is open for the child's whole life before the exec.
    let tty = unsafe { BorrowedFd::borrow_raw(0) };
    let _ = tcsetpgrp(tty, getpgrp());
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
    Ok(())
}

/// In the child: a new session whose controlling terminal is the pseudo-terminal on its
/// standard input (so Ctrl-C handed to it reaches it, and it gets SIGWINCH on resizes).
fn own_session() -> std::io::Result<()> {
    setsid()?;
    // SAFETY: fd 0 is the pty's slave, set up by std before this runs.
    let tty = unsafe { BorrowedFd::borrow_raw(0) };
    rustix::process::ioctl_tiocsctty(tty)?;
    Ok(())
}

/// A pseudo-terminal of `size` (rows, columns): (master, slave). Neither leaks into the
/// command beyond its standard streams (close-on-exec); the master reads without blocking
/// (the loop polls it).
fn open_pty((rows, cols): (u16, u16)) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{F_GETFL, F_SETFD, F_SETFL, FdFlag, OFlag, fcntl};
    let size = nix::pty::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).context("openpty for the command")?;
    for fd in [&pty.master, &pty.slave] {
        fcntl(fd, F_SETFD(FdFlag::FD_CLOEXEC)).context("fcntl on the pty")?;
    }
    let flags = OFlag::from_bits_truncate(fcntl(&pty.master, F_GETFL).context("fcntl")?);
    fcntl(&pty.master, F_SETFL(flags | OFlag::O_NONBLOCK)).context("fcntl on the pty")?;
    Ok((pty.master, pty.slave))
}

/// An exit status as a shell reports it (128 + signal).
fn shell_status(st: std::process::ExitStatus) -> u8 {
    st.code()
        .map_or_else(|| 128 + st.signal().unwrap_or(0) as u8, |c| c as u8)
}
