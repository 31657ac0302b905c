//! What `--record` costs, for `scripts/bench`: a made-up `--all` node (`record::synth`: 100
//! workloads, BUSY of them sending to 10 remote hosts each, with classes and per-host
//! totals, one report a second) recorded for HOURS into a fresh directory; then that
//! recording opened at its end and sought at random times. Prints one JSON line: bytes on
//! disk per day, CPU per frame (the thread's CPU clock around `Recorder::append`: encoding,
//! compression, writes), as % of a core at 1 s, the time to open at the end and to seek.
//!
//! Usage: recording_cost BUSY HOURS [DIR]   (DIR is kept when given, else removed)
//!        recording_cost --read DIR          (open and seek only: a cold figure after
//!                                            `echo 3 > /proc/sys/vm/drop_caches`)
//!
//! This measures the recorder alone: a run that prints no report every interval (a metrics
//! daemon, a `-t` window) also builds one snapshot per interval for it, which the agent's
//! own figures in the benchmark's other sections measure.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use nix::time::{ClockId, clock_gettime};
use procnetmon2::record::{
    Options, Recorder,
    convert::timestamp,
    reader::Recording,
    segment::RunMeta,
    store::DirStorage,
    synth::{Rng, Scenario, Synth},
};

fn thread_cpu() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Opens `dir` at its end and seeks 50 random times: (open ms, median seek ms, max seek ms,
/// segments, the last frame's time).
fn read(dir: &std::path::Path) -> (f64, f64, f64, usize, i64) {
    let t0 = Instant::now();
    let recording = Recording::open(dir).expect("open the recording");
    let (first, last) = recording.span();
    let (_, frame) = recording.locate(last).expect("the end");
    let open_end = t0.elapsed();
    let mut rng = Rng::new(42);
    let mut seeks = Vec::new();
    for _ in 0..50 {
        let t =
            first + i64::try_from(rng.below(u64::try_from(last - first).unwrap_or(1))).unwrap_or(0);
        let t0 = Instant::now();
        let (_, frame) = recording.locate(t).expect("a frame");
        seeks.push(t0.elapsed());
        assert!(frame.time_ns <= t);
    }
    seeks.sort();
    (
        open_end.as_secs_f64() * 1e3,
        seeks[seeks.len() / 2].as_secs_f64() * 1e3,
        seeks[seeks.len() - 1].as_secs_f64() * 1e3,
        recording.segments.len(),
        frame.time_ns,
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--read") {
        let dir = PathBuf::from(args.get(2).expect("--read DIR"));
        let (open_ms, seek_med, seek_max, segments, _) = read(&dir);
        println!(
            "{{\"open_end_ms\":{open_ms:.2},\"seek_median_ms\":{seek_med:.2},\"seek_max_ms\":{seek_max:.2},\"segments\":{segments},\"bytes\":{}}}",
            dir_size(&dir)
        );
        return;
    }
    let busy: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let hours: f64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1.0);
    let keep = args.get(3).map(PathBuf::from);
    let dir = keep.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("pnm-recording-cost-{}", std::process::id()))
    });
    let _ = std::fs::remove_dir_all(&dir);
    let frames = (hours * 3600.0) as u64;
    // 2026-01-01T00:00:00Z
    let start = 1_767_225_600_000_000_000_i64;
    let mut synth = Synth::new(Scenario::bench(busy), timestamp(start, 0));
    let meta = RunMeta {
        run: "bench".into(),
        started_ns: start,
        interval_ns: 1_000_000_000,
        host: "bench".into(),
        version: "bench".into(),
        mode: "--all".into(),
        segment: 0,
    };
    let opts = Options {
        retain: None,
        retain_size: None,
        ..Options::default()
    };
    let mut rec = Recorder::new(
        DirStorage::open(&dir).expect("open the directory"),
        dir.display().to_string(),
        meta,
        opts,
        HashMap::new(),
    );
    let mut cpu = Duration::ZERO;
    let mut last_ns = start;
    for _ in 0..frames {
        let r = synth.next_report();
        last_ns = r.timestamp.timestamp_nanos_opt().unwrap_or(0);
        let c0 = thread_cpu();
        rec.append(&r);
        cpu += thread_cpu() - c0;
    }
    let c0 = thread_cpu();
    rec.close();
    cpu += thread_cpu() - c0;
    drop(rec);
    let rss_write = rss_kib();
    let bytes = dir_size(&dir);
    let per_day = bytes as f64 * 24.0 / hours;
    let cpu_per_frame = cpu.as_secs_f64() / frames.max(1) as f64;

    // Open at the end, as `replay DIR` does, and seek (warm: just written).
    let (open_ms, seek_med, seek_max, segments, end) = read(&dir);
    assert_eq!(end, last_ns, "opened at the last frame");
    println!(
        "{{\"busy\":{busy},\"workloads\":100,\"hours\":{hours},\"frames\":{frames},\"bytes\":{bytes},\"bytes_per_day\":{per_day:.0},\"mib_per_day\":{:.2},\"cpu_us_per_frame\":{:.1},\"cpu_pct_at_1s\":{:.4},\"open_end_ms\":{:.2},\"seek_median_ms\":{:.2},\"seek_max_ms\":{:.2},\"segments\":{},\"rss_kib\":{rss_write}}}",
        per_day / 1048576.0,
        cpu_per_frame * 1e6,
        cpu_per_frame * 100.0,
        open_ms,
        seek_med,
        seek_max,
        segments,
    );
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
