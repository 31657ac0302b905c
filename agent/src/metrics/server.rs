//! The HTTP server of `--metrics-addr`: hyper's HTTP/1.1 (keep-alive, pipelining, HEAD) with
//! the limits that keep a node agent answering when clients are hostile or broken:
//!
//! - at most [`ServerLimits::max_connections`] connections are served at once. Beyond that the
//!   server does not accept: further clients wait in the kernel's listen backlog
//!   ([`LISTEN_BACKLOG`], capped by `net.core.somaxconn`) and are served in arrival order as
//!   slots free, so a burst is queued, not dropped, and costs no file descriptor while it waits;
//! - a client gets [`ServerLimits::head_timeout`] to send a request head, and a keep-alive
//!   connection may stay idle that long between requests (slowloris and idle connections go);
//! - a response that makes no progress for [`ServerLimits::write_timeout`] (a client that does
//!   not read) ends its connection;
//! - a connection serves at most [`ServerLimits::max_requests`] requests, so a client that
//!   pipelines thousands of scrapes in one write gets a bounded share before it must queue again;
//! - request heads are bounded ([`MAX_HEAD_BYTES`]); a scrape's encoding is shared by the
//!   scrapes that arrive before the store changes ([`super::respond`]).
//!
//! The listening socket can be bound before any runtime exists ([`MetricsServer::bind_std`]),
//! so that an address that cannot be bound is an error before anything is loaded or attached.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    os::fd::AsRawFd as _,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    Request,
    body::Incoming,
    header::{self, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulShutdown, Watcher},
};
use nix::sys::{
    resource::{Resource, getrlimit},
    socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, listen,
        setsockopt, socket, sockopt,
    },
};
use tokio::{
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
};
use tokio_io_timeout::TimeoutStream;

use super::{respond::Responder, store::MetricsRegistry};

/// Listen backlog requested: where clients beyond [`ServerLimits::max_connections`] queue.
/// The kernel caps it at `net.core.somaxconn` (4096 by default since Linux 5.4).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Largest request head accepted (hyper's read buffer; its minimum is 8 KiB). Prometheus sends
/// well under 1 KiB.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most connections served at once by default, before the file-descriptor budget.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Limits of a [`MetricsServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time to send a request head, and longest idle time of a keep-alive connection.
    pub head_timeout: Duration,
    /// Longest time a response may make no progress before its connection is closed.
    pub write_timeout: Duration,
    /// Requests served on one connection; the last is answered with `Connection: close`.
    pub max_requests: usize,
    /// Time in-flight responses get to finish after shutdown is requested.
    pub drain_timeout: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: default_max_connections(),
            head_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            // A Prometheus scraping every 15 s reconnects every 25 minutes.
            max_requests: 100,
            drain_timeout: Duration::from_secs(2),
        }
    }
}

/// [`DEFAULT_MAX_CONNECTIONS`], or half the soft `RLIMIT_NOFILE` when that is smaller: the
/// other half stays for eBPF maps, pidfds, `/proc` reads and the spawned command's pipes.
fn default_max_connections() -> usize {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 2)
        .unwrap_or(usize::MAX)
        .clamp(16, DEFAULT_MAX_CONNECTIONS)
}

/// Creates a listening TCP socket on `addr` with the kernel's largest backlog (std's `bind` asks for
/// only 128), non-blocking and close-on-exec, ready for tokio.
fn listen_on(addr: SocketAddr) -> nix::Result<std::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    // A restarted agent rebinds at once despite connections of its predecessor in TIME_WAIT.
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    // The family's own address type: a `sockaddr_storage`-sized length is refused (EINVAL)
    // where libc's storage layout differs from the kernel's (musl, the static build).
    match addr {
        SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(a))?,
        SocketAddr::V6(a) => bind(fd.as_raw_fd(), &SockaddrIn6::from(a))?,
    }
    // Not `Backlog::new(LISTEN_BACKLOG)`: nix checks it against libc's SOMAXCONN, which is 128
    // in musl (the static build) and refuses 4096 with EINVAL. -1 asks for the kernel's
    // `net.core.somaxconn` (4096 by default), which is what it would cap LISTEN_BACKLOG to.
    listen(&fd, Backlog::MAXALLOWABLE)?;
    Ok(std::net::TcpListener::from(fd))
}

/// A bound metrics listener; [`run`](Self::run) serves it.
#[derive(Debug)]
pub struct MetricsServer {
    listener: std::net::TcpListener,
    limits: ServerLimits,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)) without
    /// a runtime: call it before anything is set up, so that a bad `--metrics-addr` fails
    /// first. [`run`](Self::run) must then be called inside a tokio runtime.
    pub fn bind_std(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = listen_on(addr).with_context(|| format!("bind metrics listener {addr}"))?;
        Ok(Self {
            listener,
            limits: ServerLimits::default(),
        })
    }

    /// [`bind_std`](Self::bind_std), for callers already in a runtime.
    #[expect(
        clippy::unused_async,
        reason = "kept async for callers written against the earlier tokio listener"
    )]
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        Self::bind_std(addr)
    }

    /// Replaces the default [`ServerLimits`].
    #[must_use]
    pub fn with_limits(mut self, limits: ServerLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("metrics listener local_addr")
    }

    /// Serves on a thread of its own (with its own single-threaded runtime) until
    /// [`ServerThread::stop`]. The sampling loop and the server then never wait for each
    /// other: a slow tick does not delay `/healthz`, and a flood of clients does not delay
    /// a tick.
    pub fn spawn(self, registry: MetricsRegistry) -> anyhow::Result<ServerThread> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("metrics runtime")?;
                rt.block_on(self.run(registry, async {
                    let _ = stopped.await;
                }))
            })
            .context("start the metrics thread")?;
        Ok(ServerThread { stop, thread })
    }

    /// Serves `/metrics` and `/healthz` until `shutdown` completes, then gives in-flight
    /// responses [`ServerLimits::drain_timeout`] to finish and closes the rest.
    pub async fn run(
        self,
        registry: MetricsRegistry,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Self { listener, limits } = self;
        let listener = tokio::net::TcpListener::from_std(listener).context("metrics listener")?;
        if let Ok(addr) = listener.local_addr() {
            log::info!(
                "serving metrics on http://{addr}/metrics (at most {} connections at once)",
                limits.max_connections
            );
        }
        let responder = Arc::new(Responder::new(registry));
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let graceful = GracefulShutdown::new();
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            // A free slot first, then accept: clients beyond the limit stay queued in the
            // listen backlog instead of being accepted and closed.
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = Arc::clone(&slots).acquire_owned() => permit.context("connection slots")?,
            };
            let accepted = tokio::select! {
                () = &mut shutdown => break,
                accepted = accept_batch(&listener, &slots, permit) => accepted,
            };
            let accepted = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            for (stream, permit) in accepted {
                let conn = serve_connection(stream, &responder, &limits, graceful.watcher());
                conns.spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
        }
        drop(listener);
        // Closes idle keep-alive connections now and lets busy ones finish their response.
        if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            log::debug!("metrics: aborting {} slow connections", conns.len());
        }
        conns.shutdown().await;
        log::info!("metrics server stopped");
        Ok(())
    }
}

/// A server running on its own thread ([`MetricsServer::spawn`]).
#[derive(Debug)]
pub struct ServerThread {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl ServerThread {
    /// Stops accepting, lets in-flight responses finish (at most
    /// [`ServerLimits::drain_timeout`]) and waits for the thread.
    pub fn stop(self) -> anyhow::Result<()> {
        let Self { stop, thread } = self;
        let _ = stop.send(());
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("the metrics thread panicked"))?
    }
}

/// Most connections taken off the listen backlog in one turn of the accept loop.
const ACCEPT_BATCH: usize = 256;

/// Waits for one connection, then takes every other one already waiting (up to
/// [`ACCEPT_BATCH`] and the free slots) in the same turn. Accepting one per turn would let
/// the backlog drain at one connection per round of all busy connections, so a newcomer
/// (a liveness probe) would wait behind the whole queue at that pace.
async fn accept_batch(
    listener: &tokio::net::TcpListener,
    slots: &Arc<Semaphore>,
    first: OwnedSemaphorePermit,
) -> std::io::Result<Vec<(TcpStream, OwnedSemaphorePermit)>> {
    let (stream, _peer) = listener.accept().await?;
    let mut accepted = vec![(stream, first)];
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    while accepted.len() < ACCEPT_BATCH {
        let Ok(permit) = Arc::clone(slots).try_acquire_owned() else {
            break;
        };
        match listener.poll_accept(&mut cx) {
            std::task::Poll::Ready(Ok((stream, _peer))) => accepted.push((stream, permit)),
            // An error is left for the next `accept`, which reports it.
            std::task::Poll::Ready(Err(_)) | std::task::Poll::Pending => break,
        }
    }
    Ok(accepted)
}

/// One connection: HTTP/1.1 with keep-alive, the head timeout (hyper's, which also bounds the
/// idle time between requests) and the read/write progress timeouts on the socket.
fn serve_connection(
    stream: TcpStream,
    responder: &Arc<Responder>,
    limits: &ServerLimits,
    watcher: Watcher,
) -> impl Future<Output = ()> + Send + 'static {
    // Answers are small and written at once; waiting for more to send only adds latency.
    let _ = stream.set_nodelay(true);
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(limits.write_timeout));
    // A request body (which nothing here reads) must trickle no slower than a head.
    io.set_read_timeout(Some(limits.head_timeout));
    let io: Pin<Box<TimeoutStream<TcpStream>>> = Box::pin(io);
    let responder = Arc::clone(responder);
    let (served, max_requests) = (AtomicUsize::new(0), limits.max_requests);
    let service = service_fn(move |req: Request<Incoming>| {
        let mut resp = responder.respond(&req);
        if served.fetch_add(1, Ordering::Relaxed) + 1 >= max_requests {
            // hyper closes the connection after a response that says so.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let resp = resp.map(Full::new);
        async move { Ok::<_, Infallible>(resp) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service);
    let conn = watcher.watch(conn);
    async move {
        if let Err(e) = conn.await {
            // Timeouts, resets and garbage: the client's problem, not an agent error.
            log::debug!("metrics: connection: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::metrics::{
        WorkloadKey,
        collector::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, tests::nasty_registry},
        store::tests::tcp,
    };

    #[test]
    fn bind_std_needs_no_runtime_and_reports_the_address() {
        let a = MetricsServer::bind_std("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = a.local_addr().expect("addr");
        let err = MetricsServer::bind_std(addr).expect_err("port in use");
        assert!(
            format!("{err:#}").contains(&format!("bind metrics listener {addr}")),
            "{err:#}"
        );
        assert!(ServerLimits::default().max_connections >= 16);
    }

    /// A response read off the wire: status line, lower-cased headers, body.
    struct Reply {
        status: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Reads one response with a `Content-Length` from `s` (which may carry more).
    async fn read_reply(s: &mut TcpStream, head_request: bool) -> Reply {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut byte).await.expect("read head");
            assert_eq!(
                n,
                1,
                "closed inside a head: {:?}",
                String::from_utf8_lossy(&buf)
            );
            buf.push(byte[0]);
        }
        let head = String::from_utf8(buf).expect("utf8 head");
        let mut lines = head.split("\r\n");
        let status = lines.next().expect("status").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        let len: usize = reply
            .header("content-length")
            .expect("content-length")
            .parse()
            .expect("length");
        if !head_request {
            reply.body = vec![0; len];
            s.read_exact(&mut reply.body).await.expect("read body");
        }
        reply
    }

    async fn start(
        reg: MetricsRegistry,
        limits: ServerLimits,
    ) -> (
        SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        let server = MetricsServer::bind_std("127.0.0.1:0".parse().expect("addr"))
            .expect("bind")
            .with_limits(limits);
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(reg, async {
            let _ = stopped.await;
        }));
        (addr, stop, task)
    }

    async fn stop(
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    ) {
        stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .expect("join")
            .expect("run");
    }

    #[tokio::test]
    async fn keep_alive_head_gzip_and_negotiation() {
        let (addr, stop_tx, task) = start(nasty_registry(), ServerLimits::default()).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // Three requests pipelined on one kept-alive connection.
        s.write_all(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n\
              GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\nAccept-Encoding: gzip\r\n\r\n\
              HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await
        .expect("write");
        let classic = read_reply(&mut s, false).await;
        assert_eq!(classic.status, "HTTP/1.1 200 OK");
        assert_eq!(classic.header("content-type"), Some(CLASSIC_CONTENT_TYPE));
        assert!(!classic.body.ends_with(b"# EOF\n"));
        let om = read_reply(&mut s, false).await;
        assert_eq!(om.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(om.header("content-encoding"), Some("gzip"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(om.body.as_slice())
            .read_to_string(&mut text)
            .expect("gunzip");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let head = read_reply(&mut s, true).await;
        assert_eq!(head.status, "HTTP/1.1 200 OK");
        assert_eq!(
            head.header("content-length"),
            Some(classic.body.len().to_string().as_str())
        );
        // Still open: one more request, then the body must be exactly what was announced.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let health = read_reply(&mut s, false).await;
        assert_eq!(health.body, b"ok\n");
        let mut rest = [0u8; 1];
        let extra = tokio::time::timeout(Duration::from_millis(200), s.read(&mut rest)).await;
        assert!(extra.is_err(), "bytes after the HEAD response: {extra:?}");
        stop(stop_tx, task).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    #[tokio::test]
    async fn a_connection_serves_at_most_max_requests() {
        let limits = ServerLimits {
            max_requests: 3,
            ..ServerLimits::default()
        };
        let (addr, stop_tx, task) = start(nasty_registry(), limits).await;
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(5))
            .await
            .expect("write");
        for _ in 0..2 {
            assert_eq!(read_reply(&mut s, false).await.header("connection"), None);
        }
        let last = read_reply(&mut s, false).await;
        assert_eq!(last.header("connection"), Some("close"));
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
        stop(stop_tx, task).await;
    }

    #[test]
    fn runs_on_its_own_thread() {
        let server = MetricsServer::bind_std("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = server.local_addr().expect("addr");
        let running = server.spawn(nasty_registry()).expect("spawn");
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        std::io::Write::write_all(
            &mut s,
            b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
        )
        .expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read");
        assert!(
            resp.starts_with("HTTP/1.1 200 OK\r\n") && resp.ends_with("ok\n"),
            "{resp}"
        );
        running.stop().expect("stop");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening"
        );
    }

    #[tokio::test]
    async fn errors_are_http_answers() {
        let (addr, stop_tx, task) = start(nasty_registry(), ServerLimits::default()).await;
        for (req, want) in [
            (
                &b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"[..],
                "HTTP/1.1 404 ",
            ),
            (
                b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                "HTTP/1.1 405 ",
            ),
            (b"garbage\r\n\r\n", "HTTP/1.1 400 "),
        ] {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(req).await.expect("write");
            let mut resp = Vec::new();
            let _ = s.read_to_end(&mut resp).await;
            let resp = String::from_utf8_lossy(&resp);
            assert!(resp.starts_with(want), "{resp}");
        }
        stop(stop_tx, task).await;
    }

    fn short_limits(max_connections: usize) -> ServerLimits {
        ServerLimits {
            max_connections,
            head_timeout: Duration::from_millis(300),
            write_timeout: Duration::from_millis(300),
            max_requests: 100,
            drain_timeout: Duration::from_secs(1),
        }
    }

    /// Whether the server closes `s` within `within` (reads EOF or a reset).
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut sink = [0u8; 4096];
        tokio::time::timeout(within, async {
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    #[tokio::test]
    async fn slow_and_idle_clients_time_out() {
        let (addr, stop_tx, task) = start(nasty_registry(), short_limits(8)).await;
        let mut idle = TcpStream::connect(addr).await.expect("connect");
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /metrics HTTP/1.1\r\nHo")
            .await
            .expect("write");
        // Idle after a first request on a kept-alive connection.
        let mut kept = TcpStream::connect(addr).await.expect("connect");
        kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        assert_eq!(read_reply(&mut kept, false).await.body, b"ok\n");
        for s in [&mut idle, &mut slow, &mut kept] {
            assert!(closed_within(s, Duration::from_secs(3)).await);
        }
        stop(stop_tx, task).await;
    }

    /// A registry whose exposition is a few hundred KiB, so that pipelined scrapes fill the
    /// socket buffers of a client that does not read.
    fn big_registry() -> MetricsRegistry {
        let reg = MetricsRegistry::default();
        for i in 0..2000 {
            reg.update_workload(
                &WorkloadKey::cgroup(format!("system.slice/unit-{i}.service")),
                &tcp(1000 + i, 2000 + i),
            );
        }
        reg
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_loses_its_slot_and_the_queue_is_served() {
        // One slot: the non-reading scraper holds it until the write timeout; the probe
        // behind it waits in the listen backlog and is then served, not refused.
        let (addr, stop_tx, task) = start(big_registry(), short_limits(1)).await;
        let mut hog = TcpStream::connect(addr).await.expect("connect");
        let scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
        hog.write_all(&scrape).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let mut probe = TcpStream::connect(addr).await.expect("queued, not refused");
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut probe, false))
            .await
            .expect("probe answered once the hog timed out");
        assert_eq!(reply.body, b"ok\n");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "{started:?}"
        );
        drop(hog);
        stop(stop_tx, task).await;
    }
}
