//! What the interactive view costs per interval, for `scripts/bench`: 100 rows with 10
//! connections each (1,000 live connections, a tenth of them closing and reopening every
//! interval), each interval ingested and drawn in full through crossterm's backend into a
//! sink. Prints one JSON line: CPU time per interval (process CPU clock), that as % of a core
//! at a 1 s interval, and the process's peak RSS (VmHWM) after a 60-s history is full.
//!
//! This measures the view alone: the session's snapshot (and the kernel's connection
//! records, which the view switches on) are measured by the benchmark's scale section.

use std::{
    io,
    time::{Duration, Instant},
};

use nix::time::{ClockId, clock_gettime};
use procnetmon2::{
    model::{ConnDetail, Counters, ProcessReport, Report, Row, RttHistogram, TcpHealth, Traffic},
    tui::{state::State, view},
};
use ratatui::{Terminal, TerminalOptions, Viewport, backend::CrosstermBackend, layout::Rect};

const ROWS: u32 = 100;
const CONNS_PER_ROW: u32 = 10;
const WARMUP: u32 = 60;
const MEASURED: u32 = 300;

fn cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).expect("process CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

fn report(tick: u32) -> Report {
    let t = u64::from(tick);
    let processes = (0..ROWS)
        .map(|p| {
            let k = u64::from(p) + 1;
            let connections = (0..CONNS_PER_ROW)
                .map(|c| {
                    // A tenth of the connections are new each interval (the old ones closed).
                    let generation = if c == 0 { t } else { 0 };
                    ConnDetail {
                        protocol: "tcp",
                        local: format!("10.0.{}.{}:{}", p / 250, p % 250 + 1, 30000 + c),
                        remote: format!("10.1.{}.{}:{}", c, generation % 250, 443),
                        state: "ESTABLISHED",
                        bytes_in: k * t * 1000 + u64::from(c),
                        bytes_out: k * t * 100,
                        rate_in: (k * 8000) as f64,
                        rate_out: (k * 800) as f64,
                        age: Duration::from_secs(t),
                        rtt_us: Some(1200),
                        retransmits: Some(0),
                    }
                })
                .collect();
            ProcessReport {
                pid: 1000 + p,
                name: format!("worker-{p}"),
                runtime: Duration::from_secs(t),
                exited: false,
                row: Row {
                    counters: Counters {
                        bytes_in: k * t * 10_000,
                        bytes_out: k * t * 1_000,
                        packets_in: k * t,
                        packets_out: k * t,
                    },
                    rate_in: (k * 80_000 + t % 7) as f64,
                    rate_out: (k * 8_000) as f64,
                    peak_rate_in: (k * 90_000) as f64,
                    peak_rate_out: (k * 9_000) as f64,
                    tcp_connections: CONNS_PER_ROW,
                    udp_connections: 0,
                    // TCP health as a busy row has it: the view draws its column (and, for
                    // the selected row, the RTT histogram).
                    health: TcpHealth {
                        connect_failures: u64::from(p % 3),
                        retransmitted_segments: k * t,
                        rtt: {
                            let mut h = RttHistogram::default();
                            h.buckets[6] = k * t;
                            h.buckets[9] = t;
                            h.sum_us = (k * t) * 50 + t * 400;
                            h
                        },
                    },
                },
                traffic: Traffic::default(),
                connections: Some(connections),
                destinations: None,
                classes: None,
                dns: None,
                gaps: Vec::new(),
                container: None,
                nspid: None,
            }
        })
        .collect();
    Report {
        timestamp: chrono::Local::now().fixed_offset(),
        processes,
        aggregated: None,
        workloads: Vec::new(),
        untracked: Counters::default(),
        untracked_sockets: 0,
        untracked_processes: 0,
        is_final: false,
    }
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let area = Rect::new(0, 0, 200, 50);
    let mut term = Terminal::with_options(
        CrosstermBackend::new(io::sink()),
        TerminalOptions {
            viewport: Viewport::Fixed(area),
        },
    )?;
    let t0 = Instant::now();
    let mut state = State::new(Duration::from_secs(1), None);
    state.page = view::page_for(area.height);
    let mut spent = Duration::ZERO;
    for tick in 0..WARMUP + MEASURED {
        // Building the report stands for the session's snapshot: not the view's cost.
        let r = report(tick);
        let now = t0 + Duration::from_secs(u64::from(tick));
        let before = cpu();
        state.ingest(r, now);
        term.draw(|f| view::draw(f, &state, now))?;
        if tick >= WARMUP {
            spent += cpu().saturating_sub(before);
        }
    }
    let per = spent / MEASURED;
    println!(
        "{{\"rows\":{ROWS},\"connections\":{},\"cpu_us_per_interval\":{},\"cpu_pct_at_1s\":{:.4},\"rss_kib\":{}}}",
        ROWS * CONNS_PER_ROW,
        per.as_micros(),
        per.as_secs_f64() * 100.0,
        vm_hwm_kib()
    );
    Ok(())
}
