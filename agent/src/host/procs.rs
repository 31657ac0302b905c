//! Processes and their sockets, from /proc and pidfds: who a target is (name, start time),
//! whether it is still the same process, which sockets it holds, and copies of those sockets
//! (`pidfd_getfd`) so their owner can be stamped into the kernel.
//!
//! Nothing here touches BPF; `bpf` consumes the file descriptors this module hands out.

use std::{
    io,
    os::fd::{AsRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use procfs::process::{FDTarget, Process};

/// `addr` with a v4-mapped IPv6 address (`::ffff:a.b.c.d`, an IPv6 socket's IPv4 peer) in its
/// IPv4 form, as the kernel records such a handshake.
fn unmapped(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    match addr {
        std::net::SocketAddr::V6(a) => match a.ip().to_ipv4_mapped() {
            Some(v4) => std::net::SocketAddr::new(v4.into(), a.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// (local, remote) addresses of TCP sockets.
pub type TcpPairs = std::collections::HashSet<(std::net::SocketAddr, std::net::SocketAddr)>;

/// The /proc to read processes from: `/proc`, or the host's with `--host-proc` (e.g.
/// `/host/proc` in a container). Passed to whatever reads processes; there is no global.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

impl ProcFs {
    /// The proc filesystem mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// `--host-proc DIR`: the host's proc filesystem at `dir`, refused unless `dir` is the
    /// root of a procfs mount (`statfs` says `PROC_SUPER_MAGIC`). A directory that merely
    /// holds a `self` or `1` entry (an ordinary directory, a tmpfs someone filled) would feed
    /// the run whatever PIDs, cgroups and descriptors it likes.
    pub fn host(dir: &Path) -> Result<Self, crate::error::UsageError> {
        use nix::sys::statfs::{PROC_SUPER_MAGIC, statfs};
        let refuse = |what: String| {
            crate::error::UsageError::new(format!(
                "--host-proc {}: {what}; give the directory where the host's /proc is mounted (e.g. /host/proc)",
                dir.display()
            ))
        };
        let fs = statfs(dir).map_err(|e| refuse(e.desc().to_lowercase()))?;
        if fs.filesystem_type() != PROC_SUPER_MAGIC {
            return Err(refuse(format!(
                "not a proc filesystem (statfs type {:#x})",
                fs.filesystem_type().0
            )));
        }
        Ok(Self::new(dir))
    }

    /// Where it is mounted.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<pid>/<rel>`. `pid` is a number, so the path cannot leave the proc root.
    pub fn path(&self, pid: u32, rel: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(rel)
    }

    fn process(&self, pid: u32) -> procfs::ProcResult<Process> {
        Process::new_with_root(self.root.join(pid.to_string()))
    }
}

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

impl ProcFs {
    /// Looks up `pid` and refuses what cannot be a target.
    pub fn identify(&self, pid: u32) -> Result<ProcIdentity, TargetError> {
        let stat = self
            .process(pid)
            .and_then(|p| p.stat())
            .map_err(|_| TargetError::NotFound(pid))?;
        // /proc/PID also answers for thread IDs; only a thread-group leader is a process.
        if stat.pid != pid as i32 || !self.is_tgid(pid) {
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
    fn is_tgid(&self, pid: u32) -> bool {
        self.status(pid)
            .is_some_and(|s| u32::try_from(s.tgid).ok() == Some(pid))
    }

    /// `/proc/PID/status`, parsed.
    fn status(&self, pid: u32) -> Option<procfs::process::Status> {
        self.process(pid).and_then(|p| p.status()).ok()
    }

    /// True while process `t` (same PID and start time) is alive and not a zombie.
    pub fn is_alive(&self, t: &ProcIdentity) -> bool {
        self.process(t.pid)
            .and_then(|p| p.stat())
            .is_ok_and(|s| s.starttime == t.start_ticks && s.state != 'Z' && s.state != 'X')
    }

    /// How long process `t` has been running: zero when the system's uptime cannot be read
    /// or makes no sense (a `--host-proc` that is not what it claims must not panic us).
    pub fn runtime(&self, t: &ProcIdentity) -> Duration {
        use procfs::FromRead as _;
        let uptime = procfs::Uptime::from_file(self.root.join("uptime"))
            .ok()
            .and_then(|u| Duration::try_from_secs_f64(u.uptime).ok())
            .unwrap_or_default();
        runtime_of(uptime, t.start_ticks, procfs::ticks_per_second())
    }

    /// File descriptor numbers in `pid`'s table that refer to sockets, with the socket inodes.
    pub fn socket_fds(&self, pid: u32) -> io::Result<Vec<(RawFd, u64)>> {
        let proc = self.process(pid).map_err(io::Error::other)?;
        let fds = proc.fd().map_err(io::Error::other)?;
        Ok(fds
            .filter_map(Result::ok)
            .filter_map(|fd| match fd.target {
                FDTarget::Socket(inode) => Some((fd.fd, inode)),
                _ => None,
            })
            .collect())
    }

    /// The (local, remote) addresses of every TCP socket in `pid`'s network namespace, in
    /// any state (`/proc/PID/net/tcp` and `tcp6`, which list request mini-sockets as
    /// SYN_RECV too); None when neither can be read (the process is gone).
    pub fn tcp_pairs(&self, pid: u32) -> Option<TcpPairs> {
        let proc = self.process(pid).ok()?;
        let (v4, v6) = (proc.tcp(), proc.tcp6());
        if v4.is_err() && v6.is_err() {
            return None;
        }
        Some(
            v4.into_iter()
                .chain(v6)
                .flatten()
                .map(|e| (unmapped(e.local_address), unmapped(e.remote_address)))
                .collect(),
        )
    }

    /// Size of `pid`'s descriptor table (`FDSize:` in /proc/PID/status, readable by anyone):
    /// the descriptor numbers to try when its fd directory cannot be listed.
    pub fn fd_table_size(&self, pid: u32) -> Option<u32> {
        self.status(pid).map(|s| s.fdsize)
    }

    /// Every live process that descends from one of `roots` (children, grandchildren, …), as
    /// (root, descendant) pairs. Threads are not processes and are not listed.
    pub fn descendants(&self, roots: &[u32]) -> Vec<(u32, u32)> {
        let mut parent: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        if let Ok(all) = procfs::process::all_processes_with_root(&self.root) {
            for p in all.flatten() {
                if let Ok(st) = p.stat() {
                    parent.insert(st.pid as u32, st.ppid as u32);
                }
            }
        }
        let mut out = Vec::new();
        for &pid in parent.keys() {
            let mut cur = pid;
            // Walk up at most 64 generations (guards against a cycle in a racing snapshot).
            for _ in 0..64 {
                let Some(&pp) = parent.get(&cur) else { break };
                if roots.contains(&pp) {
                    out.push((pp, pid));
                    break;
                }
                if pp <= 1 {
                    break;
                }
                cur = pp;
            }
        }
        out.sort_unstable();
        out
    }
}

/// How long a process started `start_ticks` clock ticks after boot has run, `uptime` after
/// boot (`ticks` a second). Never panics: a start after `uptime` (clocks read at different
/// moments) is zero, and absurd values saturate.
pub fn runtime_of(uptime: Duration, start_ticks: u64, ticks: u64) -> Duration {
    let ticks = ticks.max(1);
    let started = Duration::from_secs(start_ticks / ticks)
        + Duration::from_nanos((start_ticks % ticks).saturating_mul(1_000_000_000) / ticks);
    uptime.saturating_sub(started)
}

impl ProcFs {
    /// `pid` as seen inside its own pid namespace (the last `NSpid:` entry).
    pub fn nspid(&self, pid: u32) -> Option<u32> {
        let nspid = self.status(pid)?.nspid?;
        u32::try_from(*nspid.last()?).ok()
    }

    /// The cgroup v2 path of `pid` (its `0::` line of /proc/PID/cgroup), relative to this
    /// process's cgroup namespace. The one reader of that file.
    pub fn cgroup_path(&self, pid: u32) -> anyhow::Result<String> {
        use anyhow::Context as _;
        let cgroups = self
            .process(pid)
            .and_then(|p| p.cgroups())
            .with_context(|| format!("read {}", self.path(pid, "cgroup").display()))?;
        cgroups
            .into_iter()
            .find(|c| c.hierarchy == 0 && c.pathname.starts_with('/'))
            .map(|c| c.pathname)
            .with_context(|| {
                format!(
                    "process {pid} has no cgroup v2 entry in {}",
                    self.path(pid, "cgroup").display()
                )
            })
    }
}

/// A pidfd (`pidfd_open`, Linux 5.3): a handle on a process that cannot be confused with a
/// later process reusing its PID.
#[derive(Debug)]
pub struct PidFd(OwnedFd);

impl std::os::fd::AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl PidFd {
    /// Opens a pidfd for `pid`.
    pub fn open(pid: u32) -> io::Result<Self> {
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ESRCH))?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        Ok(Self(fd))
    }

    /// A duplicate of the target's descriptor `fd` (`pidfd_getfd`, Linux 5.6; needs
    /// CAP_SYS_PTRACE over the target). Close it promptly: while the copy is open, the
    /// target's close() does not release the socket.
    pub fn get_fd(&self, fd: RawFd) -> io::Result<OwnedFd> {
        Ok(rustix::process::pidfd_getfd(
            &self.0,
            fd,
            rustix::process::PidfdGetfdFlags::empty(),
        )?)
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

/// `getsockopt` for the options no crate wraps (`TCP_INFO`, `SO_NETNS_COOKIE`: nix and
/// rustix have neither). `T` must be plain data the kernel may fill (an integer, or a
/// `#[repr(C)]` struct of integers).
pub fn getsockopt_raw<T: Copy + Default>(fd: &impl AsRawFd, level: i32, opt: i32) -> io::Result<T> {
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
    use rustix::net::sockopt;
    Ok(SockInfo {
        cookie: sockopt::socket_cookie(fd)?,
        domain: i32::from(sockopt::socket_domain(fd)?.as_raw()),
        protocol: sockopt::socket_protocol(fd)?
            .map_or(0, |p| i32::try_from(p.as_raw().get()).unwrap_or(0)),
    })
}

/// Addresses and TCP state of a socket (through a copied descriptor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SockDetail {
    /// Local address (network order, IPv4 in `[0]`) and port (host order).
    pub local: ([u32; 4], u16),
    /// Remote address and port; port 0 = not connected.
    pub remote: ([u32; 4], u16),
    /// TCP state (`tcpi_state`), 0 for other protocols.
    pub tcp_state: u8,
    /// Smoothed RTT in microseconds (TCP).
    pub rtt_us: u32,
    /// Retransmitted segments (TCP).
    pub retrans: u32,
}

fn sockaddr_of(fd: &OwnedFd, peer: bool) -> ([u32; 4], u16) {
    use nix::sys::socket::{SockaddrStorage, getpeername, getsockname};
    let addr = if peer {
        getpeername::<SockaddrStorage>(fd.as_raw_fd())
    } else {
        getsockname::<SockaddrStorage>(fd.as_raw_fd())
    };
    let Ok(addr) = addr else {
        return ([0; 4], 0);
    };
    if let Some(v4) = addr.as_sockaddr_in() {
        ([u32::from_ne_bytes(v4.ip().octets()), 0, 0, 0], v4.port())
    } else if let Some(v6) = addr.as_sockaddr_in6() {
        let b = v6.ip().octets();
        let w = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        ([w(0), w(4), w(8), w(12)], v6.port())
    } else {
        ([0; 4], 0)
    }
}

/// Reads addresses (and TCP_INFO for TCP sockets) of socket `fd`.
pub fn sock_detail(fd: &OwnedFd, protocol: i32) -> SockDetail {
    let mut d = SockDetail {
        local: sockaddr_of(fd, false),
        remote: sockaddr_of(fd, true),
        ..SockDetail::default()
    };
    if protocol == libc::IPPROTO_TCP
        && let Ok(info) = getsockopt_raw::<TcpInfo>(fd, libc::IPPROTO_TCP, libc::TCP_INFO)
    {
        d.tcp_state = info.state;
        d.rtt_us = info.rtt;
        d.retrans = info.total_retrans;
    }
    d
}

/// The leading part of `struct tcp_info` (include/uapi/linux/tcp.h) up to `tcpi_total_retrans`;
/// the kernel copies at most the length asked for.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct TcpInfo {
    state: u8,
    ca_state: u8,
    retransmits: u8,
    probes: u8,
    backoff: u8,
    options: u8,
    wscale: u8,
    flags: u8,
    rto: u32,
    ato: u32,
    snd_mss: u32,
    rcv_mss: u32,
    unacked: u32,
    sacked: u32,
    lost: u32,
    retrans: u32,
    fackets: u32,
    last_data_sent: u32,
    last_ack_sent: u32,
    last_data_recv: u32,
    last_ack_recv: u32,
    pmtu: u32,
    rcv_ssthresh: u32,
    rtt: u32,
    rttvar: u32,
    snd_ssthresh: u32,
    snd_cwnd: u32,
    advmss: u32,
    reordering: u32,
    rcv_rtt: u32,
    rcv_space: u32,
    total_retrans: u32,
}

/// The system's `/proc/sys/kernel/pid_max` (the largest PID), or Linux's own ceiling
/// (4,194,304) when it cannot be read.
pub fn pid_max() -> u32 {
    procfs::sys::kernel::pid_max()
        .ok()
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(4_194_304)
}

/// A TCP socket that predates the run, remembered so `--details` can refresh its TCP_INFO
/// (sock_ops callbacks cannot be armed on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldSocket {
    /// Its process.
    pub pid: u32,
    /// Its descriptor number there (checked by cookie before use: numbers are reused).
    pub fd: RawFd,
    /// Its cookie.
    pub cookie: u64,
}

/// Re-reads TCP_INFO of a socket that predates the run through a fresh descriptor copy,
/// checked by cookie (the descriptor number may have been reused): (RTT µs, retransmits,
/// state), or None when it is gone.
pub fn tcp_info(s: &OldSocket) -> Option<(u32, u32, u8)> {
    let pidfd = PidFd::open(s.pid).ok()?;
    let copy = pidfd.get_fd(s.fd).ok()?;
    if sock_info(&copy).map(|i| i.cookie).ok() != Some(s.cookie) {
        return None;
    }
    let d = sock_detail(&copy, libc::IPPROTO_TCP);
    Some((d.rtt_us, d.retrans, d.tcp_state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_addresses_read_as_ipv4() {
        let cases = [
            ("[::ffff:10.0.0.2]:80", "10.0.0.2:80"),
            ("[fd00::2]:80", "[fd00::2]:80"),
            ("10.0.0.2:80", "10.0.0.2:80"),
        ];
        for (given, want) in cases {
            let (g, w): (std::net::SocketAddr, std::net::SocketAddr) =
                (given.parse().unwrap(), want.parse().unwrap());
            assert_eq!(unmapped(g), w, "{given}");
        }
    }

    #[test]
    fn our_own_tcp_sockets_are_listed() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let pairs = ProcFs::default()
            .tcp_pairs(std::process::id())
            .expect("readable");
        assert!(pairs.contains(&(c.local_addr().unwrap(), c.peer_addr().unwrap())));
        assert_eq!(ProcFs::default().tcp_pairs(u32::MAX), None);
    }

    #[test]
    fn identifies_self_and_rejects_missing() {
        let proc = ProcFs::default();
        let me = proc.identify(std::process::id()).unwrap();
        assert!(proc.is_alive(&me));
        assert!(proc.runtime(&me) < Duration::from_secs(3600 * 24 * 365));
        assert_eq!(
            proc.identify(u32::MAX >> 2),
            Err(TargetError::NotFound(u32::MAX >> 2))
        );
    }

    /// `--host-proc` must be a procfs mount: a directory made to look like one (with `self`
    /// and `1` entries), a file, a missing path or another filesystem gets one line.
    #[test]
    fn host_proc_must_be_procfs() {
        assert!(ProcFs::host(Path::new("/proc")).is_ok());
        let fake = std::env::temp_dir().join(format!("pnm-fakeproc-{}", std::process::id()));
        std::fs::create_dir_all(fake.join("self")).unwrap();
        std::fs::create_dir_all(fake.join("1")).unwrap();
        for (dir, needle) in [
            (fake.as_path(), "not a proc filesystem"),
            (Path::new("/sys"), "not a proc filesystem"),
            (Path::new("/nonexistent/proc"), "no such file"),
        ] {
            let e = ProcFs::host(dir).unwrap_err().to_string();
            assert!(e.contains(needle), "{}: {e}", dir.display());
            assert!(e.contains("--host-proc"), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
        std::fs::remove_dir_all(&fake).unwrap();
    }

    #[test]
    fn kernel_threads_are_refused() {
        // kthreadd is PID 2 on every Linux system with its own pid namespace view of the host.
        if let Ok(stat) = Process::new(2).and_then(|p| p.stat())
            && stat.flags & PF_KTHREAD != 0
        {
            assert!(matches!(
                ProcFs::default().identify(2),
                Err(TargetError::KernelThread(2, _))
            ));
        }
    }

    #[test]
    fn nspid_is_the_innermost() {
        assert_eq!(
            ProcFs::default().nspid(std::process::id()),
            Some(std::process::id())
        );
    }

    #[test]
    fn finds_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let d = ProcFs::default().descendants(&[std::process::id()]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(d.contains(&(std::process::id(), child.id())), "{d:?}");
    }

    #[test]
    fn own_socket_is_found_and_described() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fds = ProcFs::default().socket_fds(std::process::id()).unwrap();
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
