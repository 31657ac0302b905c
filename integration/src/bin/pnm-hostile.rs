//! Hostile HTTP clients against a metrics endpoint on loopback, and a well-behaved prober
//! that measures whether it still gets answers. Used by `integration/tests/metrics_hostile.rs`
//! (and by hand: `pnm-hostile 127.0.0.1:9809 20`).
//!
//! `pnm-hostile ADDR SECONDS [CLIENTS SLOWLORIS IDLE NONREADING PAUSE_MS]` (defaults 1000 200
//! 64 64 1000) keeps, for SECONDS:
//! - CLIENTS concurrent scrapers, each looping connect → `GET /metrics` → read all → close →
//!   pause PAUSE_MS. With `PAUSE_MS` 0 they are a closed loop that measures only throughput
//!   (a newcomer waits behind CLIENTS queued requests: a benchmark, see scripts/bench); the
//!   default is a thousand scrapers at about 1 Hz, more than the endpoint should ever see;
//! - SLOWLORIS connections sending a request head one header line every 500 ms, never ending it;
//! - IDLE connections that send nothing;
//! - NONREADING connections that send `GET /metrics` and never read the answer (a server
//!   blocked writing to such clients is in the agent's unit tests, with a large exposition),
//!
//! each reopened when the server closes it. Meanwhile a separate thread (not sharing the
//! hostile clients' runtime, so their load does not delay it) probes, from four threads, `/healthz` and `/metrics`
//! in turn on fresh connections with a 1 s budget. At the end it prints one JSON line:
//! `{"healthz":{"tries","ok","p50_ms","p99_ms","max_ms"},"metrics":{…},"hostile":{…}}`.
//! Loopback only; it stops by itself.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A probe is good when its whole response arrived within this.
const BUDGET: Duration = Duration::from_secs(1);
/// Probing threads, each alternating `/healthz` and `/metrics` on fresh connections.
const PROBERS: usize = 4;
/// Time the hostile clients get to reach full strength before probing starts.
const WARMUP: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    connects: AtomicU64,
    errors: AtomicU64,
}

fn usage() -> ! {
    eprintln!("usage: pnm-hostile 127.0.0.1:PORT SECONDS [CLIENTS SLOWLORIS IDLE NONREADING]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr: SocketAddr = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    if !addr.ip().is_loopback() {
        eprintln!("pnm-hostile: {addr}: loopback only");
        std::process::exit(2);
    }
    let num = |i: usize, default: u64| {
        args.get(i)
            .map_or(Some(default), |a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    let seconds = num(1, 0);
    if seconds == 0 {
        usage();
    }
    let (clients, slowloris, idle, nonreading) =
        (num(2, 1000), num(3, 200), num(4, 64), num(5, 64));
    let pause = Duration::from_millis(num(6, 1000));
    raise_nofile();

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let hostile = {
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(hostile_load(
                addr,
                [clients, slowloris, idle, nonreading],
                pause,
                stop,
                counts,
            ));
            // Closes every socket still open.
            rt.shutdown_timeout(Duration::from_secs(1));
        })
    };
    std::thread::sleep(WARMUP);
    let probing = Duration::from_secs(seconds)
        .saturating_sub(WARMUP)
        .max(Duration::from_secs(1));
    // A few probers at once: enough tries for a percentage within one short run.
    let probers: Vec<_> = (0..PROBERS)
        .map(|_| std::thread::spawn(move || probe(addr, probing)))
        .collect();
    let (mut health, mut metrics) = (Probes::default(), Probes::default());
    for p in probers {
        let (h, m) = p.join().expect("prober");
        health.merge(h);
        metrics.merge(m);
    }
    stop.store(true, Ordering::Relaxed);
    hostile.join().expect("hostile thread");
    println!(
        "{}",
        serde_json::json!({
            "healthz": health.summary(),
            "metrics": metrics.summary(),
            "hostile": {
                "requests": counts.requests.load(Ordering::Relaxed),
                "connects": counts.connects.load(Ordering::Relaxed),
                "errors": counts.errors.load(Ordering::Relaxed),
            },
        })
    );
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one: a thousand and more sockets.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
        }
    }
}

async fn hostile_load(
    addr: SocketAddr,
    [clients, slowloris, idle, nonreading]: [u64; 4],
    pause: Duration,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    let kinds: [(u64, Kind); 4] = [
        (clients, Kind::Scraper),
        (slowloris, Kind::Slowloris),
        (idle, Kind::Idle),
        (nonreading, Kind::NonReading),
    ];
    for (n, kind) in kinds {
        for i in 0..n {
            let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
            // Scrapers start spread over one pause, as independent clients would.
            let offset = pause.mul_f64(i as f64 / n as f64);
            tasks.spawn(async move {
                tokio::time::sleep(offset).await;
                while !stop.load(Ordering::Relaxed) {
                    if one_connection(addr, kind, &stop, &counts).await.is_err() {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if matches!(kind, Kind::Scraper) {
                        tokio::time::sleep(pause).await;
                    }
                }
            });
        }
    }
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks.shutdown().await;
}

#[derive(Clone, Copy)]
enum Kind {
    Scraper,
    Slowloris,
    Idle,
    NonReading,
}

/// One connection of `kind`, until the server closes it or the run stops.
async fn one_connection(
    addr: SocketAddr,
    kind: Kind,
    stop: &AtomicBool,
    counts: &Counts,
) -> std::io::Result<()> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    counts.connects.fetch_add(1, Ordering::Relaxed);
    let tick = Duration::from_millis(500);
    match kind {
        Kind::Scraper => {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await?;
            let mut sink = Vec::new();
            s.read_to_end(&mut sink).await?;
            counts.requests.fetch_add(1, Ordering::Relaxed);
        }
        Kind::Slowloris => {
            s.write_all(b"GET /metrics HTTP/1.1\r\n").await?;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(tick).await;
                s.write_all(b"X-Slow: y\r\n").await?;
            }
        }
        Kind::Idle => {
            let mut byte = [0u8; 1];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(r) = tokio::time::timeout(tick, s.read(&mut byte)).await {
                    r?;
                    return Ok(()); // closed (or spoke): open another
                }
            }
        }
        Kind::NonReading => {
            // Asks, never reads, holds the connection: the server must not keep a slot (or a
            // blocked write) for it forever.
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .await?;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(tick).await;
                // Closed by the server with our answer unread: a reset. Open another.
                if s.take_error()?.is_some() {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Latencies of one kind of probe, in ms; failed tries count as failures, not latencies.
#[derive(Default)]
struct Probes {
    tries: u64,
    ok: u64,
    latencies_ms: Vec<f64>,
}

impl Probes {
    fn merge(&mut self, other: Self) {
        self.tries += other.tries;
        self.ok += other.ok;
        self.latencies_ms.extend(other.latencies_ms);
    }

    fn summary(&self) -> serde_json::Value {
        let mut l = self.latencies_ms.clone();
        l.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(f64::NAN)
        };
        serde_json::json!({
            "tries": self.tries,
            "ok": self.ok,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "max_ms": l.last().copied().unwrap_or(f64::NAN),
        })
    }
}

/// Probes `/healthz` and `/metrics` in turn, each on a fresh connection, for `how_long`.
fn probe(addr: SocketAddr, how_long: Duration) -> (Probes, Probes) {
    let (mut health, mut metrics) = (Probes::default(), Probes::default());
    let end = Instant::now() + how_long;
    while Instant::now() < end {
        for (path, needle, p) in [
            ("/healthz", "ok\n", &mut health),
            ("/metrics", "procnetmon_build_info", &mut metrics),
        ] {
            let started = Instant::now();
            let good = fetch(addr, path).is_ok_and(|body| body.contains(needle));
            let took = started.elapsed();
            p.tries += 1;
            if good {
                p.latencies_ms.push(took.as_secs_f64() * 1000.0);
                if took <= BUDGET {
                    p.ok += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    (health, metrics)
}

/// One `GET` on a new connection with the whole exchange bounded by [`BUDGET`] (plus slack to
/// measure how late a late answer is); the response, if it is a 200.
fn fetch(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let limit = BUDGET * 3;
    let mut s = TcpStream::connect_timeout(&addr, limit)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    if resp.starts_with("HTTP/1.1 200 ") {
        Ok(resp)
    } else {
        Err(std::io::Error::other(format!("bad response: {resp:.80}")))
    }
}
