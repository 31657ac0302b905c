//! Spawn mode: starts the command inside the cgroup made for it, so that no socket of the
//! command is ever created elsewhere, and hands out a pidfd that becomes readable when it
//! exits.

use std::{
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::{Path, PathBuf},
    process::Child,
};

use anyhow::Context as _;

use crate::{error::SpawnError, host::procs::PidFd};

/// The running command of spawn mode.
#[derive(Debug)]
pub struct Command {
    child: Child,
    pidfd: Option<PidFd>,
    cgroup: PathBuf,
}

impl Command {
    /// Starts `argv` in cgroup `cg`: the child moves itself there before it executes.
    pub fn start(argv: &[String], cg: &Path) -> anyhow::Result<Self> {
        let procs_file =
            std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_encoded_bytes())
                .context("cgroup path")?;
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec, on
        // a path prepared before the fork (no allocation in the child).
        unsafe {
            cmd.pre_exec(move || {
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
            });
        }
        let child = cmd.spawn().map_err(|e| {
            SpawnError(format!(
                "cannot run '{}': {e}; check the command name and PATH",
                argv[0]
            ))
        })?;
        let pidfd = PidFd::open(child.id()).context("pidfd_open for the command")?;
        Ok(Self {
            child,
            pidfd: Some(pidfd),
            cgroup: cg.to_path_buf(),
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
}

/// An exit status as a shell reports it (128 + signal).
fn shell_status(st: std::process::ExitStatus) -> u8 {
    st.code()
        .map_or_else(|| 128 + st.signal().unwrap_or(0) as u8, |c| c as u8)
}
