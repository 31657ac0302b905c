//! Exports of a recording: OpenMetrics text with timestamps (the traffic families `/metrics`
//! serves, for `promtool tsdb create-blocks-from openmetrics`), and CSV for spreadsheets.
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
    metrics::{Protocol, WorkloadKey},
    model::{Counters, Report, Traffic},
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
    let units: BTreeMap<u32, String> = frame
        .entities
        .iter()
        .filter(|e| e.kind == Kind::Process)
        .filter_map(|e| Some((u32::try_from(e.nums[19]).ok()?, e.strs[1].clone()?)))
        .collect();
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

/// OpenMetrics escaping of a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
/// order with their timestamps, then `procnetmon_target_info` for process targets, `# EOF`.
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
    writeln!(
        out,
        "# HELP procnetmon_target_info A process named with -p; join on pid."
    )?;
    writeln!(out, "# TYPE procnetmon_target_info gauge")?;
    for f in window(rec, from, to) {
        let t = om_time(f.time_ns);
        let units: BTreeMap<u32, String> = f
            .entities
            .iter()
            .filter(|e| e.kind == Kind::Process)
            .filter_map(|e| Some((u32::try_from(e.nums[19]).ok()?, e.strs[1].clone()?)))
            .collect();
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

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The CSV header.
pub const CSV_HEADER: &str = "time,kind,name,pid,cgroup,remote,remote_name,class,bytes_in,bytes_out,packets_in,packets_out,rate_in_bps,rate_out_bps,tcp_connections,udp_connections";

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
}

impl CsvLine<'_> {
    fn write(&self, time: &str, out: &mut dyn Write) -> io::Result<()> {
        let c = &self.counters;
        let (tcp, udp) = self.conns.map_or((String::new(), String::new()), |(t, u)| {
            (t.to_string(), u.to_string())
        });
        writeln!(
            out,
            "{time},{},{},{},{},{},{},{},{},{},{},{},{:.0},{:.0},{tcp},{udp}",
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
