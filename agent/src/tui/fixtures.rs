//! Fake reports for the view's tests: two processes (one with a pod identity), a
//! workload, and connections, with round figures so rendered text is easy to check.

use std::time::Duration;

use crate::{
    host::identity::ContainerIdentity,
    model::{ConnDetail, Counters, ProcessReport, Report, Row, Traffic, WorkloadReport},
};

/// A row with `bytes` in and out and rates in and out of `rate` bits/s.
pub fn row(bytes: (u64, u64), rate: (f64, f64), conns: (u32, u32)) -> Row {
    Row {
        counters: Counters {
            bytes_in: bytes.0,
            bytes_out: bytes.1,
            packets_in: 1,
            packets_out: 1,
        },
        rate_in: rate.0,
        rate_out: rate.1,
        peak_rate_in: rate.0 * 2.0,
        peak_rate_out: rate.1 * 2.0,
        tcp_connections: conns.0,
        udp_connections: conns.1,
        health: Default::default(),
    }
}

/// A TCP connection from 10.0.0.1 to `remote`.
pub fn conn(local_port: u16, remote: &str, bytes: (u64, u64), rate: (f64, f64)) -> ConnDetail {
    ConnDetail {
        protocol: "tcp",
        local: format!("10.0.0.1:{local_port}"),
        remote: remote.into(),
        state: "ESTABLISHED",
        bytes_in: bytes.0,
        bytes_out: bytes.1,
        rate_in: rate.0,
        rate_out: rate.1,
        age: Duration::from_secs(42),
        rtt_us: Some(1500),
        retransmits: Some(0),
    }
}

/// A process row.
pub fn process(pid: u32, name: &str, row: Row, conns: Vec<ConnDetail>) -> ProcessReport {
    ProcessReport {
        pid,
        name: name.into(),
        runtime: Duration::from_secs(60),
        exited: false,
        row,
        traffic: Traffic::default(),
        connections: Some(conns),
        destinations: None,
        classes: None,
        dns: None,
        gaps: Vec::new(),
        container: None,
        nspid: None,
    }
}

/// A pod's container identity.
pub fn pod(ns: &str, pod: &str, name: &str) -> ContainerIdentity {
    ContainerIdentity {
        runtime: Some("containerd".into()),
        id: "0123456789abcdef".repeat(4),
        pod_uid: None,
        qos: None,
        pod: Some(pod.into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
    }
}

/// A report of `processes` and `workloads`.
pub fn report(processes: Vec<ProcessReport>, workloads: Vec<WorkloadReport>) -> Report {
    Report {
        timestamp: chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05+00:00")
            .expect("fixed time"),
        processes,
        aggregated: None,
        workloads,
        untracked: Counters::default(),
        untracked_sockets: 0,
        untracked_processes: 0,
        is_final: false,
    }
}

/// The standard scene: curl (pid 100, busy, two connections), nginx (pid 200, in a pod,
/// quiet, one connection), and a cgroup workload.
pub fn scene() -> Report {
    let mut nginx = process(
        200,
        "nginx",
        row((4096, 2048), (0.0, 0.0), (1, 0)),
        vec![conn(80, "10.0.0.9:51000", (4096, 2048), (0.0, 0.0))],
    );
    nginx.container = Some(pod("web", "nginx-7d9", "nginx"));
    report(
        vec![
            process(
                100,
                "curl",
                row((1_048_576, 10_240), (800_000.0, 16_000.0), (2, 0)),
                vec![
                    conn(
                        40000,
                        "10.0.0.2:443",
                        (1_000_000, 8_192),
                        (800_000.0, 16_000.0),
                    ),
                    conn(40001, "10.0.0.3:80", (48_576, 2_048), (0.0, 0.0)),
                ],
            ),
            nginx,
        ],
        vec![WorkloadReport {
            name: "/system.slice/backup.service".into(),
            cgroup: "/system.slice/backup.service".into(),
            container: None,
            exited: false,
            row: row((0, 512_000), (0.0, 409_600.0), (1, 0)),
            traffic: Traffic::default(),
            connections: Some(Vec::new()),
            destinations: None,
            classes: None,
            dns: None,
        }],
    )
}
