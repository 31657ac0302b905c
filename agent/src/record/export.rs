//! Exports of a recording: OpenMetrics text with timestamps (the families `/metrics` serves
//! that a frame holds: traffic, TCP health, the DNS that named nothing, target info; for
//! `promtool tsdb create-blocks-from openmetrics`), and CSV for spreadsheets.
//! Each walks the recording frame by frame (one block in memory at a time); OpenMetrics once
//! per family, since a family's samples must be written together.

use std::{
    collections::BTreeMap,
    io::{self, Write},
};

use super::{
    codec::{Frame, Kind},
    convert::report_of,
    reader::Recording,
};
use crate::{
    metrics::{Protocol, RTT_LE_US, WorkloadKey},
    model::{Counters, Report, TcpHealth, Traffic, rtt_bucket_bound_us},
    session::feed::metrics_key,
};

/// The frames of `[from, to]`.
fn window<'a>(
    rec: &'a Recording,
    from: Option<i64>,
    to: Option<i64>,
) -> impl Iterator<Item = Frame> + 'a {
    rec.frames(from)
        .map(|(_, f)| f)
        .filter(move |f| from.is_none_or(|t| f.time_ns >= t))
        .take_while(move |f| to.is_none_or(|t| f.time_ns <= t))
}

/// A series' labels: the workload's, the protocol, and the class when classes were on.
type SeriesKey = (WorkloadKey, Protocol, Option<String>);

/// The cumulative traffic of each series in one frame, summed per workload as `/metrics`
/// sums them (a process target under its unit, a workload under its name).
fn series(frame: &Frame) -> BTreeMap<SeriesKey, Counters> {
    let report = report_of(frame);
    let units = units_of(frame);
    let mut out: BTreeMap<SeriesKey, Counters> = BTreeMap::new();
    let mut add =
        |key: WorkloadKey, traffic: &Traffic, classes: Option<&[crate::model::ClassTraffic]>| {
            let mut put = |proto: Protocol, class: Option<&str>, c: Counters| {
                let e = out
                    .entry((key.clone(), proto, class.map(str::to_string)))
                    .or_default();
                *e = e.plus(c);
            };
            match classes {
                Some(cs) => {
                    for c in cs {
                        put(Protocol::Tcp, Some(&c.class), c.by_protocol.tcp);
                        put(Protocol::Udp, Some(&c.class), c.by_protocol.udp);
                        put(Protocol::Other, Some(&c.class), c.by_protocol.other);
                    }
                }
                None => {
                    put(Protocol::Tcp, None, traffic.tcp);
                    put(Protocol::Udp, None, traffic.udp);
                    put(Protocol::Other, None, traffic.other);
                }
            }
        };
    for p in &report.processes {
        let unit = units.get(&p.pid).map_or("", String::as_str);
        add(
            metrics_key(p.container.as_ref(), unit),
            &p.traffic,
            p.classes.as_deref(),
        );
    }
    for w in &report.workloads {
        add(
            metrics_key(w.container.as_ref(), &w.name),
            &w.traffic,
            w.classes.as_deref(),
        );
    }
    // A protocol that never carried traffic has no series (as in /metrics).
    out.retain(|_, c| *c != Counters::default());
    out
}

/// The cumulative TCP health of each workload that has any, summed per workload as
/// `/metrics` sums it.
fn health_series(frame: &Frame) -> BTreeMap<WorkloadKey, TcpHealth> {
    let report = report_of(frame);
    let units = units_of(frame);
    let mut out: BTreeMap<WorkloadKey, TcpHealth> = BTreeMap::new();
    let rows = report
        .processes
        .iter()
        .map(|p| {
            let unit = units.get(&p.pid).map_or("", String::as_str);
            (metrics_key(p.container.as_ref(), unit), &p.row.health)
        })
        .chain(
            report
                .workloads
                .iter()
                .map(|w| (metrics_key(w.container.as_ref(), &w.name), &w.row.health)),
        );
    for (key, h) in rows {
        let e = out.entry(key).or_default();
        *e = e.plus(h);
    }
    out.retain(|_, h| *h != TcpHealth::default());
    out
}

/// The DNS that named nothing over every target of a frame, when it has any
/// `--destinations` target: (unmatched, dropped), as `/metrics` sums them.
fn dns_totals(frame: &Frame) -> Option<(u64, u64)> {
    let report = report_of(frame);
    let counts = report
        .processes
        .iter()
        .map(|p| p.dns)
        .chain(report.workloads.iter().map(|w| w.dns))
        .flatten();
    counts.fold(None, |acc, d| {
        let (u, r) = acc.unwrap_or((0, 0));
        Some((u + d.unmatched, r + d.dropped))
    })
}

/// The process targets' units (the workload `/metrics` files each under), by PID.
fn units_of(frame: &Frame) -> BTreeMap<u32, String> {
    frame
        .entities
        .iter()
        .filter(|e| e.kind == Kind::Process)
        .filter_map(|e| Some((u32::try_from(e.nums[19]).ok()?, e.strs[1].clone()?)))
        .collect()
}

/// OpenMetrics escaping of a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A workload's labels, as `/metrics` writes them.
fn workload_labels(w: &WorkloadKey) -> String {
    w.labels()
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn labels(key: &SeriesKey) -> String {
    let (w, proto, class) = key;
    let mut parts: Vec<String> = w
        .labels()
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    parts.push(format!("protocol=\"{}\"", proto.as_str()));
    if let Some(c) = class {
        parts.push(format!("destination_class=\"{}\"", escape(c)));
    }
    parts.join(",")
}

/// A frame's time as OpenMetrics writes it: seconds, to the millisecond.
fn om_time(ns: i64) -> String {
    let ms = ns.div_euclid(1_000_000);
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

/// A traffic family: its name (without `_total`), help, unit, and which counter it takes.
type Family = (
    &'static str,
    &'static str,
    Option<&'static str>,
    fn(&Counters) -> u64,
);

/// The traffic families, as `/metrics` names them (`metrics::collector`).
const FAMILIES: [Family; 4] = [
    (
        "procnetmon_network_receive_bytes",
        "IP bytes received by the workload's sockets",
        Some("bytes"),
        |c| c.bytes_in,
    ),
    (
        "procnetmon_network_transmit_bytes",
        "IP bytes sent by the workload's sockets",
        Some("bytes"),
        |c| c.bytes_out,
    ),
    (
        "procnetmon_network_receive_packets",
        "Packets received by the workload's sockets",
        None,
        |c| c.packets_in,
    ),
    (
        "procnetmon_network_transmit_packets",
        "Packets sent by the workload's sockets",
        None,
        |c| c.packets_out,
    ),
];

/// Writes `[from, to]` as OpenMetrics text: each traffic family once, its samples in time
/// order with their timestamps, then TCP health, the DNS counters, `procnetmon_target_info`
/// for process targets, `# EOF`.
pub fn openmetrics(
    rec: &Recording,
    from: Option<i64>,
    to: Option<i64>,
    out: &mut dyn Write,
) -> io::Result<()> {
    for (name, help, unit, pick) in FAMILIES {
        writeln!(out, "# HELP {name} {help}.")?;
        writeln!(out, "# TYPE {name} counter")?;
        if let Some(u) = unit {
            writeln!(out, "# UNIT {name} {u}")?;
        }
        for f in window(rec, from, to) {
            let t = om_time(f.time_ns);
            for (key, c) in series(&f) {
                writeln!(out, "{name}_total{{{}}} {} {t}", labels(&key), pick(&c))?;
            }
        }
    }
    write_health(rec, from, to, out)?;
    write_dns(rec, from, to, out)?;
    writeln!(
        out,
        "# HELP procnetmon_target_info A process named with -p; join on pid."
    )?;
    writeln!(out, "# TYPE procnetmon_target_info gauge")?;
    for f in window(rec, from, to) {
        let t = om_time(f.time_ns);
        let units = units_of(&f);
        for p in report_of(&f).processes.iter().filter(|p| !p.exited) {
            let key = metrics_key(
                p.container.as_ref(),
                units.get(&p.pid).map_or("", String::as_str),
            );
            let mut l = format!("pid=\"{}\",comm=\"{}\"", p.pid, escape(&p.name));
            for (k, v) in key.labels() {
                l.push_str(&format!(",{k}=\"{}\"", escape(v)));
            }
            writeln!(out, "procnetmon_target_info{{{l}}} 1 {t}")?;
        }
    }
    writeln!(out, "# EOF")
}

/// The TCP health families, named and labelled as `/metrics` has them
/// (`metrics::collector`): two counters per workload, and `procnetmon_tcp_rtt_seconds` with
/// the same fixed buckets (`RTT_LE_US`, cumulative, then `+Inf`), `_count` and `_sum`.
fn write_health(
    rec: &Recording,
    from: Option<i64>,
    to: Option<i64>,
    out: &mut dyn Write,
) -> io::Result<()> {
    type Pick = fn(&TcpHealth) -> u64;
    let counters: [(&str, &str, Pick); 2] = [
        (
            "procnetmon_tcp_connect_failures",
            "Outgoing TCP connects that never reached ESTABLISHED (refused, reset, timed out) and incoming handshakes that never completed",
            |h| h.connect_failures,
        ),
        (
            "procnetmon_tcp_retransmitted_segments",
            "TCP segments the workload's sockets retransmitted",
            |h| h.retransmitted_segments,
        ),
    ];
    for (name, help, pick) in counters {
        writeln!(out, "# HELP {name} {help}.")?;
        writeln!(out, "# TYPE {name} counter")?;
        for f in window(rec, from, to) {
            let t = om_time(f.time_ns);
            for (key, h) in health_series(&f) {
                writeln!(
                    out,
                    "{name}_total{{{}}} {} {t}",
                    workload_labels(&key),
                    pick(&h)
                )?;
            }
        }
    }
    let name = "procnetmon_tcp_rtt_seconds";
    writeln!(
        out,
        "# HELP {name} Smoothed RTT of the workload's TCP connections, sampled once per connection per interval."
    )?;
    writeln!(out, "# TYPE {name} histogram")?;
    writeln!(out, "# UNIT {name} seconds")?;
    for f in window(rec, from, to) {
        let t = om_time(f.time_ns);
        for (key, h) in health_series(&f) {
            let l = workload_labels(&key);
            let sep = if l.is_empty() { "" } else { "," };
            for (le, n) in cumulative_rtt(&h) {
                writeln!(out, "{name}_bucket{{{l}{sep}le=\"{le}\"}} {n} {t}")?;
            }
            writeln!(out, "{name}_count{{{l}}} {} {t}", h.rtt.count())?;
            writeln!(out, "{name}_sum{{{l}}} {} {t}", h.rtt.sum_us as f64 / 1e6)?;
        }
    }
    Ok(())
}

/// The RTT histogram as OpenMetrics buckets: (`le` as written, samples at or below it).
fn cumulative_rtt(h: &TcpHealth) -> Vec<(String, u64)> {
    let mut out = Vec::with_capacity(RTT_LE_US.len() + 1);
    let mut seen = 0;
    let mut i = 0;
    for le in RTT_LE_US {
        while i < h.rtt.buckets.len() && rtt_bucket_bound_us(i) <= le {
            seen += h.rtt.buckets[i];
            i += 1;
        }
        out.push((format!("{}", le as f64 / 1e6), seen));
    }
    out.push(("+Inf".to_string(), h.rtt.count()));
    out
}

/// `procnetmon_dns_unmatched_total` and `procnetmon_dns_dropped_total` (no labels: the sum
/// over every target, as `/metrics` has them), at each frame that has `--destinations`.
fn write_dns(
    rec: &Recording,
    from: Option<i64>,
    to: Option<i64>,
    out: &mut dyn Write,
) -> io::Result<()> {
    type Pick = fn((u64, u64)) -> u64;
    let families: [(&str, &str, Pick); 2] = [
        (
            "procnetmon_dns_unmatched",
            "DNS answers to targets that matched none of their queries (named nothing)",
            |d| d.0,
        ),
        (
            "procnetmon_dns_dropped",
            "Targets' DNS queries and answers not handed up (past the per-target budget, or a full buffer)",
            |d| d.1,
        ),
    ];
    for (name, help, pick) in families {
        writeln!(out, "# HELP {name} {help}.")?;
        writeln!(out, "# TYPE {name} counter")?;
        for f in window(rec, from, to) {
            if let Some(d) = dns_totals(&f) {
                writeln!(out, "{name}_total {} {}", pick(d), om_time(f.time_ns))?;
            }
        }
    }
    Ok(())
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "time,kind,name,pid,cgroup,remote,remote_name,class,bytes_in,bytes_out,packets_in,packets_out,rate_in_bps,rate_out_bps,tcp_connections,udp_connections,tcp_connect_failures,tcp_retransmitted_segments";

/// Writes `[from, to]` as CSV: one line per row, remote host and class per frame (counters
/// since the run started, rates over the frame's interval).
pub fn csv(
    rec: &Recording,
    from: Option<i64>,
    to: Option<i64>,
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(out, "{CSV_HEADER}")?;
    for f in window(rec, from, to) {
        csv_frame(&report_of(&f), out)?;
    }
    Ok(())
}

/// What one CSV line says beside the time.
struct CsvLine<'a> {
    kind: &'a str,
    name: &'a str,
    pid: Option<u32>,
    cgroup: &'a str,
    /// Remote address, its name, its class (or a class alone).
    remote: (&'a str, &'a str, &'a str),
    counters: Counters,
    rates: (f64, f64),
    /// TCP and UDP connections (rows only).
    conns: Option<(u32, u32)>,
    /// TCP connect failures and retransmitted segments since the run started (rows only).
    health: Option<(u64, u64)>,
}

impl CsvLine<'_> {
    fn write(&self, time: &str, out: &mut dyn Write) -> io::Result<()> {
        let c = &self.counters;
        let (tcp, udp) = self.conns.map_or((String::new(), String::new()), |(t, u)| {
            (t.to_string(), u.to_string())
        });
        let (failures, retrans) = self
            .health
            .map_or((String::new(), String::new()), |(f, r)| {
                (f.to_string(), r.to_string())
            });
        writeln!(
            out,
            "{time},{},{},{},{},{},{},{},{},{},{},{},{:.0},{:.0},{tcp},{udp},{failures},{retrans}",
            self.kind,
            csv_field(self.name),
            self.pid.map(|p| p.to_string()).unwrap_or_default(),
            csv_field(self.cgroup),
            csv_field(self.remote.0),
            csv_field(self.remote.1),
            csv_field(self.remote.2),
            c.bytes_in,
            c.bytes_out,
            c.packets_in,
            c.packets_out,
            self.rates.0,
            self.rates.1,
        )
    }
}

/// A row's line, then its remote hosts' and classes'.
fn csv_row(
    time: &str,
    kind: &str,
    (name, pid, cgroup): (&str, Option<u32>, &str),
    row: &crate::model::Row,
    dests: Option<&[crate::model::Destination]>,
    classes: Option<&[crate::model::ClassTraffic]>,
    out: &mut dyn Write,
) -> io::Result<()> {
    let base = CsvLine {
        kind,
        name,
        pid,
        cgroup,
        remote: ("", "", ""),
        counters: row.counters,
        rates: (row.rate_in, row.rate_out),
        conns: Some((row.tcp_connections, row.udp_connections)),
        health: Some((
            row.health.connect_failures,
            row.health.retransmitted_segments,
        )),
    };
    base.write(time, out)?;
    for d in dests.unwrap_or_default() {
        CsvLine {
            kind: "destination",
            remote: (
                &d.remote,
                d.name.as_deref().unwrap_or(""),
                d.class.as_deref().unwrap_or(""),
            ),
            counters: d.counters,
            rates: (d.rate_in, d.rate_out),
            conns: None,
            health: None,
            ..base
        }
        .write(time, out)?;
    }
    for c in classes.unwrap_or_default() {
        CsvLine {
            kind: "class",
            remote: ("", "", &c.class),
            counters: c.counters,
            rates: (c.rate_in, c.rate_out),
            conns: None,
            health: None,
            ..base
        }
        .write(time, out)?;
    }
    Ok(())
}

/// One frame's CSV lines.
pub fn csv_frame(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let time = r
        .timestamp
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for p in &r.processes {
        let id = (p.name.as_str(), Some(p.pid), "");
        csv_row(
            &time,
            "process",
            id,
            &p.row,
            p.destinations.as_deref(),
            p.classes.as_deref(),
            out,
        )?;
    }
    for w in &r.workloads {
        let id = (w.name.as_str(), None, w.cgroup.as_str());
        csv_row(
            &time,
            "workload",
            id,
            &w.row,
            w.destinations.as_deref(),
            w.classes.as_deref(),
            out,
        )?;
    }
    if let Some(a) = &r.aggregated {
        csv_row(&time, "aggregate", ("TOTAL", None, ""), a, None, None, out)?;
    }
    Ok(())
}
