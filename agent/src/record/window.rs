//! The report a live `-t` run over a window would have printed, from a recording: totals are
//! differences of the cumulative counters at the window's ends, rates the window's averages,
//! peaks the highest interval rates inside the window (the run's own peaks, exactly as it
//! reported them, when the window starts before the run). A window spanning several runs
//! adds their figures up row by row.

use std::collections::HashMap;

use super::{
    codec::{Entity, Kind},
    convert::{report_of, timestamp},
    reader::Recording,
    segment::RunMeta,
};
use crate::{
    model::{
        ClassTraffic, Counters, Destination, DnsCounts, ProcessReport, Report, Row, TcpHealth,
        WorkloadReport,
    },
    sampling::rate_bps,
};

/// A row's identity across frames and runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    /// A process: PID and name.
    Process(u32, String),
    /// A workload: name and cgroup.
    Workload(String, String),
    /// The aggregate.
    Aggregate,
}

/// Highest interval rates per row.
type Peaks = HashMap<RowKey, (f64, f64)>;

/// One run's share of the window.
struct RunPart {
    /// The last frame at or before the window's start (None: the run started inside it).
    base: Option<Report>,
    /// Its time, or the run's start.
    base_ns: i64,
    /// The last frame inside the window.
    end: Report,
    /// Highest interval rates inside the window (None: the run's own peaks apply).
    peaks: Option<Peaks>,
}

/// The window report for `[from, to]` (either open), or None when no frame falls in it.
pub fn summarize(rec: &Recording, from: Option<i64>, to: Option<i64>) -> Option<Report> {
    let to = to.unwrap_or(i64::MAX);
    let mut parts = Vec::new();
    for (meta, span) in rec.runs() {
        if span.1 <= from.unwrap_or(i64::MIN) || span.0 > to {
            continue;
        }
        if let Some(p) = run_part(rec, &meta, from, to) {
            parts.push(p);
        }
    }
    let several = parts.len() > 1;
    let mut covered: i64 = 0;
    let mut out: Option<Report> = None;
    for p in parts {
        let end_ns = p.end.timestamp.timestamp_nanos_opt().unwrap_or(0);
        covered += end_ns.saturating_sub(p.base_ns).max(0);
        let r = finish(p);
        out = Some(match out {
            None => r,
            Some(acc) => merge(acc, r),
        });
    }
    if several && let Some(r) = &mut out {
        rerate(
            r,
            std::time::Duration::from_nanos(u64::try_from(covered).unwrap_or(0)),
        );
    }
    out
}

/// Rates as averages over `dt` (the time the runs of a merged report covered).
fn rerate(r: &mut Report, dt: std::time::Duration) {
    let set = |rate: &mut (f64, f64), c: &Counters| {
        *rate = (rate_bps(c.bytes_in, dt), rate_bps(c.bytes_out, dt));
    };
    let row = |row: &mut Row| {
        let mut rates = (0.0, 0.0);
        set(&mut rates, &row.counters);
        (row.rate_in, row.rate_out) = rates;
    };
    let lists = |d: Option<&mut Vec<Destination>>, c: Option<&mut Vec<ClassTraffic>>| {
        for d in d.into_iter().flatten() {
            (d.rate_in, d.rate_out) = (
                rate_bps(d.counters.bytes_in, dt),
                rate_bps(d.counters.bytes_out, dt),
            );
        }
        for c in c.into_iter().flatten() {
            (c.rate_in, c.rate_out) = (
                rate_bps(c.counters.bytes_in, dt),
                rate_bps(c.counters.bytes_out, dt),
            );
        }
    };
    for p in &mut r.processes {
        row(&mut p.row);
        lists(p.destinations.as_mut(), p.classes.as_mut());
    }
    for w in &mut r.workloads {
        row(&mut w.row);
        lists(w.destinations.as_mut(), w.classes.as_mut());
    }
    if let Some(a) = &mut r.aggregated {
        row(a);
    }
}

fn run_part(rec: &Recording, meta: &RunMeta, from: Option<i64>, to: i64) -> Option<RunPart> {
    let mine = |s: &super::reader::Segment| s.meta().run == meta.run;
    let (_, end_frame) = rec.locate_in(to, mine)?;
    if end_frame.time_ns > to || from.is_some_and(|f| end_frame.time_ns <= f) {
        return None;
    }
    let end = report_of(&end_frame);
    let base = from.and_then(|f| {
        let (_, fr) = rec.locate_in(f, mine)?;
        (fr.time_ns <= f).then(|| (report_of(&fr), fr.time_ns))
    });
    let Some((base, base_ns)) = base else {
        return Some(RunPart {
            base: None,
            base_ns: meta.started_ns,
            end,
            peaks: None,
        });
    };
    // The window starts inside the run: its peaks are the highest interval rates in it.
    let mut peaks = Peaks::new();
    let mut keys: HashMap<u32, RowKey> = HashMap::new();
    rec.scan(Some(base_ns), |seg, head, dec, first| {
        if first {
            // Ids are numbered afresh in every block.
            keys.clear();
        }
        if rec.segments[seg].meta().run != meta.run || head.time_ns <= base_ns {
            return true;
        }
        if head.time_ns > to {
            return false;
        }
        // A stub interval (a window's or a signal's) sets no peak, as in a live run.
        if head.dts.0.saturating_mul(2) < meta.interval_ns {
            return true;
        }
        for (id, e) in dec.rows() {
            let key = keys.entry(id).or_insert_with(|| row_key(e));
            let p = peaks.entry(key.clone()).or_insert((0.0, 0.0));
            p.0 = p.0.max(e.rates.0);
            p.1 = p.1.max(e.rates.1);
        }
        true
    });
    Some(RunPart {
        base: Some(base),
        base_ns,
        end,
        peaks: Some(peaks),
    })
}

/// The identity of a row entity.
pub fn row_key(e: &Entity) -> RowKey {
    let s = |i: usize| e.strs.get(i).cloned().flatten().unwrap_or_default();
    match e.kind {
        Kind::Process => RowKey::Process(u32::try_from(e.nums[19]).unwrap_or(0), s(0)),
        Kind::Workload => RowKey::Workload(s(0), s(1)),
        _ => RowKey::Aggregate,
    }
}

/// One run's window report.
fn finish(p: RunPart) -> Report {
    let RunPart {
        base,
        base_ns,
        mut end,
        peaks,
    } = p;
    let end_ns = end.timestamp.timestamp_nanos_opt().unwrap_or(0);
    let dt = std::time::Duration::from_nanos(u64::try_from(end_ns - base_ns).unwrap_or(0));
    let zero = Report {
        timestamp: timestamp(base_ns, 0),
        processes: Vec::new(),
        aggregated: None,
        workloads: Vec::new(),
        untracked: Counters::default(),
        untracked_sockets: 0,
        untracked_processes: 0,
        is_final: false,
    };
    let base = base.unwrap_or(zero);
    let rates = |c: &Counters| (rate_bps(c.bytes_in, dt), rate_bps(c.bytes_out, dt));
    let peak_of = |k: RowKey, row: &Row| match &peaks {
        None => (row.peak_rate_in, row.peak_rate_out),
        Some(p) => p.get(&k).copied().unwrap_or((0.0, 0.0)),
    };
    for p in &mut end.processes {
        let key = RowKey::Process(p.pid, p.name.clone());
        let before = base
            .processes
            .iter()
            .find(|b| b.pid == p.pid && b.name == p.name);
        p.traffic = p
            .traffic
            .minus(&before.map(|b| b.traffic).unwrap_or_default());
        p.row = window_row(
            &p.row,
            (p.traffic.total(), before.map(|b| b.row.health)),
            rates(&p.traffic.total()),
            peak_of(key, &p.row),
        );
        p.destinations = p
            .destinations
            .take()
            .map(|d| dests(d, before.and_then(|b| b.destinations.as_deref()), dt));
        p.classes = p
            .classes
            .take()
            .map(|c| classes(c, before.and_then(|b| b.classes.as_deref()), dt));
        p.dns = dns_since(p.dns, before.and_then(|b| b.dns));
        // The gaps of the window: those not already in the report before it, unchanged.
        let seen = before.map_or(&[][..], |b| b.gaps.as_slice());
        p.gaps.retain(|g| !seen.contains(g));
    }
    for w in &mut end.workloads {
        let key = RowKey::Workload(w.name.clone(), w.cgroup.clone());
        let before = base
            .workloads
            .iter()
            .find(|b| b.name == w.name && b.cgroup == w.cgroup);
        w.traffic = w
            .traffic
            .minus(&before.map(|b| b.traffic).unwrap_or_default());
        w.row = window_row(
            &w.row,
            (w.traffic.total(), before.map(|b| b.row.health)),
            rates(&w.traffic.total()),
            peak_of(key, &w.row),
        );
        w.destinations = w
            .destinations
            .take()
            .map(|d| dests(d, before.and_then(|b| b.destinations.as_deref()), dt));
        w.classes = w
            .classes
            .take()
            .map(|c| classes(c, before.and_then(|b| b.classes.as_deref()), dt));
        w.dns = dns_since(w.dns, before.and_then(|b| b.dns));
    }
    if let Some(a) = &mut end.aggregated {
        let c = a
            .counters
            .minus(base.aggregated.map(|b| b.counters).unwrap_or_default());
        let h = base.aggregated.map(|b| b.health);
        *a = window_row(a, (c, h), rates(&c), peak_of(RowKey::Aggregate, a));
    }
    end.untracked = end.untracked.minus(base.untracked);
    end.untracked_sockets = end.untracked_sockets.saturating_sub(base.untracked_sockets);
    end.untracked_processes = end
        .untracked_processes
        .saturating_sub(base.untracked_processes);
    end.is_final = true;
    end
}

/// A window's DNS counts: the cumulative counts at its end less those at its start.
fn dns_since(end: Option<DnsCounts>, base: Option<DnsCounts>) -> Option<DnsCounts> {
    end.map(|e| {
        let b = base.unwrap_or_default();
        DnsCounts {
            unmatched: e.unmatched.saturating_sub(b.unmatched),
            dropped: e.dropped.saturating_sub(b.dropped),
        }
    })
}

/// A window's row: `counters` (already differenced), its TCP health the cumulative health at
/// the end less `base_health` (the row's at the window's start, if it had a row then) — the
/// histogram bucket by bucket, so its percentiles are the window's.
fn window_row(
    end: &Row,
    (counters, base_health): (Counters, Option<TcpHealth>),
    rates: (f64, f64),
    peaks: (f64, f64),
) -> Row {
    Row {
        counters,
        rate_in: rates.0,
        rate_out: rates.1,
        peak_rate_in: peaks.0,
        peak_rate_out: peaks.1,
        tcp_connections: end.tcp_connections,
        udp_connections: end.udp_connections,
        health: end.health.minus(&base_health.unwrap_or_default()),
    }
}

fn dests(
    end: Vec<Destination>,
    base: Option<&[Destination]>,
    dt: std::time::Duration,
) -> Vec<Destination> {
    let mut out: Vec<Destination> = end
        .into_iter()
        .map(|mut d| {
            let before = base
                .and_then(|b| b.iter().find(|x| x.remote == d.remote))
                .map(|x| x.counters)
                .unwrap_or_default();
            d.counters = d.counters.minus(before);
            d.rate_in = rate_bps(d.counters.bytes_in, dt);
            d.rate_out = rate_bps(d.counters.bytes_out, dt);
            d
        })
        .filter(|d| d.counters != Counters::default())
        .collect();
    sort_dests(&mut out);
    out
}

/// Busiest first, `other` last (as reports list them).
fn sort_dests(v: &mut [Destination]) {
    let volume = |d: &Destination| d.counters.bytes_in + d.counters.bytes_out;
    v.sort_by(|a, b| {
        (a.remote == "other")
            .cmp(&(b.remote == "other"))
            .then(volume(b).cmp(&volume(a)))
            .then(a.remote.cmp(&b.remote))
    });
}

fn classes(
    end: Vec<ClassTraffic>,
    base: Option<&[ClassTraffic]>,
    dt: std::time::Duration,
) -> Vec<ClassTraffic> {
    end.into_iter()
        .map(|mut c| {
            let before = base
                .and_then(|b| b.iter().find(|x| x.class == c.class))
                .map(|x| x.by_protocol)
                .unwrap_or_default();
            c.by_protocol = c.by_protocol.minus(&before);
            c.counters = c.by_protocol.total();
            c.rate_in = rate_bps(c.counters.bytes_in, dt);
            c.rate_out = rate_bps(c.counters.bytes_out, dt);
            c
        })
        .filter(|c| c.counters != Counters::default())
        .collect()
}

/// Adds a later run's window report to an earlier one's, row by row.
fn merge(mut acc: Report, later: Report) -> Report {
    for p in later.processes {
        match acc
            .processes
            .iter_mut()
            .find(|a| a.pid == p.pid && a.name == p.name)
        {
            Some(a) => merge_process(a, p),
            None => acc.processes.push(p),
        }
    }
    for w in later.workloads {
        match acc
            .workloads
            .iter_mut()
            .find(|a| a.name == w.name && a.cgroup == w.cgroup)
        {
            Some(a) => merge_workload(a, w),
            None => acc.workloads.push(w),
        }
    }
    acc.workloads.sort_by(|a, b| a.name.cmp(&b.name));
    acc.aggregated = match (acc.aggregated, later.aggregated) {
        (Some(a), Some(b)) => Some(merge_row(&a, &b, a.counters.plus(b.counters))),
        (a, b) => b.or(a),
    };
    acc.untracked = acc.untracked.plus(later.untracked);
    acc.untracked_sockets += later.untracked_sockets;
    acc.untracked_processes += later.untracked_processes;
    acc.timestamp = later.timestamp;
    acc
}

/// Sums counters; the highest peaks; the later run's connection counts (rates are set
/// afterwards, over the time both runs covered).
fn merge_row(a: &Row, b: &Row, counters: Counters) -> Row {
    Row {
        counters,
        rate_in: a.rate_in + b.rate_in,
        rate_out: a.rate_out + b.rate_out,
        peak_rate_in: a.peak_rate_in.max(b.peak_rate_in),
        peak_rate_out: a.peak_rate_out.max(b.peak_rate_out),
        tcp_connections: b.tcp_connections,
        udp_connections: b.udp_connections,
        health: a.health.plus(&b.health),
    }
}

fn merge_process(a: &mut ProcessReport, b: ProcessReport) {
    let traffic = crate::sampling::sum_traffic([&a.traffic, &b.traffic]);
    a.row = merge_row(&a.row, &b.row, traffic.total());
    a.traffic = traffic;
    a.runtime = b.runtime;
    a.exited = b.exited;
    a.connections = b.connections;
    a.destinations = merge_dests(a.destinations.take(), b.destinations);
    a.classes = merge_classes(a.classes.take(), b.classes);
    a.dns = merge_dns(a.dns, b.dns);
    a.gaps.extend(b.gaps);
}

/// DNS counts of two parts of a window (two runs recorded into one directory).
fn merge_dns(a: Option<DnsCounts>, b: Option<DnsCounts>) -> Option<DnsCounts> {
    match (a, b) {
        (None, None) => None,
        (a, b) => {
            let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
            Some(DnsCounts {
                unmatched: a.unmatched + b.unmatched,
                dropped: a.dropped + b.dropped,
            })
        }
    }
}

fn merge_workload(a: &mut WorkloadReport, b: WorkloadReport) {
    let traffic = crate::sampling::sum_traffic([&a.traffic, &b.traffic]);
    a.row = merge_row(&a.row, &b.row, traffic.total());
    a.traffic = traffic;
    a.exited = b.exited;
    a.connections = b.connections;
    a.destinations = merge_dests(a.destinations.take(), b.destinations);
    a.classes = merge_classes(a.classes.take(), b.classes);
    a.dns = merge_dns(a.dns, b.dns);
}

fn merge_dests(
    a: Option<Vec<Destination>>,
    b: Option<Vec<Destination>>,
) -> Option<Vec<Destination>> {
    let (mut a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => return b.or(a),
    };
    for d in b {
        match a.iter_mut().find(|x| x.remote == d.remote) {
            Some(x) => {
                x.counters = x.counters.plus(d.counters);
                x.rate_in += d.rate_in;
                x.rate_out += d.rate_out;
                x.name = d.name.or(x.name.take());
                x.hosts = d.hosts.or(x.hosts);
                x.connections = d.connections;
            }
            None => a.push(d),
        }
    }
    sort_dests(&mut a);
    Some(a)
}

fn merge_classes(
    a: Option<Vec<ClassTraffic>>,
    b: Option<Vec<ClassTraffic>>,
) -> Option<Vec<ClassTraffic>> {
    let (mut a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (a, b) => return b.or(a),
    };
    for c in b {
        match a.iter_mut().find(|x| x.class == c.class) {
            Some(x) => {
                x.by_protocol = crate::sampling::sum_traffic([&x.by_protocol, &c.by_protocol]);
                x.counters = x.by_protocol.total();
                x.rate_in += c.rate_in;
                x.rate_out += c.rate_out;
            }
            None => a.push(c),
        }
    }
    Some(a)
}
