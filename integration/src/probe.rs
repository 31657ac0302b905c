//! Kernel behaviour the tests depend on, found by trying it (never from the version number:
//! distributions backport, and docs/kernels.md records where a fix landed, not where a given
//! kernel has it).

use std::{net::TcpStream, os::fd::AsRawFd as _, thread};

use crate::{
    Cgroup, Netns, Proc,
    bpf::{
        BPF_CGROUP_INET_EGRESS, BPF_FUNC_MAP_LOOKUP_ELEM, BPF_PROG_TYPE_CGROUP_SKB,
        BPF_PSEUDO_MAP_FD, array_u64, attach_to_cgroup, insn, load_program, read_u64,
    },
};

/// Whether sockets report their namespace's cookie (`SO_NETNS_COOKIE`, Linux 5.14).
pub fn so_netns_cookie() -> bool {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let mut cookie = 0_u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` is a writable u64 of `len` bytes.
    unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            71, // SO_NETNS_COOKIE
            (&raw mut cookie).cast(),
            &raw mut len,
        ) == 0
    }
}

/// Whether a TCP server's IPv6 SYN-ACK passes its cgroup's egress hook.
///
/// The SYN-ACK leaves with the request socket as its owner while `ip6_xmit` is handed the
/// listener; until upstream 223f5f79f2ce ("bpf, net: Check skb ownership against full socket",
/// ~6.6) the hook ran only when the two were the same socket, so it never saw that packet
/// (measured on Debian's 5.10 and 6.1: a server's IPv6 TCP counts cannot be exact there).
///
/// Asked of the kernel directly: a packet counter (hand-assembled, `bpf.rs`) on the egress of
/// a cgroup of our own, a `pnm-peer tcp-server` on `[::1]` in it (inside `ns`, which must
/// have IPv6 on), and a connection from outside the cgroup. When `connect` returns, the
/// server has sent exactly one packet, the SYN-ACK: the counter is 1 if the hook saw it, 0 if
/// not. No timing is involved.
pub fn ipv6_synack_passes_cgroup_egress(ns: &Netns) -> bool {
    const PORT: u16 = 5999;
    let map = array_u64(b"pnmt_synack").expect("create the probe's map");
    let map_fd = map.as_raw_fd();
    let counter = [
        insn(0x62, 10, 0, -4, 0),                      // *(u32 *)(r10 - 4) = 0 (key)
        insn(0xbf, 2, 10, 0, 0),                       // r2 = r10
        insn(0x07, 2, 0, 0, -4),                       // r2 += -4
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),   // r1 = map (ld_imm64, low half)
        insn(0x00, 0, 0, 0, 0),                        //          (high half)
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // call bpf_map_lookup_elem
        insn(0x15, 0, 0, 2, 0),                        // if r0 == 0 goto +2
        insn(0xb7, 1, 0, 0, 1),                        // r1 = 1
        insn(0xdb, 0, 1, 0, 0),                        // lock *(u64 *)(r0 + 0) += r1 (XADD: 5.10)
        insn(0xb7, 0, 0, 0, 1),                        // r0 = 1 (allow)
        insn(0x95, 0, 0, 0, 0),                        // exit
    ];
    let prog = load_program(
        BPF_PROG_TYPE_CGROUP_SKB,
        "pnmt_synack",
        BPF_CGROUP_INET_EGRESS,
        &counter,
        true,
    )
    .expect("load the probe's counter");
    // SAFETY: a new descriptor the load returned, owned here.
    let _prog = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(prog) };
    let cg = Cgroup::new();
    let _link = attach_to_cgroup(prog, &cg.dir, BPF_CGROUP_INET_EGRESS)
        .expect("attach the probe's counter");
    let addr = format!("[::1]:{PORT}");
    let server = Proc::peer(&["tcp-server", &addr], Some(&cg), Some(ns));
    server.expect_line("ready");
    let ns_file = std::fs::File::open(ns.path()).expect("open the namespace");
    let seen = thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let conn = TcpStream::connect(&addr).expect("connect to the probe's server");
            let seen = read_u64(&map).expect("read the probe's counter");
            drop(conn);
            seen
        })
        .join()
        .expect("probe thread")
    });
    assert!(
        seen <= 1,
        "the server sent {seen} packets before the handshake ended"
    );
    seen == 1
}
