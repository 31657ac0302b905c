//! The HTTP server of `--metrics-addr`: `/metrics` and `/healthz`.

use std::{
    fmt::Write as _,
    future::Future,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    task::JoinSet,
};

use super::collector::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, to_classic_text};
use super::store::MetricsRegistry;

/// Longest request head (request line plus headers) the server reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Time a client gets to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections served at once; more are closed at accept.
const MAX_CONNECTIONS: usize = 64;

/// Time in-flight responses get to finish after shutdown is requested.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Parses `--metrics-addr`: a bare port (`9809`) binds loopback, `127.0.0.1:9809`; an
/// `IP:PORT` (`0.0.0.0:9809`, `[::]:9809`) or `localhost:PORT` is taken as given.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    if let Some(port) = s.strip_prefix("localhost:") {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|e| format!("invalid port in {s:?}: {e}"));
    }
    if let Some(port) = s.strip_prefix(':') {
        return Err(format!(
            "{s:?}: give the address to bind, e.g. 0.0.0.0:{port} (all interfaces) or {port} (loopback)"
        ));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("{s:?}: expected PORT, IP:PORT or [IPv6]:PORT (e.g. 9809, 0.0.0.0:9809, [::]:9809)")
    })
}

/// A bound metrics listener; [`run`](Self::run) serves it.
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind metrics listener {addr}"))?;
        Ok(Self { listener })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("metrics listener local_addr")
    }

    /// Serves `/metrics` and `/healthz` until `shutdown` completes, then gives in-flight
    /// responses a moment to finish.
    pub async fn run(
        self,
        registry: MetricsRegistry,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Self { listener } = self;
        if let Ok(addr) = listener.local_addr() {
            log::info!("serving metrics on http://{addr}/metrics");
        }
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            while conns.try_join_next().is_some() {}
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if conns.len() >= MAX_CONNECTIONS {
                            log::debug!("metrics: {peer}: too many connections, closing");
                            continue;
                        }
                        let registry = registry.clone();
                        conns.spawn(async move {
                            if let Err(e) = handle(stream, &registry).await {
                                log::debug!("metrics: {peer}: {e:#}");
                            }
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        log::warn!("metrics: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            log::debug!("metrics: aborting {} slow connections", conns.len());
        }
        log::info!("metrics server stopped");
        Ok(())
    }
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `shutdown` completes.
pub async fn serve(
    addr: SocketAddr,
    registry: MetricsRegistry,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    MetricsServer::bind(addr)
        .await?
        .run(registry, shutdown)
        .await
}

/// Reads one request head, answers it and closes the connection.
async fn handle(mut stream: TcpStream, registry: &MetricsRegistry) -> anyhow::Result<()> {
    let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream))
        .await
        .context("request timed out")??;
    let (status, content_type, body, head_only) = respond(&head, registry);
    let mut out = String::new();
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n",
        body.len()
    )?;
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&body);
    }
    stream
        .write_all(out.as_bytes())
        .await
        .context("write response")?;
    stream.shutdown().await.context("shutdown")?;
    Ok(())
}

/// Reads until the blank line that ends the head. Reading the headers rather than only the
/// request line matters: closing a socket with unread data sends a RST, which can destroy the
/// response before the client reads it.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.context("read request")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n")
            || buf.windows(2).any(|w| w == b"\n\n")
            || buf.len() >= MAX_REQUEST_HEAD
        {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Status line, content type, body, and whether to omit the body (HEAD).
/// True when the request's `Accept` header names `text/plain` and not OpenMetrics.
fn wants_classic_text(head: &str) -> bool {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .any(|(_, v)| v.contains("text/plain") && !v.contains("application/openmetrics-text"))
}

/// Rewrites an OpenMetrics exposition into the classic text format: counter families are
fn respond(head: &str, registry: &MetricsRegistry) -> (&'static str, &'static str, String, bool) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", TEXT, "bad request\n".into(), false);
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", TEXT, "bad request\n".into(), false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return (
                "405 Method Not Allowed",
                TEXT,
                "method not allowed\n".into(),
                false,
            );
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    match path {
        "/metrics" => match registry.encode() {
            // OpenMetrics unless the client asks for the classic text format only (what
            // `curl -H 'Accept: text/plain' … | promtool check metrics` reads).
            Ok(body) if wants_classic_text(head) => (
                "200 OK",
                CLASSIC_CONTENT_TYPE,
                to_classic_text(&body),
                head_only,
            ),
            Ok(body) => ("200 OK", CONTENT_TYPE, body, head_only),
            Err(_) => (
                "500 Internal Server Error",
                TEXT,
                "encoding failed\n".into(),
                head_only,
            ),
        },
        "/healthz" => ("200 OK", TEXT, "ok\n".into(), head_only),
        _ => ("404 Not Found", TEXT, "not found\n".into(), head_only),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collector::tests::nasty_registry;

    #[test]
    fn metrics_addr_forms() {
        let ok = |s: &str| parse_metrics_addr(s).expect(s).to_string();
        assert_eq!(ok("9809"), "127.0.0.1:9809");
        assert_eq!(ok("localhost:9809"), "127.0.0.1:9809");
        assert_eq!(ok("0.0.0.0:9809"), "0.0.0.0:9809");
        assert_eq!(ok("[::]:9809"), "[::]:9809");
        assert_eq!(ok("[::1]:1"), "[::1]:1");
        assert_eq!(ok("10.0.0.1:80"), "10.0.0.1:80");
        for bad in [":9809", "", "65536", "host:9809", "0.0.0.0", "::", "9809x"] {
            assert!(parse_metrics_addr(bad).is_err(), "{bad:?} accepted");
        }
    }

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(request.as_bytes()).await.expect("write");
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.expect("read");
        resp
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz() {
        let reg = nasty_registry();
        let server = MetricsServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = server.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.run(reg, async {
            let _ = stopped.await;
        }));

        let resp = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(
            resp.contains(&format!("\r\nContent-Type: {CONTENT_TYPE}\r\n")),
            "{resp}"
        );
        let (head, body) = resp.split_once("\r\n\r\n").expect("head");
        assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(body.contains("procnetmon_network_receive_bytes_total{"));
        assert!(body.ends_with("# EOF\n"));

        let resp = get(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nok\n"), "{resp}");

        let resp = get(addr, "HEAD /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\n"), "{resp}");

        let resp = get(addr, "GET /nope HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 404 Not Found\r\n"), "{resp}");
        let resp = get(addr, "POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
        assert!(resp.contains("\r\nAllow: GET, HEAD\r\n"), "{resp}");
        let resp = get(addr, "garbage\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{resp}");

        stop.send(()).expect("stop");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server stops")
            .expect("join")
            .expect("run");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
