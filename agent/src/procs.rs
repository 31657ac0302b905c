//! Processes and their sockets, from /proc and pidfds: who a target is (name, start time),
//! whether it is still the same process, which sockets it holds, and copies of those sockets
//! (`pidfd_getfd`) so their owner can be stamped into the kernel.
//!
//! Nothing here touches BPF; `bpf` consumes the file descriptors this module hands out.

use std::{
    collections::HashSet,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use procfs::process::{FDTarget, Process};

/// `PF_KTHREAD` (include/linux/sched.h): the task is a kernel thread.
const PF_KTHREAD: u32 = 0x0020_0000;

/// Why a PID cannot be a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// No such process.
    NotFound(u32),
    /// A kernel thread: it owns no sockets of its own.
    KernelThread(u32, String),
    /// Exited but not yet reaped.
    Zombie(u32, String),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound(p) => write!(
                f,
                "process {p} does not exist: check the PID with ps or pgrep"
            ),
            Self::KernelThread(p, c) => {
                write!(
                    f,
                    "process {p} ({c}) is a kernel thread and has no sockets of its own: pick a user-space process"
                )
            }
            Self::Zombie(p, c) => write!(
                f,
                "process {p} ({c}) has exited (zombie): pick a running process"
            ),
        }
    }
}

impl std::error::Error for TargetError {}

/// A process, pinned by its start time so a reused PID is never mistaken for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcIdentity {
    /// PID (tgid) in the agent's pid namespace.
    pub pid: u32,
    /// `comm` at the time it was found.
    pub comm: String,
    /// Start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_ticks: u64,
}

/// Looks up `pid` and refuses what cannot be a target.
pub fn identify(pid: u32) -> Result<ProcIdentity, TargetError> {
    let stat = Process::new(pid as i32)
        .and_then(|p| p.stat())
        .map_err(|_| TargetError::NotFound(pid))?;
    // /proc/PID also answers for thread IDs; only a thread-group leader is a process.
    if stat.pid != pid as i32 || !is_tgid(pid) {
        return Err(TargetError::NotFound(pid));
    }
    if stat.flags & PF_KTHREAD != 0 {
        return Err(TargetError::KernelThread(pid, stat.comm));
    }
    if stat.state == 'Z' || stat.state == 'X' {
        return Err(TargetError::Zombie(pid, stat.comm));
    }
    Ok(ProcIdentity {
        pid,
        comm: stat.comm,
        start_ticks: stat.starttime,
    })
}

/// True when `pid` names a thread-group leader (`Tgid:` in /proc/PID/status equals it).
fn is_tgid(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Tgid:"))
            .and_then(|v| v.trim().parse::<u32>().ok())
            == Some(pid)
    })
}

impl ProcIdentity {
    /// True while the same process (same PID and start time) is alive and not a zombie.
    pub fn is_alive(&self) -> bool {
        Process::new(self.pid as i32)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == self.start_ticks && s.state != 'Z' && s.state != 'X')
    }

    /// How long the process has been running.
    pub fn runtime(&self) -> Duration {
        let uptime = std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        let started = self.start_ticks as f64 / procfs::ticks_per_second() as f64;
        Duration::from_secs_f64((uptime - started).max(0.0))
    }
}

/// File descriptor numbers in `pid`'s table that refer to sockets, with the socket inodes.
pub fn socket_fds(pid: u32) -> io::Result<Vec<(RawFd, u64)>> {
    let proc = Process::new(pid as i32).map_err(io::Error::other)?;
    let fds = proc.fd().map_err(io::Error::other)?;
    Ok(fds
        .filter_map(Result::ok)
        .filter_map(|fd| match fd.target {
            FDTarget::Socket(inode) => Some((fd.fd, inode)),
            _ => None,
        })
        .collect())
}

/// A pidfd (`pidfd_open`, Linux 5.3): a handle on a process that cannot be confused with a
/// later process reusing its PID.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl PidFd {
    /// Opens a pidfd for `pid`.
    pub fn open(pid: u32) -> io::Result<Self> {
        // SAFETY: plain syscall; the result is a new fd we own, or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor returned by the kernel.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// A duplicate of the target's descriptor `fd` (`pidfd_getfd`, Linux 5.6; needs
    /// CAP_SYS_PTRACE over the target). Close it promptly: while the copy is open, the
    /// target's close() does not release the socket.
    pub fn get_fd(&self, fd: RawFd) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall; the result is a new fd we own, or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.0.as_raw_fd(), fd, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `r` is a fresh descriptor returned by the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
    }
}

/// What the kernel says about a socket descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockInfo {
    /// `SO_COOKIE`: unique for the boot.
    pub cookie: u64,
    /// `SO_DOMAIN` (`AF_INET`, `AF_INET6`, `AF_UNIX`, …).
    pub domain: i32,
    /// `SO_PROTOCOL` (`IPPROTO_TCP`, `IPPROTO_UDP`, …).
    pub protocol: i32,
}

fn getsockopt_raw<T: Copy + Default>(fd: &OwnedFd, level: i32, opt: i32) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` is a writable T of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&raw mut v).cast(),
            &raw mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Reads cookie, domain and protocol of socket `fd`.
pub fn sock_info(fd: &OwnedFd) -> io::Result<SockInfo> {
    Ok(SockInfo {
        cookie: getsockopt_raw::<u64>(fd, libc::SOL_SOCKET, libc::SO_COOKIE)?,
        domain: getsockopt_raw::<i32>(fd, libc::SOL_SOCKET, libc::SO_DOMAIN)?,
        protocol: getsockopt_raw::<i32>(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL)?,
    })
}

/// Live TCP connections (established) and UDP sockets of `pid`, counted from its network
/// namespace's socket tables (`/proc/PID/net/{tcp,tcp6,udp,udp6}`) joined on the inodes in its
/// descriptor table.
pub fn connection_counts(pid: u32) -> (u32, u32) {
    let Ok(proc) = Process::new(pid as i32) else {
        return (0, 0);
    };
    let Ok(inodes) = socket_fds(pid) else {
        return (0, 0);
    };
    let inodes: HashSet<u64> = inodes.into_iter().map(|(_, i)| i).collect();
    if inodes.is_empty() {
        return (0, 0);
    }
    let established = procfs::net::TcpState::Established;
    let tcp = [proc.tcp(), proc.tcp6()]
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.state == established && inodes.contains(&e.inode))
        .count();
    let udp = [proc.udp(), proc.udp6()]
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| inodes.contains(&e.inode))
        .count();
    (tcp as u32, udp as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_self_and_rejects_missing() {
        let me = identify(std::process::id()).unwrap();
        assert!(me.is_alive());
        assert!(me.runtime() < Duration::from_secs(3600 * 24 * 365));
        assert_eq!(
            identify(u32::MAX >> 2),
            Err(TargetError::NotFound(u32::MAX >> 2))
        );
    }

    #[test]
    fn kernel_threads_are_refused() {
        // kthreadd is PID 2 on every Linux system with its own pid namespace view of the host.
        if let Ok(stat) = Process::new(2).and_then(|p| p.stat())
            && stat.flags & PF_KTHREAD != 0
        {
            assert!(matches!(identify(2), Err(TargetError::KernelThread(2, _))));
        }
    }

    #[test]
    fn own_socket_is_found_and_described() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fds = socket_fds(std::process::id()).unwrap();
        assert!(fds.iter().any(|(fd, _)| *fd == sock.as_raw_fd()));
        let owned: OwnedFd = sock.into();
        let info = sock_info(&owned).unwrap();
        assert_eq!(
            (info.domain, info.protocol),
            (libc::AF_INET, libc::IPPROTO_UDP)
        );
        assert_ne!(info.cookie, 0);
    }
}
