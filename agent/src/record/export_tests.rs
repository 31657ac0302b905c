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

/// One sample of `promtool tsdb dump`: `{__name__="…", cgroup="…", …} VALUE MS`.
struct Sample {
    labels: HashMap<String, String>,
    value: f64,
    ms: i64,
}

/// What `promtool tsdb dump` read back from the blocks. Prometheus keeps float64 samples:
/// exact for counters below 2^53, which these are.
struct Dump(Vec<Sample>);

impl Dump {
    fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(|line| {
                let (labels, rest) = line.rsplit_once("} ").expect("dump line");
                let mut it = rest.split(' ');
                let value = it.next().and_then(|v| v.parse().ok()).expect("value");
                let ms = it.next().and_then(|v| v.parse().ok()).expect("time");
                // Go-quoted `key="value"` pairs; the test's values hold no `", `.
                let labels = labels
                    .trim_start_matches('{')
                    .split("\", ")
                    .filter_map(|kv| kv.split_once("=\""))
                    .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                    .collect();
                Sample { labels, value, ms }
            })
            .collect();
        Self(samples)
    }

    /// The samples of family `name` at `ms` whose labels include `with`.
    fn select<'a>(
        &'a self,
        name: &'a str,
        ms: i64,
        with: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| {
            s.ms == ms
                && s.labels.get("__name__").is_some_and(|n| n == name)
                && with
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
    }

    /// The sum over the series `select` finds (a workload's classes, say).
    fn sum(&self, name: &str, ms: i64, with: &[(&str, &str)]) -> f64 {
        self.select(name, ms, with).map(|s| s.value).sum()
    }

    /// The one series `select` finds.
    fn one(&self, name: &str, ms: i64, with: &[(&str, &str)]) -> Option<f64> {
        self.select(name, ms, with).next().map(|s| s.value)
    }
}

/// `text` backfilled with `promtool tsdb create-blocks-from openmetrics` (which must accept
/// it) and read back with `promtool tsdb dump`.
fn backfill(text: &str) -> Dump {
    let work = TempDir::new("om-blocks");
    let input = work.0.join("export.om");
    std::fs::write(&input, text).expect("write");
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
    Dump::parse(&String::from_utf8_lossy(&dump.stdout))
}

/// Each workload's TCP traffic at each frame (summed over its classes), exactly.
fn check_traffic(dump: &Dump, rs: &[Report]) {
    let mut checked = 0;
    for r in rs {
        let ms = r.timestamp.timestamp_millis();
        for w in r.workloads.iter().filter(|w| w.traffic.tcp.bytes_out > 0) {
            let c = w.traffic.tcp;
            let cg = [("cgroup", w.name.as_str())];
            assert_eq!(
                dump.sum("procnetmon_network_transmit_bytes_total", ms, &cg),
                c.bytes_out as f64
            );
            assert_eq!(
                dump.sum("procnetmon_network_receive_packets_total", ms, &cg),
                c.packets_in as f64
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
}

/// Every class of a frame's first workload, with the exact value.
fn check_classes(dump: &Dump, r: &Report) {
    let w = &r.workloads[0];
    let ms = r.timestamp.timestamp_millis();
    for c in w.classes.iter().flatten() {
        let with = [
            ("cgroup", w.name.as_str()),
            ("destination_class", c.class.as_str()),
        ];
        let v = dump
            .one("procnetmon_network_transmit_bytes_total", ms, &with)
            .expect("the class's sample");
        assert_eq!(v, c.by_protocol.tcp.bytes_out as f64, "{}", c.class);
    }
}

/// TCP health: each workload's counters and RTT sample count at each frame, exactly.
fn check_health(dump: &Dump, rs: &[Report]) {
    let mut checked = 0;
    for r in rs {
        let ms = r.timestamp.timestamp_millis();
        for w in r.workloads.iter().filter(|w| w.row.health.rtt.count() > 0) {
            let h = &w.row.health;
            let at = |fam: &str| dump.one(fam, ms, &[("cgroup", w.name.as_str())]);
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
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
}

/// The RTT histogram of a frame's first workload with samples: its buckets are cumulative
/// and end at the count (`+Inf`).
fn check_rtt_buckets(dump: &Dump, r: &Report) {
    let w = r
        .workloads
        .iter()
        .find(|w| w.row.health.rtt.count() > 0)
        .expect("a workload with RTT samples");
    let ms = r.timestamp.timestamp_millis();
    let cg = [("cgroup", w.name.as_str())];
    // (le, samples), in the order of le (the dump sorts labels as text).
    let mut buckets: Vec<(f64, f64)> = dump
        .select("procnetmon_tcp_rtt_seconds_bucket", ms, &cg)
        .filter_map(|s| {
            let le = s.labels.get("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, s.value))
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
}

/// Backfills the export with `promtool tsdb create-blocks-from openmetrics` and reads every
/// sample back with `promtool tsdb dump`: each recorded counter, at each frame's time,
/// exactly; each class; TCP health with its histogram.
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
    let dump = backfill(&text);
    assert!(!dump.0.is_empty());
    check_traffic(&dump, &rs);
    check_classes(&dump, &rs[17]);
    check_health(&dump, &rs);
    check_rtt_buckets(&dump, rs.last().expect("a report"));
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
