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
