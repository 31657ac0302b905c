//! `Session::tick` and `Session::snapshot` against `kernel::fake` and a fake host: no root,
//! no clock (every instant is given).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use super::{NodeWide, ReportKind, Session, Started, Subject};
use crate::{
    host::{
        netns::NetnsLinks,
        procs::{OldSocket, ProcIdentity},
        workloads::CgroupInfo,
    },
    kernel::{
        CgroupCount, Connection, IfaceKey, Kernel as _, Proto, Slot, Untracked, fake::FakeKernel,
    },
    model::{Counters, Traffic},
    plan::ProcessLabels,
};

use super::fake_host::FakeHost;

fn tcp(bytes_in: u64, bytes_out: u64) -> Traffic {
    Traffic {
        tcp: Counters {
            bytes_in,
            bytes_out,
            packets_in: bytes_in / 100,
            packets_out: bytes_out / 100,
        },
        ..Traffic::default()
    }
}

fn process(slot: u32, pid: u32, baseline: Traffic) -> Started {
    Started {
        slot: Slot(slot),
        subject: Subject::Process {
            ident: ProcIdentity {
                pid,
                comm: format!("p{pid}"),
                start_ticks: 1,
            },
            labels: ProcessLabels::default(),
        },
        baseline,
        health: Default::default(),
        preexisting: (1, 0),
        ifaces: HashMap::new(),
    }
}

fn cgroup(slot: u32, path: &str) -> Started {
    Started {
        slot: Slot(slot),
        subject: Subject::Cgroup {
            dir: PathBuf::from(path),
            info: CgroupInfo {
                path: path.into(),
                container: None,
                workload: path.into(),
            },
        },
        baseline: Traffic::default(),
        health: Default::default(),
        preexisting: (0, 0),
        ifaces: HashMap::new(),
    }
}

fn session(t0: Instant, targets: Vec<Started>, k: &FakeKernel) -> Session {
    Session::start(
        t0,
        targets,
        None,
        Vec::new(),
        false,
        Vec::new(),
        k.untracked().unwrap(),
    )
}

const SEC: Duration = Duration::from_secs(1);

#[test]
fn totals_rates_peaks_from_the_baseline() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    // Traffic before the run is not the run's.
    k.totals.insert(Slot(0), tcp(5_000, 7_000));
    let mut s = session(t0, vec![process(0, 10, tcp(5_000, 7_000))], &k);
    k.totals.insert(Slot(0), tcp(6_000, 7_500));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    k.totals.insert(Slot(0), tcp(6_250, 9_500));
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    let r = s
        .snapshot(ReportKind::Interval, true, (t0 + 2 * SEC, 0), &mut k, &h)
        .unwrap();
    let p = &r.processes[0];
    assert_eq!((p.pid, p.name.as_str()), (10, "p10"));
    assert_eq!(
        (p.row.counters.bytes_in, p.row.counters.bytes_out),
        (1_250, 2_500)
    );
    // Last interval: 250 B in, 2000 B out in 1 s.
    assert_eq!((p.row.rate_in, p.row.rate_out), (2_000.0, 16_000.0));
    assert_eq!(
        (p.row.peak_rate_in, p.row.peak_rate_out),
        (8_000.0, 16_000.0)
    );
    // The final report of a window has the window's averages.
    let f = s
        .snapshot(ReportKind::Final, false, (t0 + 2 * SEC, 0), &mut k, &h)
        .unwrap();
    assert_eq!(
        (f.processes[0].row.rate_in, f.processes[0].row.rate_out),
        (5_000.0, 10_000.0)
    );
    assert!(f.is_final && f.aggregated.is_none());
    assert_eq!(r.aggregated.unwrap().counters.bytes_in, 1_250);
}

#[test]
fn connections_count_preexisting_and_gauges() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = session(t0, vec![process(0, 10, Traffic::default())], &k);
    k.gauges.insert(Slot(0), (2, 3));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    assert_eq!(s.targets()[0].connections, (3, 3));
    // The pre-existing connection closed: the kernel's gauge goes below zero for it.
    k.gauges.insert(Slot(0), (-1, 0));
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(s.targets()[0].connections, (0, 0));
}

#[test]
fn exits_freeze_runtime_and_end_the_run() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = session(
        t0,
        vec![process(0, 10, Traffic::default()), cgroup(1, "/x")],
        &k,
    );
    k.gauges.insert(Slot(0), (1, 0));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    assert!(!s.all_gone());
    h.dead.insert(10);
    // Bytes that arrive in the exit's interval still count.
    k.totals.insert(Slot(0), tcp(300, 0));
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    let t = &s.targets()[0];
    assert_eq!(
        (t.exited, t.connections),
        (Some(Duration::from_secs(42)), (0, 0))
    );
    assert_eq!(t.series.since_start().total().bytes_in, 300);
    assert!(!s.all_gone(), "the cgroup target still runs");
    h.gone_dirs.insert(PathBuf::from("/x"));
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    assert!(s.all_gone());
    let r = s
        .snapshot(ReportKind::Interval, false, (t0, 0), &mut k, &h)
        .unwrap();
    assert!(r.processes[0].exited && r.workloads[0].exited);
    assert_eq!(r.workloads[0].name, "/x");
}

#[test]
fn no_targets_never_all_gone() {
    let k = FakeKernel::default();
    assert!(!session(Instant::now(), Vec::new(), &k).all_gone());
}

#[test]
fn untracked_counts_from_the_start() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let h = FakeHost::default();
    k.untracked = Untracked {
        traffic: Counters {
            bytes_in: 100,
            ..Counters::default()
        },
        sockets: 2,
        processes: 1,
    };
    let mut s = session(t0, Vec::new(), &k);
    k.untracked.traffic.bytes_in = 350;
    k.untracked.sockets = 5;
    let r = s
        .snapshot(ReportKind::Interval, false, (t0, 0), &mut k, &h)
        .unwrap();
    assert_eq!(
        (
            r.untracked.bytes_in,
            r.untracked_sockets,
            r.untracked_processes
        ),
        (250, 3, 0)
    );
}

#[test]
fn details_per_slot_closed_once_and_old_sockets_refreshed() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let conn = |slot: u32, close_ns: u64| Connection {
        bytes_in: 1_000,
        bytes_out: 10,
        open_ns: 1_000_000_000,
        close_ns,
        local: ([u32::from_ne_bytes([10, 0, 0, 1]), 0, 0, 0], 40_000),
        remote: ([u32::from_ne_bytes([10, 0, 0, 2]), 0, 0, 0], 443),
        slot: Slot(slot),
        tgid: 10,
        srtt_us: 0,
        retrans: 0,
        tcp: true,
        family: 2,
        state: 1,
        iface_ok: true,
    };
    k.put_connection(7, conn(0, 0)).unwrap();
    k.put_connection(8, conn(1, 5)).unwrap();
    let old = vec![OldSocket {
        pid: 10,
        fd: 3,
        cookie: 7,
    }];
    let mut s = Session::start(
        t0,
        vec![
            process(0, 10, Traffic::default()),
            process(1, 11, Traffic::default()),
        ],
        None,
        Vec::new(),
        true,
        old,
        Untracked::default(),
    );
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    let r = s
        .snapshot(
            ReportKind::Interval,
            false,
            (t0 + SEC, 3_000_000_000),
            &mut k,
            &h,
        )
        .unwrap();
    let c0 = r.processes[0].connections.as_ref().unwrap();
    assert_eq!(c0.len(), 1);
    assert_eq!(
        (
            c0[0].remote.as_str(),
            c0[0].state,
            c0[0].rtt_us,
            c0[0].retransmits
        ),
        ("10.0.0.2:443", "ESTABLISHED", Some(900), Some(3))
    );
    assert_eq!(c0[0].age, Duration::from_secs(2));
    let c1 = r.processes[1].connections.as_ref().unwrap();
    assert_eq!(c1[0].state, "CLOSED");
    // Shown closed once, then forgotten in the kernel too.
    assert!(!k.conns.contains_key(&8) && k.conns.contains_key(&7));
}

#[test]
fn interfaces_followed_across_removal_and_re_add() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let eth0 = IfaceKey {
        netns_cookie: 9,
        ifindex: 2,
    };
    let mut t = process(0, 10, Traffic::default());
    t.ifaces.insert("eth0".into(), eth0);
    k.allow_iface(eth0).unwrap();
    let mut s = Session::start(
        t0,
        vec![t],
        None,
        vec!["eth0".into()],
        false,
        Vec::new(),
        Untracked::default(),
    );
    let links = |idx: Option<u32>| NetnsLinks {
        cookie: 9,
        links: idx
            .map(|i| vec![("lo".into(), 1), ("eth0".into(), i)])
            .unwrap_or_else(|| vec![("lo".into(), 1)]),
    };
    h.links.insert(10, links(None));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    assert!(k.ifaces.is_empty(), "removed: no longer counted");
    h.links.insert(10, links(Some(5)));
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    let readded = IfaceKey {
        netns_cookie: 9,
        ifindex: 5,
    };
    assert_eq!(k.ifaces, HashSet::from([readded]));
    assert_eq!(s.targets()[0].ifaces["eth0"], readded);
}

#[test]
fn node_wide_groups_cgroups_by_workload() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let count = |id: u64, proto: Proto, bytes_in: u64| CgroupCount {
        cgroup_id: id,
        proto,
        class: None,
        counters: Counters {
            bytes_in,
            ..Counters::default()
        },
    };
    // Before the run: not the run's.
    k.cgroup_totals = vec![count(1, Proto::Tcp, 500)];
    let node = NodeWide::start(t0, &k, Duration::from_secs(300), None);
    let mut s = node_session_with(t0, node);
    let info = |w: &str| CgroupInfo {
        path: format!("/{w}"),
        container: None,
        workload: w.into(),
    };
    h.cgroups.insert(1, info("web"));
    h.cgroups.insert(2, info("web"));
    h.cgroups.insert(3, info("db"));
    k.cgroup_totals = vec![
        count(1, Proto::Tcp, 700),
        count(2, Proto::Udp, 50),
        count(3, Proto::Tcp, 10),
        count(4, Proto::Tcp, 1),
    ];
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    h.gone_ids.insert(3);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    let r = s
        .snapshot(ReportKind::Interval, false, (t0, 0), &mut k, &h)
        .unwrap();
    let by: HashMap<&str, (u64, bool)> = r
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), (w.row.counters.bytes_in, w.exited)))
        .collect();
    assert_eq!(by["web"], (250, false));
    assert_eq!((by["web"].0, r.workloads.len()), (250, 3));
    assert_eq!(by["db"], (10, true));
    // An id the host cannot name is still counted, as `unresolved`, and drained.
    assert_eq!(by["unresolved"], (1, false));
    // 3 was removed and 4 never named: both drained from the kernel's map.
    assert_eq!(s.node().unwrap().keys(), 2);
    assert_eq!(k.cgroup_totals.len(), 2);
}

/// `--all` with classes: each workload's per-class rows sum its kernel keys of that class
/// (across cgroups and protocols); its total stays the sum of all keys; a removed cgroup's
/// keys of every class are drained.
#[test]
fn node_wide_splits_workloads_by_class() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let classes =
        crate::classes::ClassSet::from_flags(&["lab=10.9.0.0/16".to_string()], None).unwrap();
    let lab = classes.names.iter().position(|n| n == "lab").unwrap() as u8;
    let internet = classes.names.iter().position(|n| n == "internet").unwrap() as u8;
    let count = |id: u64, proto: Proto, class: u8, bytes_out: u64| CgroupCount {
        class: Some(class),
        ..cg_count(id, proto, bytes_out)
    };
    let node = NodeWide::start(t0, &k, Duration::from_secs(300), Some(classes));
    let mut s = node_session_with(t0, node);
    for id in [1, 2] {
        h.cgroups.insert(
            id,
            CgroupInfo {
                path: format!("/web{id}"),
                container: None,
                workload: "web".into(),
            },
        );
    }
    k.cgroup_totals = vec![
        count(1, Proto::Tcp, lab, 1000),
        count(1, Proto::Udp, lab, 200),
        count(1, Proto::Tcp, internet, 300),
        count(2, Proto::Tcp, lab, 50),
    ];
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    let r = s
        .snapshot(ReportKind::Interval, false, (t0, 0), &mut k, &h)
        .unwrap();
    let w = &r.workloads[0];
    assert_eq!(w.row.counters.bytes_out, 1550);
    let by: Vec<(&str, u64)> = w
        .classes
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.class.as_str(), c.counters.bytes_out))
        .collect();
    let mut want = vec![("lab", 1250), ("internet", 300)];
    want.sort_by_key(|(n, _)| {
        s.node()
            .unwrap()
            .classes()
            .unwrap()
            .names
            .iter()
            .position(|x| x == n)
    });
    assert_eq!(by, want);
    let traffic = s.node().unwrap().workloads()["web"]
        .class_traffic(s.node().unwrap().classes())
        .unwrap();
    let lab_t = &traffic.iter().find(|(n, _)| n == "lab").unwrap().1;
    assert_eq!((lab_t.tcp.bytes_out, lab_t.udp.bytes_out), (1050, 200));
    // Cgroup 1 removed: all three of its (protocol, class) keys leave the kernel's map.
    h.gone_ids.insert(1);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(k.cgroup_totals, vec![count(2, Proto::Tcp, lab, 50)]);
    assert_eq!(s.node().unwrap().keys(), 1);
}

fn cg_count(id: u64, proto: Proto, bytes_out: u64) -> CgroupCount {
    CgroupCount {
        cgroup_id: id,
        proto,
        class: None,
        counters: Counters {
            bytes_out,
            packets_out: bytes_out / 100,
            ..Counters::default()
        },
    }
}

fn named(path: &str, workload: &str) -> CgroupInfo {
    CgroupInfo {
        path: path.into(),
        container: None,
        workload: workload.into(),
    }
}

fn node_session(t0: Instant, k: &FakeKernel, grace: Duration) -> Session {
    node_session_with(t0, NodeWide::start(t0, k, grace, None))
}

/// A node-wide session over an already configured `NodeWide` (classes, destinations).
fn node_session_with(t0: Instant, node: NodeWide) -> Session {
    Session::start(
        t0,
        Vec::new(),
        Some(node),
        Vec::new(),
        false,
        Vec::new(),
        Untracked::default(),
    )
}

fn bytes_out_of(s: &mut Session, k: &mut FakeKernel, h: &FakeHost) -> HashMap<String, (u64, bool)> {
    s.snapshot(ReportKind::Interval, false, (Instant::now(), 0), k, h)
        .unwrap()
        .workloads
        .iter()
        .map(|w| (w.name.clone(), (w.row.counters.bytes_out, w.exited)))
        .collect()
}

#[test]
fn node_wide_drains_removed_cgroups_into_their_workload() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = node_session(t0, &k, Duration::from_secs(300));
    h.cgroups.insert(10, named("/web-1", "web"));
    h.cgroups.insert(11, named("/web-2", "web"));
    k.cgroup_totals = vec![cg_count(10, Proto::Tcp, 100), cg_count(11, Proto::Udp, 7)];
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    // 10 sends more and is removed before the next tick: its last bytes are charged, its
    // keys deleted from the kernel's map.
    k.cgroup_totals = vec![cg_count(10, Proto::Tcp, 150), cg_count(11, Proto::Udp, 7)];
    h.gone_ids.insert(10);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(k.cgroup_totals, vec![cg_count(11, Proto::Udp, 7)]);
    assert_eq!(bytes_out_of(&mut s, &mut k, &h)["web"], (157, false));
    // A lingering socket of the removed cgroup re-creates its key: charged to the same
    // workload, drained again, and the id is never looked up again.
    k.cgroup_totals.push(cg_count(10, Proto::Tcp, 5));
    h.gone_ids.insert(11);
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    assert!(k.cgroup_totals.is_empty());
    assert_eq!(bytes_out_of(&mut s, &mut k, &h)["web"], (162, true));
    h.lookups.sort_unstable();
    assert_eq!(h.lookups, vec![10, 11]);
    assert_eq!(s.node().unwrap().keys(), 0);
    // Totals never go down once the keys are gone.
    s.tick(t0 + 4 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(bytes_out_of(&mut s, &mut k, &h)["web"], (162, true));
}

#[test]
fn node_wide_pending_ids_wait_to_be_named_and_gone_ones_are_unresolved() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = node_session(t0, &k, Duration::from_secs(300));
    h.cgroups.insert(20, named("/api", "api"));
    h.pending.extend([20, 21]);
    k.cgroup_totals = vec![cg_count(20, Proto::Tcp, 300), cg_count(21, Proto::Tcp, 40)];
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    // Not charged anywhere yet, and still in the kernel's map.
    assert!(bytes_out_of(&mut s, &mut k, &h).is_empty());
    assert_eq!(k.cgroup_totals.len(), 2);
    // The next walk names 20; 21 was created and removed before any walk saw it.
    h.pending.clear();
    k.cgroup_totals = vec![cg_count(20, Proto::Tcp, 310), cg_count(21, Proto::Tcp, 40)];
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    let by = bytes_out_of(&mut s, &mut k, &h);
    assert_eq!(by["api"], (310, false));
    assert_eq!(by["unresolved"], (40, false));
    assert_eq!(k.cgroup_totals, vec![cg_count(20, Proto::Tcp, 310)]);
}

#[test]
fn node_wide_churn_stays_bounded_and_loses_nothing() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let grace = Duration::from_secs(5);
    let mut s = node_session(t0, &k, grace);
    // Three times as many cgroups as removed ids are remembered, in ticks of 100.
    let n = (3 * super::node::RETIRED_IDS as u64).div_ceil(100) * 100;
    let mut seen: HashMap<String, u64> = HashMap::new();
    // Each tick: 100 new cgroups (one workload each) carry 1,000 bytes, and the previous
    // tick's 100 are removed.
    for tick in 1..=n / 100 {
        for id in (tick - 1) * 100..tick * 100 {
            let id = id + 1000;
            h.cgroups
                .insert(id, named(&format!("/pod-{id}"), &format!("pod-{id}")));
            k.cgroup_totals.push(cg_count(id, Proto::Udp, 1000));
        }
        if tick > 1 {
            h.gone_ids
                .extend((tick - 2) * 100 + 1000..(tick - 1) * 100 + 1000);
        }
        s.tick(t0 + tick as u32 * SEC, &mut k, &mut h).unwrap();
        let node = s.node().unwrap();
        assert!(k.cgroup_totals.len() <= 200 && node.keys() <= 200);
        assert!(node.retired() <= super::node::RETIRED_IDS);
        // Live workloads plus those within the grace period, no more.
        assert!(node.workloads().len() <= 100 * (grace.as_secs() as usize + 2));
        for (name, (bytes, _)) in bytes_out_of(&mut s, &mut k, &h) {
            seen.insert(name, bytes);
        }
    }
    // Every id was looked up exactly once, and every workload was reported with all of its
    // bytes before it was forgotten.
    assert_eq!(h.lookups.len() as u64, n);
    assert_eq!(seen.len() as u64, n);
    assert_eq!(seen.values().sum::<u64>(), n * 1000);
}

#[test]
fn node_wide_reports_drop_exited_workloads_after_the_grace_period() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = node_session(t0, &k, 2 * SEC);
    h.cgroups.insert(30, named("/job", "job"));
    h.cgroups.insert(31, named("/svc", "svc"));
    k.cgroup_totals = vec![cg_count(30, Proto::Tcp, 100), cg_count(31, Proto::Tcp, 1)];
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    h.gone_ids.insert(30);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(bytes_out_of(&mut s, &mut k, &h)["job"], (100, true));
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    assert!(bytes_out_of(&mut s, &mut k, &h).contains_key("job"));
    s.tick(t0 + 4 * SEC, &mut k, &mut h).unwrap();
    let by = bytes_out_of(&mut s, &mut k, &h);
    assert!(!by.contains_key("job"), "{by:?}");
    assert_eq!(by["svc"], (1, false));
}

#[test]
fn metrics_get_a_gone_workloads_final_interval() {
    use crate::{
        metrics::{Limits, MetricsRegistry, Protocol, WorkloadKey},
        session::feed::Feeder,
    };
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = node_session(t0, &k, Duration::from_secs(300));
    let reg = MetricsRegistry::new(Limits::default());
    let mut feeder = Feeder::default();
    h.cgroups.insert(40, named("/batch", "batch"));
    k.cgroup_totals = vec![cg_count(40, Proto::Udp, 1000)];
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[]);
    // The last interval's bytes and the removal are seen in the same tick.
    k.cgroup_totals = vec![cg_count(40, Proto::Udp, 6000)];
    h.gone_ids.insert(40);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[]);
    let key = WorkloadKey::cgroup("batch");
    assert_eq!(reg.counters(&key, Protocol::Udp).unwrap().bytes_out, 6000);
    // Marked gone (not revived by later feeds): it expires after the grace period.
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[]);
    assert_eq!(reg.expire(Instant::now() + Duration::from_secs(301)), 1);
    assert!(reg.counters(&key, Protocol::Udp).is_none());
}

/// The node's gauges reach /metrics: each workload's connections (from the socket lists) and
/// its remote hosts (`--destinations`); the text encodes them beside its traffic series.
#[test]
fn metrics_get_workload_connections_and_remote_hosts() {
    use crate::{
        host::sockdiag::SocketCounts,
        metrics::{Limits, MetricsRegistry},
        session::feed::Feeder,
    };
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let node = NodeWide::start(t0, &k, Duration::from_secs(300), None)
        .with_destinations(&k, 10)
        .with_socket_counts();
    let mut s = node_session_with(t0, node);
    let reg = MetricsRegistry::new(Limits::default());
    let mut feeder = Feeder::default();
    h.cgroups.insert(40, named("/batch", "batch"));
    k.cgroup_totals = vec![cg_count(40, Proto::Udp, 1000)];
    k.node_destinations = vec![nd(40, "10.0.1.2", 600), nd(40, "10.0.2.2", 400)];
    h.cgroup_sockets = HashMap::from([(40, SocketCounts { tcp: 2, udp: 1 })]);
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[]);
    let out = reg.encode().unwrap();
    for line in [
        "procnetmon_network_connections{cgroup=\"batch\",protocol=\"tcp\"} 2\n",
        "procnetmon_network_connections{cgroup=\"batch\",protocol=\"udp\"} 1\n",
        "procnetmon_remote_hosts{cgroup=\"batch\"} 2\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
}

#[test]
fn metrics_get_an_exited_targets_final_interval() {
    use crate::{
        metrics::{Limits, MetricsRegistry, Protocol},
        session::feed::{Feeder, metrics_key},
    };
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = session(t0, vec![process(0, 7, Traffic::default())], &k);
    let reg = MetricsRegistry::new(Limits::default());
    let mut feeder = Feeder::default();
    k.totals.insert(Slot(0), tcp(0, 1_028_000));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[7]);
    k.totals.insert(Slot(0), tcp(0, 6_168_000));
    h.dead.insert(7);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[7]);
    let key = metrics_key(None, "");
    assert_eq!(
        reg.counters(&key, Protocol::Tcp).unwrap().bytes_out,
        6_168_000
    );
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[7]);
    assert_eq!(reg.expire(Instant::now() + Duration::from_secs(301)), 1);
}

#[test]
fn a_cut_off_interval_sets_no_peak() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = session(t0, vec![process(0, 10, Traffic::default())], &k).with_interval(SEC);
    k.totals.insert(Slot(0), tcp(1_000, 0));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    // The window ends 10 ms later with a burst: counted, but 10 ms says nothing of a peak.
    k.totals.insert(Slot(0), tcp(2_000, 0));
    s.tick_partial(t0 + SEC + Duration::from_millis(10), &mut k, &mut h)
        .unwrap();
    let t = &s.targets()[0];
    assert_eq!(t.series.since_start().total().bytes_in, 2_000);
    assert_eq!(t.series.peak_in, 8_000.0);
    // A nearly whole interval cut off still counts for the peak.
    k.totals.insert(Slot(0), tcp(4_000, 0));
    s.tick_partial(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert!(s.targets()[0].series.peak_in > 16_000.0);
}

/// `--all -i eth0`: every interface of every namespace is in the filter (eth0 counted, the
/// rest skipped); a namespace that appears mid-run is resolved when the kernel reports its
/// traffic; an eth0 added later in a known namespace is counted; gone namespaces leave.
#[test]
fn node_interfaces_follow_new_namespaces() {
    use super::node_ifaces::{NodeIfaces, REFRESH_TICKS};
    use crate::host::netns::{Netns, check_node_names};
    let ns = |cookie: u64, names: &[&str]| NetnsLinks {
        cookie,
        links: names
            .iter()
            .zip(1..)
            .map(|(n, i)| ((*n).to_string(), i))
            .collect(),
    };
    let key = |netns_cookie, ifindex| IfaceKey {
        netns_cookie,
        ifindex,
    };
    let names = vec!["eth0".to_string()];
    // A misspelt name: in no namespace.
    let e = check_node_names(
        &["eht0".into()],
        &[Netns {
            inode: 1,
            pid: 1,
            links: ns(100, &["lo", "eth0"]),
        }],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("'eht0'") && e.contains("lo, eth0"), "{e}");

    let mut ni = NodeIfaces::new(
        &names,
        vec![
            Netns {
                inode: 1,
                pid: 1,
                links: ns(100, &["lo", "eth0"]),
            },
            Netns {
                inode: 2,
                pid: 20,
                links: ns(200, &["lo"]),
            },
        ],
    );
    let mut k = FakeKernel::default();
    ni.install(&mut k).unwrap();
    assert_eq!(k.ifaces, HashSet::from([key(100, 2)]));
    assert_eq!(k.skipped, HashSet::from([key(100, 1), key(200, 1)]));

    let mut h = FakeHost {
        namespaces: vec![(1, 1), (2, 20)],
        ..FakeHost::default()
    };
    h.links.insert(1, ns(100, &["lo", "eth0"]));
    h.links.insert(20, ns(200, &["lo"]));
    // Nothing reported: nothing read.
    ni.tick(&mut k, &h);
    assert_eq!(ni.namespaces(), 2);

    // A pod starts: its namespace (process 30) carries traffic before it is known.
    h.namespaces.push((3, 30));
    h.links.insert(30, ns(300, &["lo", "eth0"]));
    k.new_ifaces = vec![key(300, 2)];
    ni.tick(&mut k, &h);
    assert!(k.ifaces.contains(&key(300, 2)) && k.skipped.contains(&key(300, 1)));
    assert_eq!(ni.namespaces(), 3);

    // CNI adds eth0 to the namespace that had none: reported, re-read, counted.
    h.links.insert(20, ns(200, &["lo", "eth0"]));
    k.new_ifaces = vec![key(200, 2)];
    ni.tick(&mut k, &h);
    assert!(k.ifaces.contains(&key(200, 2)));

    // Traffic in a namespace no process lives in: looked for once, then not on every tick.
    k.new_ifaces = vec![key(999, 1)];
    ni.tick(&mut k, &h);
    assert_eq!(ni.namespaces(), 3);

    // The pod ends: its namespace leaves the filter at the next full re-read.
    h.namespaces.retain(|(i, _)| *i != 3);
    for _ in 0..REFRESH_TICKS {
        ni.tick(&mut k, &h);
    }
    assert_eq!(ni.namespaces(), 2);
    assert!(!k.ifaces.contains(&key(300, 2)) && !k.skipped.contains(&key(300, 1)));
    assert_eq!(k.ifaces, HashSet::from([key(100, 2), key(200, 2)]));
}

fn nd(id: u64, addr: &str, bytes_out: u64) -> crate::kernel::NodeDestCount {
    crate::kernel::NodeDestCount {
        cgroup_id: id,
        addr: addr.parse().unwrap(),
        class: None,
        counters: Counters {
            bytes_out,
            packets_out: 1,
            ..Counters::default()
        },
    }
}

/// `--all --destinations`: each workload's hosts are the growth of its cgroups' kernel keys;
/// the cap holds per workload (a host past it goes to `other`, the kernel's per-cgroup
/// `other` too), a busy workload takes nothing from another's; a removed cgroup's keys and
/// `other` are drained and its workload keeps what it was charged.
#[test]
fn node_wide_destinations_per_workload_cap_and_drain() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    // Before the run: not the run's.
    k.node_destinations = vec![nd(10, "10.0.1.2", 1000)];
    let node = NodeWide::start(t0, &k, Duration::from_secs(300), None).with_destinations(&k, 2);
    let mut s = node_session_with(t0, node);
    h.cgroups.insert(10, named("/web-1", "web"));
    h.cgroups.insert(11, named("/web-2", "web"));
    h.cgroups.insert(20, named("/db", "db"));
    k.cgroup_totals = vec![
        cg_count(10, Proto::Udp, 1700),
        cg_count(11, Proto::Udp, 50),
        cg_count(20, Proto::Udp, 7),
    ];
    k.node_destinations = vec![
        nd(10, "10.0.1.2", 1300),
        nd(10, "10.0.2.2", 200),
        // Cgroup 11's own cap is not reached, but its workload already has two hosts.
        nd(11, "10.0.3.2", 30),
        nd(20, "10.0.1.2", 7),
    ];
    k.node_dest_other.insert(
        10,
        crate::kernel::DestOther {
            counters: Counters {
                bytes_out: 200,
                packets_out: 2,
                ..Counters::default()
            },
            hosts: 2,
        },
    );
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    let dests = |s: &mut Session, k: &mut FakeKernel, h: &FakeHost| {
        s.snapshot(ReportKind::Interval, false, (t0, 0), k, h)
            .unwrap()
            .workloads
            .iter()
            .map(|w| {
                let d = w.destinations.as_ref().expect("destinations");
                let rows = d
                    .iter()
                    .map(|d| (d.remote.clone(), d.counters.bytes_out))
                    .collect();
                (w.name.clone(), rows)
            })
            .collect::<HashMap<String, Vec<(String, u64)>>>()
    };
    let d = dests(&mut s, &mut k, &h);
    let row = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
        v.iter().map(|(a, b)| ((*a).to_string(), *b)).collect()
    };
    assert_eq!(
        d["web"],
        row(&[("10.0.1.2", 300), ("10.0.2.2", 200), ("other", 230)])
    );
    assert_eq!(d["db"], row(&[("10.0.1.2", 7)]));
    // 10 sends more and goes: charged, then drained from the kernel.
    k.node_destinations[0] = nd(10, "10.0.1.2", 1400);
    h.gone_ids.insert(10);
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(
        k.node_destinations,
        vec![nd(11, "10.0.3.2", 30), nd(20, "10.0.1.2", 7)]
    );
    assert!(k.node_dest_other.is_empty());
    assert_eq!(s.node().unwrap().dest_keys(), Some(2));
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    let d = dests(&mut s, &mut k, &h);
    assert_eq!(
        d["web"],
        row(&[("10.0.1.2", 400), ("10.0.2.2", 200), ("other", 230)])
    );
    // The gauge procnetmon_remote_hosts: hosts kept apart (classes off: one unclassed count).
    let node = s.node().unwrap();
    assert_eq!(node.workloads()["web"].remote_hosts(None), vec![(None, 2)]);
    assert_eq!(node.workloads()["db"].remote_hosts(None), vec![(None, 1)]);
}

/// `--all`: each workload's connection counts are the host's socket lists summed over its
/// cgroups; sockets of a cgroup that is no workload's are not counted; lists are read at most
/// once a second, and a workload whose sockets closed reads zero at the next list.
#[test]
fn node_wide_connections_from_socket_lists() {
    use crate::host::sockdiag::SocketCounts as C;
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let node = NodeWide::start(t0, &k, Duration::from_secs(300), None).with_socket_counts();
    let mut s = node_session_with(t0, node);
    h.cgroups.insert(10, named("/web-1", "web"));
    h.cgroups.insert(11, named("/web-2", "web"));
    h.cgroups.insert(20, named("/db", "db"));
    k.cgroup_totals = vec![
        cg_count(10, Proto::Tcp, 100),
        cg_count(11, Proto::Udp, 50),
        cg_count(20, Proto::Tcp, 7),
    ];
    h.cgroup_sockets = HashMap::from([
        (10, C { tcp: 2, udp: 1 }),
        (11, C { tcp: 1, udp: 3 }),
        (20, C { tcp: 5, udp: 0 }),
        // A cgroup that never carried traffic: no workload to charge.
        (99, C { tcp: 9, udp: 9 }),
    ]);
    let conns = |s: &mut Session, k: &mut FakeKernel, h: &FakeHost| {
        s.snapshot(ReportKind::Interval, false, (t0, 0), k, h)
            .unwrap()
            .workloads
            .iter()
            .map(|w| {
                (
                    w.name.clone(),
                    (w.row.tcp_connections, w.row.udp_connections),
                )
            })
            .collect::<HashMap<String, (u32, u32)>>()
    };
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    let c = conns(&mut s, &mut k, &h);
    assert_eq!((c["web"], c["db"], c.len()), ((3, 4), (5, 0), 2));
    // Half a second later: not listed again.
    h.cgroup_sockets.clear();
    s.tick(t0 + SEC + SEC / 2, &mut k, &mut h).unwrap();
    assert_eq!(conns(&mut s, &mut k, &h)["web"], (3, 4));
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(conns(&mut s, &mut k, &h)["web"], (0, 0));
    assert_eq!(h.listings, 2);
}

/// A listing that took 30 ms or more waits at least 100 times as long (3 s) before the next,
/// where once a second would list again: the socket lists take at most 1% of the agent's time,
/// whatever the node's namespaces cost; and never more than a minute.
#[test]
fn node_wide_socket_listing_keeps_to_its_share() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost {
        list_takes: Duration::from_millis(30),
        ..FakeHost::default()
    };
    let node = NodeWide::start(t0, &k, Duration::from_secs(300), None).with_socket_counts();
    let mut s = node_session_with(t0, node);
    for (at_ms, listings) in [(1_000, 1), (2_000, 1), (3_900, 1), (62_000, 2)] {
        s.tick(t0 + Duration::from_millis(at_ms), &mut k, &mut h)
            .unwrap();
        assert_eq!(h.listings, listings, "at {at_ms} ms");
    }
}

/// Health with `failures` outgoing failures, `retrans` retransmissions and `samples` RTT
/// samples of 100 µs (bucket 7).
fn health(failures: u64, retrans: u64, samples: u64) -> crate::kernel::Health {
    let mut h = crate::kernel::Health {
        connect_failures: failures,
        retransmits: retrans,
        ..Default::default()
    };
    h.rtt.buckets[7] = samples;
    h.rtt.sum_us = samples * 100;
    h
}

#[test]
fn tcp_health_from_the_baseline_per_target_and_aggregate() {
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    // Counted before the run (between attach and start): not the run's.
    k.health.insert(Slot(0), health(2, 5, 1));
    let mut a = process(0, 10, Traffic::default());
    a.health = health(2, 5, 1);
    let mut s = session(t0, vec![a, process(1, 11, Traffic::default())], &k);
    k.health.insert(Slot(0), health(3, 9, 4));
    k.health.get_mut(&Slot(0)).unwrap().handshake_failures = 1;
    k.health.insert(Slot(1), health(0, 1, 0));
    k.rtt_sample(Slot(1), 3_000); // bucket 12 (4,096 µs)
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    // Each tick opens the next RTT epoch.
    assert_eq!(k.rtt_epoch, 2);
    let r = s
        .snapshot(ReportKind::Interval, true, (t0 + SEC, 0), &mut k, &h)
        .unwrap();
    let p0 = r.processes[0].row.health;
    // Both kinds of failure; RTT samples since the start only.
    assert_eq!((p0.connect_failures, p0.retransmitted_segments), (2, 4));
    assert_eq!((p0.rtt.count(), p0.rtt.quantile_us(0.5)), (3, Some(128)));
    let agg = r.aggregated.unwrap().health;
    assert_eq!((agg.connect_failures, agg.retransmitted_segments), (2, 5));
    assert_eq!(agg.rtt.count(), 4);
    assert_eq!(agg.rtt.max_us(), Some(4_096));
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(k.rtt_epoch, 3);
    // Events the kernel could not charge are warned about once (the log is not checked here;
    // the session keeps the count it warned about).
    k.health_lost = 2;
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(s.health_lost, 2);
}

#[test]
fn incoming_handshakes_found_failed_count_for_their_target() {
    use crate::kernel::{HandshakeOwner, PendingHandshake};
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = session(t0, vec![process(0, 10, Traffic::default())], &k);
    let pending = |port: u16| PendingHandshake {
        local: "10.0.0.1:80".parse().unwrap(),
        remote: format!("10.0.0.2:{port}").parse().unwrap(),
        owner: HandshakeOwner {
            slot: Some(Slot(0)),
            cgroup_id: None,
        },
        started_ns: 0, // long ago
    };
    // One request is still in the listener's namespace (a SYN-ACK being retried), one is gone.
    k.handshakes = vec![pending(1000), pending(1001)];
    let live = pending(1001);
    h.tcp_pairs
        .insert(10, [(live.local, live.remote)].into_iter().collect());
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    assert_eq!(s.targets()[0].tcp_health().connect_failures, 1);
    assert_eq!(k.handshakes.len(), 1);
    // It dies too: counted once more, and never again.
    h.tcp_pairs.clear();
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    s.tick(t0 + 3 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(s.targets()[0].tcp_health().connect_failures, 2);
    assert!(k.handshakes.is_empty());
}

#[test]
fn node_wide_health_is_charged_to_workloads_and_drained() {
    use crate::kernel::{HandshakeOwner, PendingHandshake};
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    // Before the run: not the run's.
    k.node_health.insert(10, health(4, 4, 4));
    let mut s = node_session(t0, &k, Duration::from_secs(300));
    h.cgroups.insert(10, named("/web-1", "web"));
    h.cgroups.insert(11, named("/web-2", "web"));
    k.cgroup_totals = vec![cg_count(10, Proto::Tcp, 100), cg_count(11, Proto::Tcp, 100)];
    k.node_health.insert(10, health(5, 6, 5));
    k.node_health.insert(11, health(0, 1, 1));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    // 10 fails once more and is removed; a handshake of 11's listener is found failed.
    k.node_health.insert(10, health(6, 6, 5));
    h.gone_ids.insert(10);
    h.cgroup_pids.insert(11, 99);
    k.handshakes = vec![PendingHandshake {
        local: "10.0.0.1:80".parse().unwrap(),
        remote: "10.0.0.2:5000".parse().unwrap(),
        owner: HandshakeOwner {
            slot: None,
            cgroup_id: Some(11),
        },
        started_ns: 0,
    }];
    s.tick(t0 + 2 * SEC, &mut k, &mut h).unwrap();
    assert_eq!(k.node_health.keys().copied().collect::<Vec<_>>(), vec![11]);
    let r = s
        .snapshot(ReportKind::Interval, false, (t0 + 2 * SEC, 0), &mut k, &h)
        .unwrap();
    let web = r.workloads.iter().find(|w| w.name == "web").unwrap();
    let hl = web.row.health;
    assert_eq!((hl.connect_failures, hl.retransmitted_segments), (3, 3));
    assert_eq!(hl.rtt.count(), 2);
}

#[test]
fn metrics_get_tcp_health_per_workload() {
    use crate::{
        metrics::{Limits, MetricsRegistry},
        session::feed::{Feeder, metrics_key},
    };
    let t0 = Instant::now();
    let mut k = FakeKernel::default();
    let mut h = FakeHost::default();
    let mut s = session(
        t0,
        vec![
            process(0, 7, Traffic::default()),
            process(1, 8, Traffic::default()),
        ],
        &k,
    );
    let reg = MetricsRegistry::new(Limits::default());
    let mut feeder = Feeder::default();
    k.totals.insert(Slot(0), tcp(100, 100));
    k.health.insert(Slot(0), health(1, 2, 3));
    k.health.insert(Slot(1), health(1, 0, 1));
    s.tick(t0 + SEC, &mut k, &mut h).unwrap();
    feeder.feed(&reg, &s, &k, &[7, 8]);
    // Both targets share the same labels (no cgroup name): one summed label set.
    let got = reg.health(&metrics_key(None, "")).expect("health");
    assert_eq!((got.connect_failures, got.retransmitted_segments), (2, 2));
    assert_eq!(got.rtt.count(), 4);
}
