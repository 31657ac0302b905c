//! Exports of recordings made by the writer: OpenMetrics through Prometheus' own backfill
//! (`promtool`), CSV, and the SVG plot rendered by `rsvg-convert`.

use std::{collections::HashMap, process::Command};

use super::{
    Options, Recorder,
    fault_tests::{TempDir, meta, reports},
    reader::Recording,
    store::DirStorage,
};
use crate::model::Report;

fn record(dir: &std::path::Path, rs: &[Report]) {
    let mut r = Recorder::new(
        DirStorage::open(dir).expect("open"),
        "test".into(),
        meta(),
        Options {
            block_frames: 16,
            ..Options::default()
        },
        HashMap::new(),
    );
    for rep in rs {
        r.append(rep);
    }
    r.close();
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok();
    if !ok {
        println!("pnm-skip: {tool} is not installed (scripts/setup installs it)");
    }
    ok
}

/// Backfills the export with `promtool tsdb create-blocks-from openmetrics` and reads every
/// sample back with `promtool tsdb dump`: each recorded counter, at each frame's time,
/// exactly.
#[test]
fn openmetrics_backfills_into_prometheus_exactly() {
    if !have("promtool") {
        return;
    }
    let d = TempDir::new("om");
    let rs = reports(30, 0);
    record(&d.0, &rs);
    let rec = Recording::open(&d.0).expect("open");
    let mut text = Vec::new();
    super::export::openmetrics(&rec, None, None, &mut text).expect("export");
    let text = String::from_utf8(text).expect("utf-8");
    assert!(text.ends_with("# EOF\n"));
    let work = TempDir::new("om-blocks");
    let input = work.0.join("export.om");
    std::fs::write(&input, &text).expect("write");
    let blocks = work.0.join("blocks");
    let made = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&blocks)
        .output()
        .expect("promtool");
    assert!(
        made.status.success(),
        "promtool refused the export: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::create_dir_all(blocks.join("wal")).expect("wal");
    let dump = Command::new("promtool")
        .args(["tsdb", "dump"])
        .arg(&blocks)
        .output()
        .expect("promtool dump");
    assert!(dump.status.success());
    let dump = String::from_utf8_lossy(&dump.stdout);
    // {__name__="…_total", cgroup="…", protocol="tcp"} VALUE MS
    // Prometheus keeps float64 samples: exact for counters below 2^53, which these are.
    let mut got: HashMap<(String, String, i64), f64> = HashMap::new();
    for line in dump.lines() {
        let (labels, rest) = line.rsplit_once("} ").expect("dump line");
        let mut it = rest.split(' ');
        let v: f64 = it.next().and_then(|v| v.parse().ok()).expect("value");
        let t: i64 = it.next().and_then(|v| v.parse().ok()).expect("time");
        let name = labels
            .split("__name__=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("name")
            .to_string();
        let cgroup = labels
            .split("cgroup=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string();
        got.insert((name, cgroup, t), v);
    }
    let mut checked = 0;
    for r in &rs {
        let ms = r.timestamp.timestamp_millis();
        for w in &r.workloads {
            let c = w.traffic.tcp;
            if c.bytes_out == 0 {
                continue;
            }
            // With classes on, the series are per destination_class: sum them.
            let sum = |fam: &str| -> f64 {
                dump.lines()
                    .filter(|l| {
                        l.contains(&format!("__name__=\"{fam}\""))
                            && l.contains(&format!("cgroup=\"{}\"", w.name))
                            && l.ends_with(&format!(" {ms}"))
                    })
                    .map(|l| {
                        l.rsplit(' ')
                            .nth(1)
                            .and_then(|v| v.parse::<f64>().ok())
                            .unwrap_or(0.0)
                    })
                    .sum()
            };
            assert_eq!(
                sum("procnetmon_network_transmit_bytes_total"),
                c.bytes_out as f64
            );
            assert_eq!(
                sum("procnetmon_network_receive_packets_total"),
                c.packets_in as f64
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
    // Every class of every frame is there with the exact value.
    let r = &rs[17];
    let w = &r.workloads[0];
    for c in w.classes.iter().flatten() {
        let key = (
            "procnetmon_network_transmit_bytes_total".to_string(),
            w.name.clone(),
            r.timestamp.timestamp_millis(),
        );
        let class_label = format!("destination_class=\"{}\"", c.class);
        let v: f64 = dump
            .lines()
            .filter(|l| l.contains(&class_label) && l.contains(&format!("cgroup=\"{}\"", key.1)))
            .filter(|l| {
                l.contains(&format!("__name__=\"{}\"", key.0))
                    && l.ends_with(&format!(" {}", key.2))
            })
            .filter_map(|l| l.rsplit(' ').nth(1)?.parse().ok())
            .next()
            .expect("the class's sample");
        assert_eq!(v, c.by_protocol.tcp.bytes_out as f64, "{}", c.class);
    }
    // TCP health: each workload's counters and RTT histogram at each frame, exactly.
    let mut health_checked = 0;
    for r in &rs {
        let ms = r.timestamp.timestamp_millis();
        for w in r.workloads.iter().filter(|w| w.row.health.rtt.count() > 0) {
            let h = &w.row.health;
            let at = |fam: &str| got.get(&(fam.to_string(), w.name.clone(), ms)).copied();
            assert_eq!(
                at("procnetmon_tcp_connect_failures_total"),
                Some(h.connect_failures as f64),
                "{}",
                w.name
            );
            assert_eq!(
                at("procnetmon_tcp_retransmitted_segments_total"),
                Some(h.retransmitted_segments as f64)
            );
            assert_eq!(
                at("procnetmon_tcp_rtt_seconds_count"),
                Some(h.rtt.count() as f64)
            );
            health_checked += 1;
        }
    }
    assert!(health_checked >= 30, "{health_checked}");
    // The histogram's buckets are cumulative and end at the count (+Inf).
    let last = rs.last().expect("a report");
    let w = last
        .workloads
        .iter()
        .find(|w| w.row.health.rtt.count() > 0)
        .expect("a workload with RTT samples");
    let ms = last.timestamp.timestamp_millis();
    // (le, samples), in the order of le (the dump sorts labels as text).
    let mut buckets: Vec<(f64, f64)> = dump
        .lines()
        .filter(|l| {
            l.contains("__name__=\"procnetmon_tcp_rtt_seconds_bucket\"")
                && l.contains(&format!("cgroup=\"{}\"", w.name))
                && l.ends_with(&format!(" {ms}"))
        })
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').nth(1)?.parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), crate::metrics::RTT_LE_US.len() + 1);
    assert!(buckets.windows(2).all(|p| p[0].1 <= p[1].1), "{buckets:?}");
    assert_eq!(
        buckets.last().map(|b| b.1),
        Some(w.row.health.rtt.count() as f64)
    );
    assert!(buckets[0].1 < buckets[buckets.len() - 1].1, "{buckets:?}");
    assert!(!got.is_empty());
}

#[test]
fn csv_has_a_line_per_row_host_and_class() {
    let d = TempDir::new("csv");
    let rs = reports(5, 0);
    record(&d.0, &rs);
    let rec = Recording::open(&d.0).expect("open");
    let mut out = Vec::new();
    super::export::csv(&rec, None, None, &mut out).expect("csv");
    let text = String::from_utf8(out).expect("utf-8");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(super::export::CSV_HEADER));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let per_frame: usize = rs[4]
        .workloads
        .iter()
        .map(|w| {
            1 + w.destinations.as_ref().map_or(0, Vec::len) + w.classes.as_ref().map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(
        rows.iter()
            .filter(|r| r[0].starts_with("2026-01-01T00:00:05"))
            .count(),
        per_frame
    );
    let w = &rs[4].workloads[0];
    let line = rows
        .iter()
        .find(|r| r[1] == "workload" && r[2] == w.name && r[0].starts_with("2026-01-01T00:00:05"))
        .expect("row");
    assert_eq!(line[9], w.row.counters.bytes_out.to_string());
    assert_eq!(line[13], format!("{:.0}", w.row.rate_out));
    assert_eq!(line[16], w.row.health.connect_failures.to_string());
    assert_eq!(line[17], w.row.health.retransmitted_segments.to_string());
}

/// The DNS that named nothing (`--destinations`) goes out as `/metrics` has it: one counter
/// pair summed over the targets, at each frame that has any.
#[test]
fn openmetrics_carries_the_dns_counters() {
    let d = TempDir::new("om-dns");
    let mut rs = reports(4, 0);
    for (i, r) in rs.iter_mut().enumerate() {
        let n = i as u64;
        r.workloads[0].dns = Some(crate::model::DnsCounts {
            unmatched: 10 * n,
            dropped: n,
        });
        r.workloads[1].dns = Some(crate::model::DnsCounts {
            unmatched: 1,
            dropped: 0,
        });
    }
    record(&d.0, &rs);
    let rec = Recording::open(&d.0).expect("open");
    let mut out = Vec::new();
    super::export::openmetrics(&rec, None, None, &mut out).expect("export");
    let text = String::from_utf8(out).expect("utf-8");
    let values = |name: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("{name} ")))
            .filter_map(|l| l.split(' ').next().map(str::to_string))
            .collect()
    };
    assert_eq!(
        values("procnetmon_dns_unmatched_total"),
        ["1", "11", "21", "31"]
    );
    assert_eq!(values("procnetmon_dns_dropped_total"), ["0", "1", "2", "3"]);
}

/// The picture renders (rsvg-convert) and holds one line per busiest row, in order, whose
/// highest point is the row's highest rate.
#[test]
fn plot_renders_and_holds_the_busiest_rows() {
    let d = TempDir::new("plot");
    let rs = reports(40, 0);
    record(&d.0, &rs);
    let rec = Recording::open(&d.0).expect("open");
    let (series, span) = super::plot::series(&rec, None, None, 3).expect("series");
    let svg = super::plot::svg(&series, span, 0, "test");
    // The three busiest by bytes over the recording.
    let mut by_volume: Vec<(&str, u64)> = rs[39]
        .workloads
        .iter()
        .map(|w| {
            (
                w.name.as_str(),
                w.row.counters.bytes_in + w.row.counters.bytes_out,
            )
        })
        .collect();
    by_volume.sort_by_key(|v| std::cmp::Reverse(v.1));
    let legend: Vec<&str> = svg
        .lines()
        .filter_map(|l| l.split("class=\"legend\"").nth(1))
        .filter_map(|l| l.split('>').nth(1))
        .filter_map(|l| l.split('<').next())
        .collect();
    assert_eq!(
        legend,
        by_volume[..3].iter().map(|(n, _)| *n).collect::<Vec<_>>()
    );
    for (s, (name, _)) in series.iter().zip(&by_volume) {
        assert_eq!(s.name, *name);
        let want = rs
            .iter()
            .flat_map(|r| r.workloads.iter().filter(|w| w.name == *name))
            .map(|w| w.row.rate_in + w.row.rate_out)
            .fold(0.0, f64::max);
        let got = s.columns.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
        assert_eq!(got, want, "{name}");
        assert!(svg.contains(&format!("data-row=\"{name}\"")));
    }
    assert!(svg.contains("Mbps"), "y axis in bit/s");
    assert!(svg.contains("class=\"time\""), "time labels");
    if !have("rsvg-convert") {
        return;
    }
    let file = d.0.join("plot.svg");
    std::fs::write(&file, &svg).expect("write");
    let png = Command::new("rsvg-convert")
        .arg(&file)
        .output()
        .expect("rsvg-convert");
    assert!(
        png.status.success(),
        "{}",
        String::from_utf8_lossy(&png.stderr)
    );
    assert!(png.stdout.starts_with(b"\x89PNG"), "a PNG");
}
