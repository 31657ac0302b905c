//! Sockets per cgroup from the kernel's `sock_diag` netlink interface: for `--all`, each
//! workload's connection gauge, with the meaning a target's gauge has (TCP connections in
//! ESTABLISHED, UDP sockets bound or connected).
//!
//! Why `sock_diag` and not the kernel programs: a node-wide socket that is no target's has no
//! socket storage to remember whether it was counted, so a gauge kept at packet time could not
//! be left exactly once; a dump is a fresh, exact answer each time and also sees connections
//! that predate the run. Each socket carries the id of the cgroup v2 it was created in
//! (`INET_DIAG_CGROUP_ID`, Linux 5.7), the id the kernel programs charge its packets to, so the
//! counts join the workloads by that id. A dump lists the sockets of one network namespace (the
//! one the netlink socket was made in): every namespace is entered in turn on a helper thread
//! (`setns` changes the calling thread only, and needs `CAP_SYS_ADMIN`).

use std::{
    collections::HashMap,
    fs::File,
    os::fd::{AsRawFd as _, OwnedFd},
};

use anyhow::{Context as _, anyhow, bail};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags, nlas::Nla},
};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use super::procs::ProcFs;

/// `INET_DIAG_CGROUP_ID` (include/uapi/linux/inet_diag.h): the socket's cgroup v2 id, a u64.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// A dump's messages arrive in buffers of at most 32 KiB (the kernel sizes them to the reader's
/// largest `recvmsg`, capped there); a smaller buffer would truncate them.
const RECV_BUFFER: usize = 64 * 1024;

/// Sockets of one cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCounts {
    /// TCP connections in ESTABLISHED.
    pub tcp: u32,
    /// UDP sockets bound or connected.
    pub udp: u32,
}

impl SocketCounts {
    /// The sum of two counts.
    pub fn plus(self, o: Self) -> Self {
        Self {
            tcp: self.tcp.saturating_add(o.tcp),
            udp: self.udp.saturating_add(o.udp),
        }
    }
}

/// The transport of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Udp,
}

/// The four dumps of a namespace: TCP in ESTABLISHED only (the kernel filters by state), UDP in
/// any state (only bound or connected UDP sockets are in the tables a dump walks), each for
/// IPv4 and IPv6 (a dual-stack socket is an IPv6 one: listed once).
const DUMPS: [(u8, Transport); 4] = [
    (AF_INET, Transport::Tcp),
    (AF_INET6, Transport::Tcp),
    (AF_INET, Transport::Udp),
    (AF_INET6, Transport::Udp),
];

/// Adds one listed socket to `counts` (pure: the dumps only feed it). A socket without a cgroup
/// id (a kernel built without cgroup socket data) cannot be joined to a workload: skipped.
fn tally(counts: &mut HashMap<u64, SocketCounts>, transport: Transport, cgroup: Option<u64>) {
    let Some(id) = cgroup else {
        return;
    };
    let c = counts.entry(id).or_default();
    match transport {
        Transport::Tcp => c.tcp = c.tcp.saturating_add(1),
        Transport::Udp => c.udp = c.udp.saturating_add(1),
    }
}

/// The dump request for one (family, transport).
fn request(family: u8, transport: Transport) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let (protocol, states) = match transport {
        Transport::Tcp => (IPPROTO_TCP, StateFlags::ESTABLISHED),
        Transport::Udp => (IPPROTO_UDP, StateFlags::all()),
    };
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The cgroup id attribute of a listed socket, if the kernel sent one.
fn cgroup_of(nlas: &[Nla]) -> Option<u64> {
    nlas.iter().find_map(|n| match n {
        Nla::Other(a) if a.kind() == INET_DIAG_CGROUP_ID && a.value_len() == 8 => {
            let mut v = [0_u8; 8];
            a.emit_value(&mut v);
            Some(u64::from_ne_bytes(v))
        }
        _ => None,
    })
}

/// Runs one dump on `sock` and tallies every socket it lists.
fn dump(
    sock: &OwnedFd,
    family: u8,
    transport: Transport,
    counts: &mut HashMap<u64, SocketCounts>,
) -> anyhow::Result<()> {
    let kernel = NetlinkAddr::new(0, 0);
    sendto(
        sock.as_raw_fd(),
        &request(family, transport),
        &kernel,
        MsgFlags::empty(),
    )
    .context("send a sock_diag request")?;
    let mut buf = vec![0_u8; RECV_BUFFER];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
            .context("read a sock_diag answer")?;
        if n == 0 {
            bail!("sock_diag: the dump ended without NLMSG_DONE");
        }
        let mut off = 0;
        while off < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&buf[off..n])
                .map_err(|e| anyhow!("sock_diag: unreadable answer: {e}"))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    tally(counts, transport, cgroup_of(&r.nlas));
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => bail!("sock_diag: the kernel refused a dump: {e}"),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
    }
}

/// TCP connections in ESTABLISHED and UDP sockets per cgroup id, in the calling thread's
/// network namespace.
pub fn count_here() -> anyhow::Result<HashMap<u64, SocketCounts>> {
    let sock = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .context("netlink socket (sock_diag)")?;
    let mut counts = HashMap::new();
    for (family, transport) in DUMPS {
        dump(&sock, family, transport, &mut counts)?;
    }
    Ok(counts)
}

/// The same over the network namespaces `spaces` ((inode, one PID in it), as
/// [`super::netns::namespaces`] lists them), summed per cgroup id: a socket lives in one
/// namespace, so it is counted once. A namespace that cannot be entered (gone meanwhile, or no
/// `CAP_SYS_ADMIN`) or read is skipped; how many were is returned with the counts.
pub fn count_in(proc: &ProcFs, spaces: &[(u64, u32)]) -> (HashMap<u64, SocketCounts>, usize) {
    let files: Vec<Option<File>> = spaces
        .iter()
        .map(|(_, pid)| File::open(proc.path(*pid, "ns/net")).ok())
        .collect();
    let walk = move || {
        let mut total: HashMap<u64, SocketCounts> = HashMap::new();
        let mut skipped = 0;
        for f in &files {
            let Some(f) = f else {
                skipped += 1;
                continue;
            };
            let counted = nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(anyhow::Error::from)
                .and_then(|()| count_here());
            match counted {
                Ok(c) => {
                    for (id, n) in c {
                        let e = total.entry(id).or_default();
                        *e = e.plus(n);
                    }
                }
                Err(_) => skipped += 1,
            }
        }
        (total, skipped)
    };
    // A thread of its own: it wanders through namespaces and ends with the walk.
    std::thread::Builder::new()
        .name("pnm-sockdiag".into())
        .spawn(walk)
        .ok()
        .and_then(|t| t.join().ok())
        .unwrap_or_else(|| (HashMap::new(), spaces.len()))
}

#[cfg(test)]
mod tests {
    use std::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;

    #[test]
    fn tally_counts_by_transport_and_skips_sockets_without_a_cgroup() {
        let mut c = HashMap::new();
        for (t, id) in [
            (Transport::Tcp, Some(7)),
            (Transport::Tcp, Some(7)),
            (Transport::Udp, Some(7)),
            (Transport::Udp, Some(9)),
            (Transport::Tcp, None),
        ] {
            tally(&mut c, t, id);
        }
        assert_eq!(c.len(), 2);
        assert_eq!(c[&7], SocketCounts { tcp: 2, udp: 1 });
        assert_eq!(c[&9], SocketCounts { tcp: 0, udp: 1 });
    }

    #[test]
    fn requests_filter_tcp_to_established() {
        // nlmsghdr (16 bytes), then inet_diag_req_v2: family, protocol, ext, pad, states.
        let tcp = request(AF_INET, Transport::Tcp);
        assert_eq!((tcp[16], tcp[17]), (AF_INET, IPPROTO_TCP));
        assert_eq!(
            u32::from_ne_bytes(tcp[20..24].try_into().unwrap()),
            1 << 1,
            "TCP_ESTABLISHED only"
        );
        let udp = request(AF_INET6, Transport::Udp);
        assert_eq!((udp[16], udp[17]), (AF_INET6, IPPROTO_UDP));
        // UDP: connected sockets are ESTABLISHED (1), bound ones CLOSE (7): every state.
        let states = u32::from_ne_bytes(udp[20..24].try_into().unwrap());
        assert_eq!(states & (1 << 1 | 1 << 7), 1 << 1 | 1 << 7, "{states:#x}");
    }

    /// The real kernel, in this process's own namespace: sockets this test opens appear under
    /// this process's cgroup id (the inode of its cgroup v2 directory).
    #[test]
    fn counts_own_sockets_under_own_cgroup() {
        use std::os::unix::fs::MetadataExt as _;
        let Some(dir) = own_cgroup_dir() else {
            eprintln!("pnm-skip: counts_own_sockets_under_own_cgroup: no cgroup v2 mount");
            return;
        };
        let id = std::fs::metadata(&dir).expect("cgroup dir").ino();
        let here = || {
            count_here()
                .expect("dump")
                .get(&id)
                .copied()
                .unwrap_or_default()
        };
        // Other tests of this binary open and close sockets in this cgroup at the same time
        // (host::procs lists its own TCP pair): ours must show as added at least once in a few
        // tries, which a close elsewhere between the two dumps cannot hide every time.
        let mut seen = Vec::new();
        for _ in 0..5 {
            let before = here();
            let l = TcpListener::bind("127.0.0.1:0").expect("listen");
            let c = TcpStream::connect(l.local_addr().unwrap()).expect("connect");
            let (s, _) = l.accept().expect("accept");
            let u = UdpSocket::bind("127.0.0.1:0").expect("udp");
            let after = here();
            drop((c, s, u, l));
            if after.tcp >= before.tcp + 2 && after.udp > before.udp {
                return;
            }
            seen.push((before, after));
        }
        panic!("our sockets never counted: {seen:?}");
    }

    /// This process's cgroup v2 directory (None without a cgroup2 mount).
    fn own_cgroup_dir() -> Option<std::path::PathBuf> {
        let mount = crate::host::cgroup::find_cgroup2().ok()?;
        mount
            .dir_of_pid(&crate::host::procs::ProcFs::default(), std::process::id())
            .ok()
    }
}
