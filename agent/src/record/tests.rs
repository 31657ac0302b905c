//! Round trips through the encoder and decoder.

use std::collections::HashMap;

use super::{
    codec::{Decoder, Encoder},
    convert::{frame_of, report_of, timestamp},
    synth::{Scenario, Synth},
};
use crate::model::Report;

fn start() -> chrono::DateTime<chrono::FixedOffset> {
    timestamp(1_767_225_600_000_000_000, 3600)
}

/// Encodes `reports` (a key frame every `key_every`), decodes them, and returns the decoded
/// reports and the encoded sizes.
fn round_trip(reports: &[Report], key_every: usize) -> (Vec<Report>, Vec<usize>) {
    let mut enc = Encoder::default();
    let mut dec = Decoder::default();
    let units = HashMap::new();
    let mut out = Vec::new();
    let mut sizes = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let f = frame_of(r, i as u64 + 1, &units);
        let (bytes, _, _) = enc.encode(&f, i % key_every == 0);
        sizes.push(bytes.len());
        let back = dec.decode(&bytes).expect("decodes");
        out.push(report_of(&back));
    }
    (out, sizes)
}

#[test]
fn node_reports_round_trip_exactly() {
    let mut s = Synth::new(Scenario::bench(10), start());
    let reports: Vec<Report> = (0..40).map(|_| s.next_report()).collect();
    let (back, sizes) = round_trip(&reports, 15);
    for (a, b) in reports.iter().zip(&back) {
        assert_eq!(a, b);
    }
    // Deltas are far smaller than key frames.
    assert!(sizes[1] * 4 < sizes[0], "{sizes:?}");
}

#[test]
fn process_reports_round_trip_exactly() {
    let mut r = crate::render::table::tests::sample_report();
    r.processes[0].container = Some(crate::host::identity::ContainerIdentity {
        runtime: Some("containerd".into()),
        id: "ab".repeat(32),
        pod_uid: None,
        qos: Some("burstable".into()),
        pod: Some("web-0".into()),
        namespace: Some("shop".into()),
        name: Some("nginx".into()),
    });
    r.processes[0].nspid = Some(1);
    r.processes[0].connections = Some(vec![crate::model::ConnDetail {
        protocol: "tcp",
        local: "10.0.0.1:443".into(),
        remote: "10.0.0.2:51000".into(),
        state: "ESTABLISHED",
        bytes_in: 10,
        bytes_out: 20,
        rate_in: 0.0,
        rate_out: 160.0,
        age: std::time::Duration::from_millis(1500),
        rtt_us: Some(40),
        retransmits: Some(0),
    }]);
    r.processes[1].destinations = Some(vec![crate::model::Destination {
        remote: "10.0.0.9".into(),
        name: Some("db.test".into()),
        class: Some("private".into()),
        counters: crate::model::Counters {
            bytes_in: 5,
            ..Default::default()
        },
        rate_in: 40.0,
        rate_out: 0.0,
        hosts: None,
        connections: Some(1),
    }]);
    r.processes[1].classes = Some(Vec::new());
    let mut reports = Vec::new();
    for i in 0..6_u64 {
        r.timestamp = timestamp(1_767_225_600_000_000_000 + i as i64 * 1_000_000_000, -7200);
        for p in &mut r.processes {
            p.traffic.tcp.bytes_out += 1000 * i;
            p.row.counters = p.traffic.total();
            p.row.rate_out = 8000.0 * i as f64;
            p.runtime += std::time::Duration::from_secs(1);
        }
        if i == 3 {
            r.processes.pop();
        }
        reports.push(r.clone());
    }
    let (back, _) = round_trip(&reports, 4);
    for (a, b) in reports.iter().zip(&back) {
        assert_eq!(a, b);
    }
}

/// TCP health on processes, the aggregate and a workload goes through the recorder exactly:
/// failures, retransmissions, the RTT sum and every bucket, as they grow frame by frame
/// (steadily, in a burst, and in the histogram's last bucket). An update that changes a
/// container's name as well sets a field mask past 64 bits.
#[test]
fn tcp_health_round_trips_exactly() {
    use crate::model::{RTT_BUCKETS, TcpHealth, WorkloadReport};
    let mut r = crate::render::table::tests::sample_report();
    r.processes[0].container = Some(crate::host::identity::ContainerIdentity {
        runtime: Some("containerd".into()),
        id: "cd".repeat(32),
        pod_uid: None,
        qos: None,
        pod: Some("web-0".into()),
        namespace: Some("shop".into()),
        name: Some("nginx".into()),
    });
    r.workloads.push(WorkloadReport {
        name: "shop/web-0/nginx".into(),
        cgroup: "/kubepods/pod1/cri-containerd-cd".into(),
        container: None,
        exited: false,
        row: r.processes[0].row,
        traffic: r.processes[0].traffic,
        connections: None,
        destinations: None,
        classes: None,
        dns: None,
    });
    let mut reports = Vec::new();
    for i in 0..9_u64 {
        r.timestamp = timestamp(1_767_225_600_000_000_000 + i as i64 * 1_000_000_000, 0);
        let grow = |h: &mut TcpHealth, k: u64| {
            h.connect_failures += u64::from(i == 5) * 3 * k;
            h.retransmitted_segments += i * k;
            h.rtt.buckets[9] += 2 * k;
            h.rtt.buckets[(i as usize * 3) % RTT_BUCKETS] += k;
            h.rtt.buckets[RTT_BUCKETS - 1] += u64::from(i == 7);
            h.rtt.sum_us += 1100 * k + i;
        };
        grow(&mut r.processes[0].row.health, 1);
        grow(&mut r.processes[1].row.health, 2);
        grow(&mut r.workloads[0].row.health, 3);
        if let Some(a) = &mut r.aggregated {
            a.health = r.processes[0].row.health.plus(&r.processes[1].row.health);
        }
        if i == 6
            && let Some(c) = &mut r.processes[0].container
        {
            c.name = Some("nginx-2".into());
        }
        reports.push(r.clone());
    }
    assert!(reports[8].processes[1].row.health.rtt.count() > 20);
    let (back, _) = round_trip(&reports, 5);
    for (a, b) in reports.iter().zip(&back) {
        assert_eq!(a, b);
    }
}
