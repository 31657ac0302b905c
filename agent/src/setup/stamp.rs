//! Where a socket that predates the run becomes a target's: every inet socket a process holds
//! is copied out of it (`pidfd_getfd`), described (`SO_COOKIE`, addresses, `TCP_INFO`) and
//! stamped into the kernel with its owner, then the copy is closed at once (holding it would
//! delay the target's own close). Sockets created later are stamped by the kernel itself
//! (`cgroup/sock_create`); accepted ones inherit their listener's stamp.

use std::os::fd::RawFd;

use crate::{
    details::monotonic_ns,
    host::procs::{self, OldSocket, ProcFs, ProcIdentity},
    kernel::{Connection, Kernel, Knobs, Proto, Slot, SocketStamp},
    session::Stamped,
};

/// `TCP_ESTABLISHED` (include/net/tcp_states.h).
const TCP_ESTABLISHED: u8 = 1;

/// Stamps every inet socket `t` holds now as target `slot`'s.
pub fn stamp_existing(
    kernel: &mut dyn Kernel,
    proc: &ProcFs,
    t: &ProcIdentity,
    slot: Slot,
    knobs: Knobs,
) -> Stamped {
    let mut out = Stamped::default();
    let Ok(pidfd) = procs::PidFd::open(t.pid) else {
        return out;
    };
    // The pidfd pins the process; check it is still the one we identified.
    if !proc.is_alive(t) {
        return out;
    }
    let owner = Owner { t, slot, knobs };
    let mut stamped = 0;
    for fd in candidate_fds(proc, t.pid) {
        let Ok(copy) = pidfd.get_fd(fd) else { continue };
        let Ok(info) = procs::sock_info(&copy) else {
            continue;
        };
        if info.domain != libc::AF_INET && info.domain != libc::AF_INET6 {
            continue;
        }
        let sock = Sock {
            fd,
            copy: &copy,
            info,
            detail: procs::sock_detail(&copy, info.protocol),
        };
        match owner.stamp(kernel, &sock) {
            Ok(counted) => {
                stamped += 1;
                match counted {
                    Some(Proto::Tcp) => out.connections.0 += 1,
                    Some(_) => out.connections.1 += 1,
                    None => {}
                }
            }
            Err(e) => log::warn!("socket {fd} of {}: {e:#}", t.pid),
        }
        if knobs.details {
            owner.put_record(kernel, &sock, &mut out.old);
        }
    }
    log::info!(
        "process {}: {stamped} existing socket(s) stamped, {:?} connections open",
        t.pid,
        out.connections
    );
    out
}

/// Who an existing socket is stamped for.
struct Owner<'a> {
    t: &'a ProcIdentity,
    slot: Slot,
    knobs: Knobs,
}

/// One inet socket of the owner, through a copied descriptor.
struct Sock<'a> {
    /// Its number in the owner's table.
    fd: RawFd,
    copy: &'a std::os::fd::OwnedFd,
    info: procs::SockInfo,
    detail: procs::SockDetail,
}

impl Sock<'_> {
    fn proto(&self) -> Proto {
        match self.info.protocol {
            libc::IPPROTO_TCP => Proto::Tcp,
            libc::IPPROTO_UDP => Proto::Udp,
            _ => Proto::Other,
        }
    }
}

impl Owner<'_> {
    /// Stamps `s` into the kernel. Returns its protocol when it was counted as a live
    /// connection now (installed, and established or bound/connected, without `-i`).
    fn stamp(&self, kernel: &mut dyn Kernel, s: &Sock<'_>) -> anyhow::Result<Option<Proto>> {
        let (proto, d, iface_filter) = (s.proto(), &s.detail, self.knobs.iface_filter);
        let established = proto == Proto::Tcp && d.tcp_state == TCP_ESTABLISHED;
        let udp_active = proto == Proto::Udp && (d.local.1 != 0 || d.remote.1 != 0);
        // Without -i it qualifies now and the agent counts it; with -i, its first packet
        // through a chosen interface counts it in the kernel.
        let count_now = !iface_filter && (established || udp_active);
        let stamp = SocketStamp {
            slot: self.slot,
            tgid: self.t.pid,
            proto,
            family: s.info.domain as u8,
            established,
            udp_active,
            count_now,
            iface_ok: !iface_filter,
            // With -i the kernel may filter on this stamp (cgroup_skb without
            // bpf_get_netns_cookie); -i was refused where the option is missing.
            netns_cookie: if iface_filter {
                crate::kernel::features::netns_cookie_of(s.copy).unwrap_or(0)
            } else {
                0
            },
        };
        let installed = kernel.stamp_socket(s.copy, stamp)?;
        Ok((installed && count_now).then_some(proto))
    }

    /// `--details`: a connection record for `s` (its age counts from the run's start), and
    /// its TCP socket remembered to refresh its TCP_INFO.
    fn put_record(&self, kernel: &mut dyn Kernel, s: &Sock<'_>, old: &mut Vec<OldSocket>) {
        let (proto, d) = (s.proto(), &s.detail);
        let conn = Connection {
            bytes_in: 0,
            bytes_out: 0,
            // Its real opening time is unknown: its age counts from the run's start.
            open_ns: monotonic_ns(),
            close_ns: 0,
            local: d.local,
            remote: d.remote,
            slot: self.slot,
            tgid: self.t.pid,
            srtt_us: d.rtt_us,
            retrans: d.retrans,
            tcp: proto == Proto::Tcp,
            family: s.info.domain as u8,
            state: d.tcp_state,
            iface_ok: !self.knobs.iface_filter,
        };
        if let Err(e) = kernel.put_connection(s.info.cookie, conn) {
            log::warn!("{e:#}");
        }
        if proto == Proto::Tcp {
            old.push(OldSocket {
                pid: self.t.pid,
                fd: s.fd,
                cookie: s.info.cookie,
            });
        }
    }
}

/// `--all -i` without `bpf_get_netns_cookie` in cgroup_skb: stamps every inet socket held by
/// any process on the node with its namespace's cookie (`SO_NETNS_COOKIE`), so the kernel can
/// filter its packets by interface. Sockets it cannot reach (held by no process, or in a
/// process that ends meanwhile) carry no stamp: the kernel charges their bytes to `untracked`.
pub fn stamp_node_netns(kernel: &mut dyn Kernel, proc: &ProcFs) {
    let (mut stamped, mut failed) = (0_usize, 0_usize);
    let Ok(dir) = std::fs::read_dir(proc.root()) else {
        log::warn!(
            "-i with --all: cannot list processes; their existing sockets count as untracked"
        );
        return;
    };
    let pids = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()));
    for pid in pids {
        let Ok(pidfd) = procs::PidFd::open(pid) else {
            continue;
        };
        for fd in candidate_fds(proc, pid) {
            let Ok(copy) = pidfd.get_fd(fd) else { continue };
            let Ok(info) = procs::sock_info(&copy) else {
                continue;
            };
            if info.domain != libc::AF_INET && info.domain != libc::AF_INET6 {
                continue;
            }
            let done = crate::kernel::features::netns_cookie_of(&copy)
                .map_err(anyhow::Error::from)
                .and_then(|c| kernel.stamp_netns(&copy, c));
            match done {
                Ok(()) => stamped += 1,
                Err(e) => {
                    failed += 1;
                    log::debug!("socket {fd} of process {pid}: {e:#}");
                }
            }
        }
    }
    log::info!(
        "-i with --all: {stamped} existing socket(s) stamped with their network namespace, {failed} failed (their bytes count as untracked)"
    );
}

/// Most descriptor numbers tried for one process whose fd directory cannot be listed: the
/// kernel's default `fs.nr_open` (1,048,576). `FDSize:` is the process's own table size, so
/// it is bounded by what the process did; past this, the rest is skipped with a warning
/// rather than millions of `pidfd_getfd` calls.
const MAX_FDS_TRIED: u32 = 1 << 20;

/// The descriptors of `pid` that may be sockets. /proc/PID/fd of another user's process can
/// be listed only with CAP_DAC_READ_SEARCH; without it, every number in its descriptor table
/// is tried (`pidfd_getfd` needs only CAP_SYS_PTRACE, and non-sockets are skipped), lazily:
/// nothing is allocated per number.
fn candidate_fds(proc: &ProcFs, pid: u32) -> Box<dyn Iterator<Item = RawFd>> {
    match proc.socket_fds(pid) {
        Ok(fds) => Box::new(fds.into_iter().map(|(fd, _)| fd)),
        Err(e) => match proc.fd_table_size(pid) {
            Some(n) => {
                log::info!(
                    "cannot list the descriptors of process {pid} ({e}; CAP_DAC_READ_SEARCH lists them): trying all {n}"
                );
                Box::new(0..fds_to_try(pid, n))
            }
            None => {
                log::warn!("cannot list the sockets of process {pid}: {e}");
                Box::new(std::iter::empty())
            }
        },
    }
}

/// How many descriptor numbers to try for a table of `size` (`FDSize:`): at most
/// [`MAX_FDS_TRIED`], never a wrapped cast.
fn fds_to_try(pid: u32, size: u32) -> RawFd {
    if size > MAX_FDS_TRIED {
        log::warn!(
            "process {pid} has a descriptor table of {size}: only the first {MAX_FDS_TRIED} are tried for sockets"
        );
    }
    RawFd::try_from(size.min(MAX_FDS_TRIED)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn descriptor_tables_are_bounded() {
        for (size, tried) in [
            (0, 0),
            (64, 64),
            (super::MAX_FDS_TRIED, 1 << 20),
            (u32::MAX, 1 << 20),
            (1 << 31, 1 << 20),
        ] {
            assert_eq!(super::fds_to_try(1, size), tried, "{size}");
        }
    }
}
