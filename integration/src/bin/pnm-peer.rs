//! Traffic peer for the integration tests: TCP and UDP endpoints that move exactly the
//! payloads they are told to, and report progress on stdout, one word per line.
//!
//! TCP protocol: the client sends a 24-byte header (`up`, `down`, `server_closes_first`, each a
//! little-endian u64), then `up` bytes; the server reads them, sends `down` bytes, and the side
//! named by the flag closes first (the other waits for EOF, then closes).
//!
//! Commands (`pnm-peer --help`, `pnm-peer COMMAND --help`; ADDR is ip:port, [v6]:port for
//! IPv6); the trailing words (`wait`, `hold`, `connected`) may come in any order:
//!
//! ```text
//! tcp-server ADDR                           accept forever (a thread per connection); "ready"
//! tcp-client ADDR UP DOWN SRV_CLOSES N [wait] [hold]
//! udp-recv ADDR COUNT [hold]
//! udp-send ADDR COUNT SIZE [connected|unconnected] [wait] [hold]
//! hold-sockets ADDR NTCP NUDP
//! udp-multi SIZE ADDR=COUNT...
//! dns-server ADDR NAME IPV4
//! dns-client DNS_ADDR BIND_ADDR
//! move-send ADDR PROCS N1 N2 SIZE
//! resolve-send DNS_ADDR NAME PORT COUNT SIZE
//! udp-spray A.B N SECS
//! tcp-connect
//! tcp-echo ADDR
//! tcp-pingpong ADDR CONNS
//! ```
//!
//! The callers (integration/src/peer.rs, scripts/bench.py) depend on these words, and on the
//! progress words each command prints.
//!
//! The DNS messages are built by hand (RFC 1035 wire format, one question, one A answer): the
//! tests must not depend on the parser the agent uses to read them.
use std::{
    io::{BufRead, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    thread,
    time::Duration,
};

use clap::{Parser, Subcommand, ValueEnum};

/// Traffic peer for the integration tests: moves exactly the payloads it is told to and
/// prints its progress on stdout, one word per line.
#[derive(Parser)]
#[command(name = "pnm-peer")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Accept forever, one thread per connection; prints "ready".
    TcpServer { addr: SocketAddr },
    /// N connections in sequence, each sending UP bytes and receiving DOWN; SRV_CLOSES 1: the
    /// server closes first. "wait": connect the first, print "connected", wait for a stdin
    /// line before moving data; "hold": after "done", stay until stdin closes.
    TcpClient {
        addr: SocketAddr,
        up: u64,
        down: u64,
        #[arg(value_parser = clap::value_parser!(u8).range(0..=1))]
        srv_closes: u8,
        n: u32,
        #[arg(value_enum)]
        options: Vec<Opt>,
    },
    /// Bind, print "ready", receive COUNT datagrams, print "done" ("hold": then stay until
    /// stdin closes).
    UdpRecv {
        addr: SocketAddr,
        count: u64,
        #[arg(value_enum)]
        options: Vec<Opt>,
    },
    /// COUNT datagrams of SIZE bytes to ADDR, from a connected or (default) unconnected
    /// socket; "wait": bind, print "bound", wait for a stdin line first; prints "done".
    UdpSend {
        addr: SocketAddr,
        count: u64,
        size: usize,
        #[arg(value_enum)]
        options: Vec<Opt>,
    },
    /// Open NTCP TCP connections to ADDR and NUDP bound UDP sockets, print "ready", then close
    /// one of each per stdin line (printing "closed").
    HoldSockets {
        addr: SocketAddr,
        ntcp: usize,
        nudp: usize,
    },
    /// One unconnected UDP socket; prints "ready", then per stdin line sends COUNT datagrams
    /// of SIZE bytes to each ADDR in order and prints "done" (a line holding a number N: N
    /// datagrams to each ADDR instead).
    UdpMulti {
        size: usize,
        #[arg(required = true, value_name = "ADDR=COUNT", value_parser = parse_target)]
        targets: Vec<(SocketAddr, u64)>,
    },
    /// Answer every A query with NAME -> IPV4 (TTL 300); prints "ready". Per stdin line,
    /// from its own socket (port 53): `evil TO NAME IPV4` an answer TO never asked for,
    /// `flood TO N` N of them, each with its own name (fI.flood.test), address (10.100+.x.y)
    /// and ID; prints "sent".
    DnsServer {
        addr: SocketAddr,
        name: String,
        ipv4: Ipv4Addr,
    },
    /// One UDP socket bound at BIND_ADDR; prints "ready". Per stdin line: `ask NAME PORT
    /// COUNT SIZE` asks DNS_ADDR for NAME (A), skips every datagram but the answer (same ID,
    /// from DNS_ADDR), sends COUNT datagrams of SIZE bytes to the answer's address:PORT and
    /// prints "done IP SKIPPED"; `send IP PORT COUNT SIZE` sends and prints "done".
    DnsClient {
        dns_addr: SocketAddr,
        bind_addr: SocketAddr,
    },
    /// Prints "ready", waits for a line, sends N1 datagrams of SIZE to ADDR, writes its PID to
    /// PROCS (a cgroup.procs: it moves itself), then from a new socket N2 more at once; prints
    /// "done" and the CLOCK_MONOTONIC ns before each of the N2 sends ("ts T1 T2 …"), then
    /// waits for a line.
    MoveSend {
        addr: SocketAddr,
        procs: std::path::PathBuf,
        n1: u64,
        n2: u64,
        size: usize,
    },
    /// Print "ready", wait for a stdin line, ask DNS_ADDR for NAME (A) from an unconnected
    /// socket, send COUNT datagrams of SIZE bytes to the answer's address:PORT, print "done".
    ResolveSend {
        dns_addr: SocketAddr,
        name: String,
        port: u16,
        count: u64,
        size: usize,
    },
    /// One UDP socket sends a 32-byte datagram to each of N addresses A.B.x.y:9 once a second
    /// for SECS seconds (the remote-host scale of scripts/bench); prints "done".
    UdpSpray { base: String, n: u32, secs: u64 },
    /// Prints "ready"; per stdin line `ADDR N`, N connects to ADDR at once (a socket each,
    /// closed at once), then prints "ok O refused R timedout T other X"; exits at EOF.
    TcpConnect,
    /// Accept forever, echo what each connection sends (a thread per connection); "ready".
    TcpEcho { addr: SocketAddr },
    /// CONNS connections to a tcp-echo, prints "ready", then round after round sends 16 bytes
    /// on each and reads them back until a stdin line comes; prints "done ROUNDS".
    TcpPingpong { addr: SocketAddr, conns: usize },
}

/// The trailing words of a command.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Opt {
    /// Wait for a stdin line before moving data.
    Wait,
    /// After "done", stay until stdin closes.
    Hold,
    /// UDP from a connected socket.
    Connected,
    /// UDP from an unconnected socket (the default).
    Unconnected,
}

/// Checks that `options` are among `allowed` for `command`.
fn only(command: &str, options: &[Opt], allowed: &[Opt]) {
    if let Some(o) = options.iter().find(|o| !allowed.contains(o)) {
        let word = o.to_possible_value().map(|v| v.get_name().to_owned());
        eprintln!(
            "pnm-peer {command}: {} does not apply",
            word.unwrap_or_default()
        );
        std::process::exit(2);
    }
}

/// `ADDR=COUNT` of udp-multi.
fn parse_target(s: &str) -> Result<(SocketAddr, u64), String> {
    let (addr, n) = s.rsplit_once('=').ok_or("expected ADDR=COUNT")?;
    Ok((
        addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        n.parse().map_err(|e| format!("{n}: {e}"))?,
    ))
}

fn say(word: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{word}").expect("stdout");
    out.flush().expect("stdout");
}

fn wait_line() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
}

/// CLOCK_MONOTONIC in ns (the clock of the agent's gaps and of `bpf_ktime_get_ns`).
fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// A DNS query for `name` (A, IN, recursion desired) with transaction ID `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The answer to `query`: the question as asked, one A record `ip` (TTL 300) pointing at it.
fn dns_answer(query: &[u8], ip: std::net::Ipv4Addr) -> Vec<u8> {
    // Header (12) and the question as asked; QDCOUNT 1, ANCOUNT 1, flags: response,
    // recursion desired and available, no error.
    let mut r = query.to_vec();
    r[2] = 0x81;
    r[3] = 0x80;
    r[6..8].copy_from_slice(&1_u16.to_be_bytes());
    // Answer: pointer to the question's name (offset 12), A, IN, TTL 300, 4 bytes.
    r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    r.extend_from_slice(&300_u32.to_be_bytes());
    r.extend_from_slice(&4_u16.to_be_bytes());
    r.extend_from_slice(&ip.octets());
    r
}

/// `dns-server`'s stdin: answers nobody asked for, sent from its own socket.
fn unsolicited(s: &UdpSocket) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return };
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            Some("evil") => {
                let to: SocketAddr = w[1].parse().expect("to");
                let ip: std::net::Ipv4Addr = w[3].parse().expect("ip");
                s.send_to(&dns_answer(&dns_query(0x0bad, w[2]), ip), to)
                    .expect("send");
            }
            Some("flood") => {
                let to: SocketAddr = w[1].parse().expect("to");
                let n: u32 = w[2].parse().expect("count");
                for i in 0..n {
                    let ip = std::net::Ipv4Addr::from(0x0a64_0000 + i);
                    let a = dns_answer(
                        &dns_query(i as u16 ^ 0x7777, &format!("f{i}.flood.test")),
                        ip,
                    );
                    // A full socket buffer drops, it does not fail: the count sent is what left.
                    let _ = s.send_to(&a, to);
                }
            }
            _ => return,
        }
        say("sent");
    }
}

/// `dns-client ask`: asks `dns` for `name` with ID `id`; the answer's address, and how many
/// other datagrams (answers nobody asked for) were skipped meanwhile.
fn ask(s: &UdpSocket, dns: SocketAddr, id: u16, name: &str) -> (std::net::IpAddr, u64) {
    let mut buf = [0_u8; 1500];
    let mut skipped = 0;
    // First what a flood left queued: a full receive buffer would drop the answer.
    s.set_nonblocking(true).expect("nonblocking");
    while s.recv_from(&mut buf).is_ok() {
        skipped += 1;
    }
    s.set_nonblocking(false).expect("blocking");
    s.send_to(&dns_query(id, name), dns).expect("query");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    loop {
        let (n, from) = s.recv_from(&mut buf).expect("the answer");
        if from == dns && n >= 16 && buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 {
            let a = &buf[n - 4..n];
            return (std::net::IpAddr::from([a[0], a[1], a[2], a[3]]), skipped);
        }
        skipped += 1;
    }
}

/// Sends COUNT datagrams of SIZE bytes (`w`: [COUNT, SIZE]) to `to`.
fn send_n(s: &UdpSocket, to: SocketAddr, w: &[&str]) {
    let (count, size): (u64, usize) = (w[0].parse().expect("count"), w[1].parse().expect("size"));
    let payload = vec![0x3c_u8; size];
    for _ in 0..count {
        s.send_to(&payload, to).expect("send");
    }
}

fn wait_eof() {
    let mut sink = Vec::new();
    let _ = std::io::stdin().lock().read_to_end(&mut sink);
}

fn send_exact(s: &mut TcpStream, mut n: u64) {
    let buf = [0x5a_u8; 65536];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.write_all(&buf[..k]).expect("tcp write");
        n -= k as u64;
    }
}

fn recv_exact(s: &mut TcpStream, mut n: u64) {
    let mut buf = [0_u8; 65536];
    while n > 0 {
        let k = n.min(buf.len() as u64) as usize;
        s.read_exact(&mut buf[..k]).expect("tcp read");
        n -= k as u64;
    }
}

fn wait_peer_eof(s: &mut TcpStream) {
    let mut b = [0_u8; 1];
    let _ = s.read(&mut b);
}

fn serve(mut s: TcpStream) {
    let mut h = [0_u8; 24];
    if s.read_exact(&mut h).is_err() {
        return;
    }
    let word = |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    let (up, down, server_first) = (word(0), word(1), word(2) != 0);
    recv_exact(&mut s, up);
    send_exact(&mut s, down);
    if !server_first {
        wait_peer_eof(&mut s);
    }
    drop(s);
}

fn client_transfer(mut s: TcpStream, up: u64, down: u64, server_first: bool) {
    let mut h = Vec::with_capacity(24);
    for v in [up, down, u64::from(server_first)] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&h).expect("header");
    send_exact(&mut s, up);
    recv_exact(&mut s, down);
    if server_first {
        wait_peer_eof(&mut s);
    }
    drop(s);
}

/// `tcp-connect`: `n` connects to `addr` at once; (ok, refused, timed out, other).
fn connect_round(addr: SocketAddr, n: usize) -> [usize; 4] {
    let handles: Vec<_> = (0..n)
        .map(|_| thread::spawn(move || TcpStream::connect(addr)))
        .collect();
    let mut out = [0; 4];
    for h in handles {
        let i = match h.join().expect("connect thread") {
            Ok(_) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => 1,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => 2,
            Err(_) => 3,
        };
        out[i] += 1;
    }
    out
}

/// `tcp-connect`: rounds of connects, one per stdin line, until stdin closes.
fn tcp_connect() {
    say("ready");
    for line in std::io::stdin().lock().lines().map_while(Result::ok) {
        let mut w = line.split_whitespace();
        let addr: SocketAddr = w.next().and_then(|a| a.parse().ok()).expect("ADDR");
        let n: usize = w.next().and_then(|n| n.parse().ok()).expect("N");
        let [ok, refused, timedout, other] = connect_round(addr, n);
        say(&format!(
            "ok {ok} refused {refused} timedout {timedout} other {other}"
        ));
    }
}

/// `tcp-echo`: accepts forever, a thread echoing each connection.
fn tcp_echo(addr: SocketAddr) {
    let l = TcpListener::bind(addr).expect("bind");
    say("ready");
    for s in l.incoming().flatten() {
        thread::spawn(move || echo(s));
    }
}

/// `tcp-echo`: echoes one connection until it closes.
fn echo(mut s: TcpStream) {
    let mut buf = [0_u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// `tcp-pingpong`: rounds of 16 bytes there and back on every connection until a stdin line.
fn pingpong(addr: SocketAddr, conns: usize) {
    let mut socks: Vec<TcpStream> = (0..conns)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    say("ready");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = std::sync::Arc::clone(&stop);
    thread::spawn(move || {
        wait_line();
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let mut rounds = 0_u64;
    let mut buf = [0_u8; 16];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for s in &mut socks {
            s.write_all(&[0x42; 16]).expect("ping");
            s.read_exact(&mut buf).expect("pong");
        }
        rounds += 1;
        thread::sleep(Duration::from_millis(5));
    }
    say(&format!("done {rounds}"));
}

fn main() {
    match Cli::parse().command {
        Cmd::TcpServer { addr } => tcp_server(addr),
        Cmd::TcpClient {
            addr,
            up,
            down,
            srv_closes,
            n,
            options,
        } => {
            only("tcp-client", &options, &[Opt::Wait, Opt::Hold]);
            tcp_client(addr, up, down, srv_closes != 0, n, &options);
        }
        Cmd::UdpRecv {
            addr,
            count,
            options,
        } => {
            only("udp-recv", &options, &[Opt::Hold]);
            udp_recv(addr, count, &options);
        }
        Cmd::UdpSend {
            addr,
            count,
            size,
            options,
        } => udp_send(addr, count, size, &options),
        Cmd::HoldSockets { addr, ntcp, nudp } => hold_sockets(addr, ntcp, nudp),
        Cmd::UdpMulti { size, targets } => udp_multi(size, &targets),
        Cmd::DnsServer { addr, ipv4, .. } => dns_server(addr, ipv4),
        Cmd::DnsClient {
            dns_addr,
            bind_addr,
        } => dns_client(dns_addr, bind_addr),
        Cmd::MoveSend {
            addr,
            procs,
            n1,
            n2,
            size,
        } => move_send(addr, &procs, (n1, n2), size),
        Cmd::ResolveSend {
            dns_addr,
            name,
            port,
            count,
            size,
        } => resolve_send(dns_addr, &name, port, count, size),
        Cmd::UdpSpray { base, n, secs } => udp_spray(&base, n, secs),
        Cmd::TcpConnect => tcp_connect(),
        Cmd::TcpEcho { addr } => tcp_echo(addr),
        Cmd::TcpPingpong { addr, conns } => pingpong(addr, conns),
    }
}

fn tcp_server(addr: SocketAddr) {
    let l = TcpListener::bind(addr).expect("bind");
    say("ready");
    for s in l.incoming().flatten() {
        thread::spawn(move || serve(s));
    }
}

fn tcp_client(addr: SocketAddr, up: u64, down: u64, srv_first: bool, n: u32, options: &[Opt]) {
    let mut first = Some(TcpStream::connect(addr).expect("connect"));
    if options.contains(&Opt::Wait) {
        say("connected");
        wait_line();
    }
    for _ in 0..n {
        let s = first
            .take()
            .unwrap_or_else(|| TcpStream::connect(addr).expect("connect"));
        client_transfer(s, up, down, srv_first);
    }
    done(options);
}

/// "done", then (with "hold") stay until stdin closes.
fn done(options: &[Opt]) {
    say("done");
    if options.contains(&Opt::Hold) {
        wait_eof();
    }
}

fn udp_recv(addr: SocketAddr, count: u64, options: &[Opt]) {
    let s = UdpSocket::bind(addr).expect("bind");
    say("ready");
    let mut buf = [0_u8; 65536];
    for _ in 0..count {
        s.recv_from(&mut buf).expect("recv");
    }
    done(options);
}

fn udp_send(addr: SocketAddr, count: u64, size: usize, options: &[Opt]) {
    let connected = options.contains(&Opt::Connected);
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let s = UdpSocket::bind(bind).expect("bind");
    if connected {
        s.connect(addr).expect("connect");
    }
    if options.contains(&Opt::Wait) {
        say("bound");
        wait_line();
    }
    let buf = vec![0xa5_u8; size];
    for i in 0..count {
        if connected {
            s.send(&buf)
        } else {
            s.send_to(&buf, addr)
        }
        .expect("send");
        pace(i);
    }
    done(options);
}

/// Paces a flood so no receive buffer overflows on the way.
fn pace(i: u64) {
    if i % 64 == 63 {
        thread::sleep(Duration::from_millis(2));
    }
}

fn hold_sockets(addr: SocketAddr, ntcp: usize, nudp: usize) {
    let mut tcp: Vec<TcpStream> = (0..ntcp)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let bind = if addr.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let mut udp: Vec<UdpSocket> = (0..nudp)
        .map(|_| UdpSocket::bind(bind).expect("bind"))
        .collect();
    say("ready");
    for _ in std::io::stdin().lock().lines() {
        tcp.pop();
        udp.pop();
        say("closed");
    }
}

fn udp_multi(size: usize, targets: &[(SocketAddr, u64)]) {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    say("ready");
    let buf = vec![0xa5_u8; size];
    for line in std::io::stdin().lock().lines() {
        // A line holding a number N sends N datagrams to each ADDR instead of COUNT.
        let each: Option<u64> = line.ok().and_then(|l| l.trim().parse().ok());
        for (addr, n) in targets {
            for i in 0..each.unwrap_or(*n) {
                s.send_to(&buf, addr).expect("send");
                pace(i);
            }
        }
        say("done");
    }
}

fn udp_spray(base: &str, n: u32, secs: u64) {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| {
            format!("{base}.{}.{}:9", i / 256, i % 256)
                .parse()
                .expect("address")
        })
        .collect();
    let start = std::time::Instant::now();
    for sec in 0..secs {
        for a in &addrs {
            // The peer drops them (no route back is needed): only the send counts.
            let _ = s.send_to(&[0x11_u8; 32], a);
        }
        let next = Duration::from_secs(sec + 1);
        if let Some(left) = next.checked_sub(start.elapsed()) {
            thread::sleep(left);
        }
    }
    say("done");
}

fn dns_server(addr: SocketAddr, ip: Ipv4Addr) {
    let s = UdpSocket::bind(addr).expect("bind");
    let out = s.try_clone().expect("clone");
    say("ready");
    thread::spawn(move || unsolicited(&out));
    let mut buf = [0_u8; 512];
    loop {
        let (n, from) = s.recv_from(&mut buf).expect("recv");
        s.send_to(&dns_answer(&buf[..n], ip), from).expect("send");
    }
}

fn dns_client(dns: SocketAddr, bind: SocketAddr) {
    let s = UdpSocket::bind(bind).expect("bind");
    say("ready");
    let mut id = 0x5a5a_u16;
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first().copied() {
            Some("ask") => {
                id = id.wrapping_add(1);
                let (ip, skipped) = ask(&s, dns, id, w[1]);
                send_n(
                    &s,
                    SocketAddr::from((ip, w[2].parse().expect("port"))),
                    &w[3..],
                );
                say(&format!("done {ip} {skipped}"));
            }
            Some("send") => {
                let ip: std::net::IpAddr = w[1].parse().expect("ip");
                send_n(
                    &s,
                    SocketAddr::from((ip, w[2].parse().expect("port"))),
                    &w[3..],
                );
                say("done");
            }
            _ => break,
        }
    }
}

fn move_send(to: SocketAddr, procs: &std::path::Path, (n1, n2): (u64, u64), size: usize) {
    let payload = vec![0x4d_u8; size];
    say("ready");
    wait_line();
    let first = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..n1 {
        first.send_to(&payload, to).expect("send");
    }
    std::fs::write(procs, std::process::id().to_string()).expect("move");
    let second = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut ts = Vec::with_capacity(n2 as usize);
    for _ in 0..n2 {
        ts.push(mono_ns());
        second.send_to(&payload, to).expect("send");
    }
    say("done");
    let ts: Vec<String> = ts.iter().map(u64::to_string).collect();
    say(&format!("ts {}", ts.join(" ")));
    wait_line();
}

fn resolve_send(dns: SocketAddr, name: &str, port: u16, count: u64, size: usize) {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    say("ready");
    wait_line();
    s.send_to(&dns_query(0x5a5a, name), dns).expect("query");
    let mut buf = [0_u8; 512];
    let (n, _) = s.recv_from(&mut buf).expect("answer");
    let a = &buf[n - 4..n];
    let to = SocketAddr::from(([a[0], a[1], a[2], a[3]], port));
    let payload = vec![0x3c_u8; size];
    for _ in 0..count {
        s.send_to(&payload, to).expect("send");
    }
    say("done");
}
