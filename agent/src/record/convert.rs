//! Reports to frames and back. A frame holds everything a [`Report`] holds, so a replayed
//! report renders through `render/` and `tui/` unchanged; for process rows it also keeps the
//! workload `/metrics` files them under (`unit`), which reports do not carry.
//!
//! Field layout per kind (indices into `Entity::nums` / `floats` / `strs`):
//! - traffic (rows): 0..12 = tcp, udp, other × (bytes in, bytes out, packets in, packets out)
//! - TCP health (rows, last, `codec::HEALTH_NUMS`): connect failures, retransmitted segments,
//!   RTT sum µs, the RTT histogram's buckets; cumulative like the traffic
//! - Process: nums 12 tcp connections, 13 udp, 14 exited, 15 runtime ns, 16..19 has
//!   connections / destinations / classes, 19 pid, 20 nspid + 1, 21..24 dns (present,
//!   unmatched, dropped), 24.. TCP health; floats peak in, out; strs name, unit, then the
//!   container identity (runtime, id, pod uid, qos, pod, namespace, name; no id = no
//!   container)
//! - Workload: nums 12, 13 connections, 14 exited, 15..18 has connections / destinations /
//!   classes, 18..21 dns, 21.. TCP health; floats peaks; strs name, cgroup, container identity
//! - Aggregate: nums 0..4 counters, 4, 5 connections, 6.. TCP health; floats peaks
//! - Dest: nums 0..4 counters, 4 hosts + 1, 5 connections + 1; strs remote, name, class
//! - Class: nums 0..12 traffic by protocol (its counters are their sum); strs class
//! - Conn: nums bytes in, bytes out, age ns, rtt + 1, retransmits + 1; strs protocol, local,
//!   remote, state
//! - Gap: nums from ns, to ns, ongoing; strs cgroup
//! - Meta: nums untracked counters 0..4, 4 untracked sockets, 5 untracked processes

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, FixedOffset, TimeZone as _};

use super::codec::{Entity, Frame, HEALTH_NUMS, Kind};
use crate::{
    host::identity::ContainerIdentity,
    model::{
        ClassTraffic, ConnDetail, Counters, Destination, DnsCounts, Gap, ProcessReport, Report,
        Row, RttHistogram, TcpHealth, Traffic, WorkloadReport,
    },
};

/// Where the container identity starts in a row's strings.
const CONTAINER: usize = 2;

fn put_counters(n: &mut [u64], c: &Counters) {
    n[0] = c.bytes_in;
    n[1] = c.bytes_out;
    n[2] = c.packets_in;
    n[3] = c.packets_out;
}

fn counters(n: &[u64]) -> Counters {
    Counters {
        bytes_in: n[0],
        bytes_out: n[1],
        packets_in: n[2],
        packets_out: n[3],
    }
}

fn put_traffic(n: &mut [u64], t: &Traffic) {
    put_counters(&mut n[0..4], &t.tcp);
    put_counters(&mut n[4..8], &t.udp);
    put_counters(&mut n[8..12], &t.other);
}

fn traffic(n: &[u64]) -> Traffic {
    Traffic {
        tcp: counters(&n[0..4]),
        udp: counters(&n[4..8]),
        other: counters(&n[8..12]),
    }
}

fn put_container(s: &mut [Option<String>], c: Option<&ContainerIdentity>) {
    let Some(c) = c else {
        return;
    };
    s[0].clone_from(&c.runtime);
    s[1] = Some(c.id.clone());
    s[2].clone_from(&c.pod_uid);
    s[3].clone_from(&c.qos);
    s[4].clone_from(&c.pod);
    s[5].clone_from(&c.namespace);
    s[6].clone_from(&c.name);
}

fn container(s: &[Option<String>]) -> Option<ContainerIdentity> {
    Some(ContainerIdentity {
        runtime: s[0].clone(),
        id: s[1].clone()?,
        pod_uid: s[2].clone(),
        qos: s[3].clone(),
        pod: s[4].clone(),
        namespace: s[5].clone(),
        name: s[6].clone(),
    })
}

fn put_health(n: &mut [u64], h: &TcpHealth) {
    n[0] = h.connect_failures;
    n[1] = h.retransmitted_segments;
    n[2] = h.rtt.sum_us;
    n[3..HEALTH_NUMS].copy_from_slice(&h.rtt.buckets);
}

fn health(n: &[u64]) -> TcpHealth {
    let mut rtt = RttHistogram {
        sum_us: n[2],
        ..RttHistogram::default()
    };
    rtt.buckets.copy_from_slice(&n[3..HEALTH_NUMS]);
    TcpHealth {
        connect_failures: n[0],
        retransmitted_segments: n[1],
        rtt,
    }
}

/// A row kind's TCP health numbers.
fn health_nums(e: &mut Entity) -> &mut [u64] {
    let at = e.kind.health_at().unwrap_or(e.nums.len());
    &mut e.nums[at..]
}

fn health_of(e: &Entity) -> TcpHealth {
    e.kind
        .health_at()
        .map_or_else(TcpHealth::default, |at| health(&e.nums[at..]))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// An optional value stored as value + 1 (0: none).
fn plus1(v: Option<u64>) -> u64 {
    v.map_or(0, |v| v.saturating_add(1))
}

fn minus1(v: u64) -> Option<u64> {
    v.checked_sub(1)
}

/// The frame numbered `seq` for `report`. `units`: the workload of each process target
/// (by PID) as `/metrics` names it.
pub fn frame_of(report: &Report, seq: u64, units: &HashMap<u32, String>) -> Frame {
    let mut es: Vec<Entity> = Vec::new();
    let mut meta = Entity::new(Kind::Meta, None);
    put_counters(&mut meta.nums[0..4], &report.untracked);
    meta.nums[4] = report.untracked_sockets;
    meta.nums[5] = report.untracked_processes;
    es.push(meta);
    if let Some(a) = &report.aggregated {
        let mut e = Entity::new(Kind::Aggregate, None);
        put_counters(&mut e.nums[0..4], &a.counters);
        e.nums[4] = u64::from(a.tcp_connections);
        e.nums[5] = u64::from(a.udp_connections);
        put_health(health_nums(&mut e), &a.health);
        e.floats = vec![a.peak_rate_in, a.peak_rate_out];
        e.rates = (a.rate_in, a.rate_out);
        es.push(e);
    }
    for p in &report.processes {
        let mut e = Entity::new(Kind::Process, None);
        put_row(&mut e, &p.row, &p.traffic);
        e.nums[14] = u64::from(p.exited);
        e.nums[15] = nanos(p.runtime);
        e.nums[16] = u64::from(p.connections.is_some());
        e.nums[17] = u64::from(p.destinations.is_some());
        e.nums[18] = u64::from(p.classes.is_some());
        e.nums[19] = u64::from(p.pid);
        e.nums[20] = plus1(p.nspid.map(u64::from));
        put_dns(&mut e.nums[21..24], p.dns);
        e.strs[0] = Some(p.name.clone());
        e.strs[1] = units.get(&p.pid).cloned();
        put_container(&mut e.strs[CONTAINER..], p.container.as_ref());
        es.push(e);
        let row = es.len() - 1;
        push_lists(
            &mut es,
            p.connections.as_deref(),
            p.destinations.as_deref(),
            p.classes.as_deref(),
        );
        push_gaps(&mut es, row, &p.gaps);
    }
    for w in &report.workloads {
        let mut e = Entity::new(Kind::Workload, None);
        put_row(&mut e, &w.row, &w.traffic);
        e.nums[14] = u64::from(w.exited);
        e.nums[15] = u64::from(w.connections.is_some());
        e.nums[16] = u64::from(w.destinations.is_some());
        e.nums[17] = u64::from(w.classes.is_some());
        put_dns(&mut e.nums[18..21], w.dns);
        e.strs[0] = Some(w.name.clone());
        e.strs[1] = Some(w.cgroup.clone());
        put_container(&mut e.strs[CONTAINER..], w.container.as_ref());
        es.push(e);
        push_lists(
            &mut es,
            w.connections.as_deref(),
            w.destinations.as_deref(),
            w.classes.as_deref(),
        );
    }
    Frame {
        seq,
        time_ns: report.timestamp.timestamp_nanos_opt().unwrap_or(0),
        offset_s: report.timestamp.offset().local_minus_utc(),
        dt_ns: 0,
        conn_dt_ns: 0,
        is_final: report.is_final,
        entities: es,
    }
}

fn put_row(e: &mut Entity, row: &Row, t: &Traffic) {
    put_traffic(&mut e.nums[0..12], t);
    e.nums[12] = u64::from(row.tcp_connections);
    e.nums[13] = u64::from(row.udp_connections);
    put_health(health_nums(e), &row.health);
    e.floats = vec![row.peak_rate_in, row.peak_rate_out];
    e.rates = (row.rate_in, row.rate_out);
}

/// `dns`: (present, unmatched, dropped).
fn put_dns(nums: &mut [u64], dns: Option<DnsCounts>) {
    if let Some(d) = dns {
        nums.copy_from_slice(&[1, d.unmatched, d.dropped]);
    }
}

fn dns_of(nums: &[u64]) -> Option<DnsCounts> {
    (nums[0] != 0).then_some(DnsCounts {
        unmatched: nums[1],
        dropped: nums[2],
    })
}

/// A process row's gaps (after its lists): (from_ns, to_ns, ongoing), the cgroup.
fn push_gaps(es: &mut Vec<Entity>, row: usize, gaps: &[Gap]) {
    for g in gaps {
        let mut e = Entity::new(Kind::Gap, Some(row));
        e.nums = vec![g.from_ns, g.to_ns, u64::from(g.ongoing)];
        e.strs = vec![Some(g.cgroup.clone())];
        es.push(e);
    }
}

fn gap(e: &Entity) -> Gap {
    Gap {
        cgroup: e.strs[0].clone().unwrap_or_default(),
        from_ns: e.nums[0],
        to_ns: e.nums[1],
        ongoing: e.nums[2] != 0,
    }
}

/// A row's hosts, classes and connections, in that order (the codec's list order).
fn push_lists(
    es: &mut Vec<Entity>,
    conns: Option<&[ConnDetail]>,
    dests: Option<&[Destination]>,
    classes: Option<&[ClassTraffic]>,
) {
    let parent = Some(es.len() - 1);
    for d in dests.unwrap_or_default() {
        let mut e = Entity::new(Kind::Dest, parent);
        put_counters(&mut e.nums[0..4], &d.counters);
        e.nums[4] = plus1(d.hosts);
        e.nums[5] = plus1(d.connections.map(u64::from));
        e.strs = vec![Some(d.remote.clone()), d.name.clone(), d.class.clone()];
        e.rates = (d.rate_in, d.rate_out);
        es.push(e);
    }
    for c in classes.unwrap_or_default() {
        let mut e = Entity::new(Kind::Class, parent);
        put_traffic(&mut e.nums[0..12], &c.by_protocol);
        e.strs = vec![Some(c.class.clone())];
        e.rates = (c.rate_in, c.rate_out);
        es.push(e);
    }
    for c in conns.unwrap_or_default() {
        let mut e = Entity::new(Kind::Conn, parent);
        e.nums = vec![
            c.bytes_in,
            c.bytes_out,
            nanos(c.age),
            plus1(c.rtt_us.map(u64::from)),
            plus1(c.retransmits.map(u64::from)),
        ];
        e.strs = vec![
            Some(c.protocol.to_string()),
            Some(c.local.clone()),
            Some(c.remote.clone()),
            Some(c.state.to_string()),
        ];
        e.rates = (c.rate_in, c.rate_out);
        es.push(e);
    }
}

/// The report a frame holds.
pub fn report_of(frame: &Frame) -> Report {
    let es = &frame.entities;
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, e) in es.iter().enumerate() {
        if let Some(p) = e.parent {
            children.entry(p).or_default().push(i);
        }
    }
    let mut r = Report {
        timestamp: timestamp(frame.time_ns, frame.offset_s),
        processes: Vec::new(),
        aggregated: None,
        workloads: Vec::new(),
        untracked: Counters::default(),
        untracked_sockets: 0,
        untracked_processes: 0,
        is_final: frame.is_final,
    };
    for (i, e) in es.iter().enumerate() {
        let kids = children.get(&i).map(Vec::as_slice).unwrap_or_default();
        match e.kind {
            Kind::Meta => {
                r.untracked = counters(&e.nums[0..4]);
                r.untracked_sockets = e.nums[4];
                r.untracked_processes = e.nums[5];
            }
            Kind::Aggregate => r.aggregated = Some(aggregate_row(e)),
            Kind::Process => r.processes.push(process(e, kids, es)),
            Kind::Workload => r.workloads.push(workload(e, kids, es)),
            Kind::Dest | Kind::Class | Kind::Conn | Kind::Gap => {}
        }
    }
    r
}

/// The wall-clock time of a frame.
pub fn timestamp(time_ns: i64, offset_s: i32) -> DateTime<FixedOffset> {
    let offset = FixedOffset::east_opt(offset_s)
        .unwrap_or_else(|| FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
    offset.timestamp_nanos(time_ns)
}

fn aggregate_row(e: &Entity) -> Row {
    Row {
        counters: counters(&e.nums[0..4]),
        rate_in: e.rates.0,
        rate_out: e.rates.1,
        peak_rate_in: e.floats[0],
        peak_rate_out: e.floats[1],
        tcp_connections: u32::try_from(e.nums[4]).unwrap_or(u32::MAX),
        udp_connections: u32::try_from(e.nums[5]).unwrap_or(u32::MAX),
        health: health_of(e),
    }
}

fn row(e: &Entity) -> Row {
    Row {
        counters: traffic(&e.nums[0..12]).total(),
        rate_in: e.rates.0,
        rate_out: e.rates.1,
        peak_rate_in: e.floats[0],
        peak_rate_out: e.floats[1],
        tcp_connections: u32::try_from(e.nums[12]).unwrap_or(u32::MAX),
        udp_connections: u32::try_from(e.nums[13]).unwrap_or(u32::MAX),
        health: health_of(e),
    }
}

/// A row's lists: (connections, destinations, classes), each present when `has` says so.
type Lists = (
    Option<Vec<ConnDetail>>,
    Option<Vec<Destination>>,
    Option<Vec<ClassTraffic>>,
);

fn lists(has: &[u64], kids: &[usize], es: &[Entity]) -> Lists {
    let of = |kind: Kind| kids.iter().map(|&i| &es[i]).filter(move |e| e.kind == kind);
    let conns = (has[0] != 0).then(|| of(Kind::Conn).map(conn).collect());
    let dests = (has[1] != 0).then(|| of(Kind::Dest).map(dest).collect());
    let classes = (has[2] != 0).then(|| of(Kind::Class).map(class).collect());
    (conns, dests, classes)
}

fn process(e: &Entity, kids: &[usize], es: &[Entity]) -> ProcessReport {
    let (connections, destinations, classes) = lists(&e.nums[16..19], kids, es);
    ProcessReport {
        pid: u32::try_from(e.nums[19]).unwrap_or(0),
        name: e.strs[0].clone().unwrap_or_default(),
        runtime: Duration::from_nanos(e.nums[15]),
        exited: e.nums[14] != 0,
        row: row(e),
        traffic: traffic(&e.nums[0..12]),
        connections,
        container: container(&e.strs[CONTAINER..]),
        nspid: minus1(e.nums[20]).and_then(|v| u32::try_from(v).ok()),
        destinations,
        classes,
        dns: dns_of(&e.nums[21..24]),
        gaps: kids
            .iter()
            .map(|&i| &es[i])
            .filter(|e| e.kind == Kind::Gap)
            .map(gap)
            .collect(),
    }
}

fn workload(e: &Entity, kids: &[usize], es: &[Entity]) -> WorkloadReport {
    let (connections, destinations, classes) = lists(&e.nums[15..18], kids, es);
    WorkloadReport {
        name: e.strs[0].clone().unwrap_or_default(),
        cgroup: e.strs[1].clone().unwrap_or_default(),
        container: container(&e.strs[CONTAINER..]),
        exited: e.nums[14] != 0,
        row: row(e),
        traffic: traffic(&e.nums[0..12]),
        connections,
        destinations,
        classes,
        dns: dns_of(&e.nums[18..21]),
    }
}

fn dest(e: &Entity) -> Destination {
    Destination {
        remote: e.strs[0].clone().unwrap_or_default(),
        name: e.strs[1].clone(),
        class: e.strs[2].clone(),
        counters: counters(&e.nums[0..4]),
        rate_in: e.rates.0,
        rate_out: e.rates.1,
        hosts: minus1(e.nums[4]),
        connections: minus1(e.nums[5]).and_then(|v| u32::try_from(v).ok()),
    }
}

fn class(e: &Entity) -> ClassTraffic {
    ClassTraffic {
        class: e.strs[0].clone().unwrap_or_default(),
        counters: traffic(&e.nums[0..12]).total(),
        rate_in: e.rates.0,
        rate_out: e.rates.1,
        by_protocol: traffic(&e.nums[0..12]),
    }
}

/// The `&'static str`s a connection row uses (`details::state_name`, the protocols).
const NAMES: [&str; 15] = [
    "tcp",
    "udp",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSED",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "UNCONN",
    "UNKNOWN",
];

fn known(s: Option<&String>) -> &'static str {
    s.and_then(|s| NAMES.iter().find(|n| **n == s.as_str()).copied())
        .unwrap_or("UNKNOWN")
}

fn conn(e: &Entity) -> ConnDetail {
    ConnDetail {
        protocol: known(e.strs[0].as_ref()),
        local: e.strs[1].clone().unwrap_or_default(),
        remote: e.strs[2].clone().unwrap_or_default(),
        state: known(e.strs[3].as_ref()),
        bytes_in: e.nums[0],
        bytes_out: e.nums[1],
        rate_in: e.rates.0,
        rate_out: e.rates.1,
        age: Duration::from_nanos(e.nums[2]),
        rtt_us: minus1(e.nums[3]).and_then(|v| u32::try_from(v).ok()),
        retransmits: minus1(e.nums[4]).and_then(|v| u32::try_from(v).ok()),
    }
}
