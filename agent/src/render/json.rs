//! JSON reports: one object per report on one line (JSON Lines when continuous), in the
//! seed's schema (`timestamp`, `processes` keyed by PID string, `aggregated`) plus our
//! additions. Rates are bits per second, byte counts bytes; numbers are never pre-formatted.

use std::io::{self, Write};

use serde::{Serialize, Serializer, ser::SerializeMap as _};

use super::compact_duration;
use crate::{
    host::identity::ContainerIdentity,
    model::{
        ClassTraffic, ConnDetail, Counters, Destination, ProcessReport, Report, Row, TcpHealth,
        WorkloadReport,
    },
};

#[derive(Serialize)]
struct Current {
    bytes_in: u64,
    bytes_out: u64,
    rate_in: u64,
    rate_out: u64,
    tcp_connections: u32,
    udp_connections: u32,
    peak_rate_in: u64,
    peak_rate_out: u64,
    packets_in: u64,
    packets_out: u64,
}

impl From<&Row> for Current {
    fn from(r: &Row) -> Self {
        Self {
            bytes_in: r.counters.bytes_in,
            bytes_out: r.counters.bytes_out,
            rate_in: r.rate_in.round() as u64,
            rate_out: r.rate_out.round() as u64,
            tcp_connections: r.tcp_connections,
            udp_connections: r.udp_connections,
            peak_rate_in: r.peak_rate_in.round() as u64,
            peak_rate_out: r.peak_rate_out.round() as u64,
            packets_in: r.counters.packets_in,
            packets_out: r.counters.packets_out,
        }
    }
}

/// `tcp_health`: over the same period as the byte counters (the run so far, or the window).
#[derive(Serialize)]
struct Health {
    connect_failures: u64,
    retransmitted_segments: u64,
    rtt_us: Rtt,
}

/// RTT percentiles, µs: upper bounds of the log2 buckets the samples fall in (null without
/// samples; see `model::RttHistogram::quantile_us`).
#[derive(Serialize)]
struct Rtt {
    p50: Option<u64>,
    p90: Option<u64>,
    p99: Option<u64>,
    max: Option<u64>,
}

impl From<&TcpHealth> for Health {
    fn from(h: &TcpHealth) -> Self {
        Self {
            connect_failures: h.connect_failures,
            retransmitted_segments: h.retransmitted_segments,
            rtt_us: Rtt {
                p50: h.rtt.quantile_us(0.5),
                p90: h.rtt.quantile_us(0.9),
                p99: h.rtt.quantile_us(0.99),
                max: h.rtt.max_us(),
            },
        }
    }
}

/// The `aggregated` row: the seed's fields, then `tcp_health`.
#[derive(Serialize)]
struct Aggregated {
    #[serde(flatten)]
    current: Current,
    tcp_health: Health,
}

#[derive(Serialize)]
struct InOut {
    bytes_in: u64,
    bytes_out: u64,
}

impl From<Counters> for InOut {
    fn from(c: Counters) -> Self {
        Self {
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
        }
    }
}

#[derive(Serialize)]
struct Protocols {
    tcp: InOut,
    udp: InOut,
}

#[derive(Serialize)]
struct Conn<'a> {
    protocol: &'a str,
    local: &'a str,
    remote: &'a str,
    state: &'a str,
    bytes_in: u64,
    bytes_out: u64,
    rate_in: u64,
    rate_out: u64,
    age: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_us: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retransmits: Option<u32>,
}

impl<'a> From<&'a ConnDetail> for Conn<'a> {
    fn from(c: &'a ConnDetail) -> Self {
        Self {
            protocol: c.protocol,
            local: &c.local,
            remote: &c.remote,
            state: c.state,
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            rate_in: c.rate_in.round() as u64,
            rate_out: c.rate_out.round() as u64,
            age: compact_duration(c.age),
            rtt_us: c.rtt_us,
            retransmits: c.retransmits,
        }
    }
}

/// One remote host (or `other`) in `destinations`.
#[derive(Serialize)]
struct Dest<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    class: Option<&'a str>,
    #[serde(flatten)]
    traffic: Traffic,
    /// `other` only: how many remote hosts are kept apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    hosts: Option<u64>,
    /// Open connections to it (`--details` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<u32>,
}

/// `destinations`: an object keyed by remote address (and `other`), busiest first.
struct Dests<'a>(&'a [Destination]);

impl Serialize for Dests<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for d in self.0 {
            m.serialize_entry(
                &d.remote,
                &Dest {
                    name: d.name.as_deref(),
                    class: d.class.as_deref(),
                    traffic: Traffic::new(&d.counters, d.rate_in, d.rate_out),
                    hosts: d.hosts,
                    connections: d.connections,
                },
            )?;
        }
        m.end()
    }
}

/// Bytes, packets and rates of one remote host or class (`destinations`, `classes`).
#[derive(Serialize)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
    packets_in: u64,
    packets_out: u64,
    rate_in: u64,
    rate_out: u64,
}

impl Traffic {
    fn new(c: &Counters, rate_in: f64, rate_out: f64) -> Self {
        Self {
            bytes_in: c.bytes_in,
            bytes_out: c.bytes_out,
            packets_in: c.packets_in,
            packets_out: c.packets_out,
            rate_in: rate_in.round() as u64,
            rate_out: rate_out.round() as u64,
        }
    }
}

/// `classes`: an object keyed by class name, in class order.
struct Classes<'a>(&'a [ClassTraffic]);

impl Serialize for Classes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for c in self.0 {
            m.serialize_entry(&c.class, &Traffic::new(&c.counters, c.rate_in, c.rate_out))?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Process<'a> {
    pid: u32,
    name: &'a str,
    runtime: String,
    exited: bool,
    current: Current,
    protocols: Protocols,
    tcp_health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    connections: Option<Vec<Conn<'a>>>,
    container: Option<&'a ContainerIdentity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nspid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destinations: Option<Dests<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<Classes<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_unmatched: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_dropped: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    gaps: Vec<GapJson<'a>>,
}

/// One of `gaps`: a time the process's traffic could not be seen (it moved to a cgroup not
/// covered yet, or one that cannot be covered: `ongoing`).
#[derive(Serialize)]
struct GapJson<'a> {
    cgroup: &'a str,
    duration_us: u64,
    from_ns: u64,
    to_ns: u64,
    ongoing: bool,
}

impl<'a> From<&'a crate::model::Gap> for GapJson<'a> {
    fn from(g: &'a crate::model::Gap) -> Self {
        Self {
            cgroup: &g.cgroup,
            duration_us: u64::try_from(g.duration().as_micros()).unwrap_or(u64::MAX),
            from_ns: g.from_ns,
            to_ns: g.to_ns,
            ongoing: g.ongoing,
        }
    }
}

#[derive(Serialize)]
struct Workload<'a> {
    name: &'a str,
    cgroup: &'a str,
    container: Option<&'a ContainerIdentity>,
    exited: bool,
    current: Current,
    protocols: Protocols,
    tcp_health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    destinations: Option<Dests<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    classes: Option<Classes<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_unmatched: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns_dropped: Option<u64>,
}

impl<'a> From<&'a WorkloadReport> for Workload<'a> {
    fn from(w: &'a WorkloadReport) -> Self {
        Self {
            name: &w.name,
            cgroup: &w.cgroup,
            container: w.container.as_ref(),
            exited: w.exited,
            current: (&w.row).into(),
            protocols: Protocols {
                tcp: w.traffic.tcp.into(),
                udp: w.traffic.udp.into(),
            },
            tcp_health: (&w.row.health).into(),
            destinations: w.destinations.as_deref().map(Dests),
            classes: w.classes.as_deref().map(Classes),
            dns_unmatched: w.dns.map(|d| d.unmatched),
            dns_dropped: w.dns.map(|d| d.dropped),
        }
    }
}

/// `workloads`: an object keyed by workload name.
struct Workloads<'a>(&'a [WorkloadReport]);

impl Serialize for Workloads<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for w in self.0 {
            m.serialize_entry(&w.name, &Workload::from(w))?;
        }
        m.end()
    }
}

impl<'a> From<&'a ProcessReport> for Process<'a> {
    fn from(p: &'a ProcessReport) -> Self {
        Self {
            pid: p.pid,
            name: &p.name,
            runtime: compact_duration(p.runtime),
            exited: p.exited,
            current: (&p.row).into(),
            protocols: Protocols {
                tcp: p.traffic.tcp.into(),
                udp: p.traffic.udp.into(),
            },
            tcp_health: (&p.row.health).into(),
            container: p.container.as_ref(),
            nspid: p.nspid,
            destinations: p.destinations.as_deref().map(Dests),
            classes: p.classes.as_deref().map(Classes),
            dns_unmatched: p.dns.map(|d| d.unmatched),
            dns_dropped: p.dns.map(|d| d.dropped),
            gaps: p.gaps.iter().map(GapJson::from).collect(),
            connections: p
                .connections
                .as_ref()
                .map(|v| v.iter().map(Conn::from).collect()),
        }
    }
}

/// `processes`: an object keyed by PID string, in the order the PIDs were named.
struct Processes<'a>(&'a [ProcessReport]);

impl Serialize for Processes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            m.serialize_entry(&p.pid.to_string(), &Process::from(p))?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct Json<'a> {
    timestamp: String,
    processes: Processes<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregated: Option<Aggregated>,
    #[serde(skip_serializing_if = "Workloads::is_empty")]
    workloads: Workloads<'a>,
    untracked: Untracked,
}

#[derive(Serialize)]
struct Untracked {
    bytes_in: u64,
    bytes_out: u64,
    sockets: u64,
    processes: u64,
}

impl Workloads<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes `report` as one JSON line.
pub fn write(out: &mut dyn Write, report: &Report) -> io::Result<()> {
    let j = Json {
        timestamp: report
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
        processes: Processes(&report.processes),
        aggregated: report.aggregated.as_ref().map(|r| Aggregated {
            current: r.into(),
            tcp_health: (&r.health).into(),
        }),
        workloads: Workloads(&report.workloads),
        untracked: Untracked {
            bytes_in: report.untracked.bytes_in,
            bytes_out: report.untracked.bytes_out,
            sockets: report.untracked_sockets,
            processes: report.untracked_processes,
        },
    };
    serde_json::to_writer(&mut *out, &j).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::table::tests::sample_report;

    #[test]
    fn schema_matches_the_seed() {
        let mut buf = Vec::new();
        write(&mut buf, &sample_report()).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["timestamp"], "2025-02-18T17:48:42+01:00");
        let p = &v["processes"]["1234"];
        assert_eq!(p["pid"], 1234);
        assert_eq!(p["name"], "nginx");
        assert_eq!(p["runtime"], "1h2m3s");
        assert_eq!(p["exited"], false);
        let c = &p["current"];
        for (k, want) in [
            ("bytes_in", 1_288_490_188_u64),
            ("bytes_out", 2_254_857_429),
            ("rate_in", 1_572_864),
            ("rate_out", 2_411_724),
            ("tcp_connections", 12),
            ("udp_connections", 0),
            ("peak_rate_in", 3_000_000),
            ("peak_rate_out", 2_411_724),
            ("packets_in", 900_000),
            ("packets_out", 1_600_000),
        ] {
            assert_eq!(c[k], want, "{k}");
        }
        assert_eq!(p["protocols"]["tcp"]["bytes_in"], 1_288_490_188_u64);
        assert_eq!(p["protocols"]["udp"]["bytes_out"], 0);
        assert_eq!(v["processes"]["5678"]["exited"], true);
        assert_eq!(v["aggregated"]["tcp_connections"], 15);
        assert_eq!(v["untracked"]["bytes_in"], 0);
        assert_eq!(v["untracked"]["sockets"], 0);
        assert_eq!(v["untracked"]["processes"], 0);
        let keys: Vec<&str> = v["processes"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["1234", "5678"]);
    }

    #[test]
    fn processes_in_the_reports_order() {
        // 5678 before 1234: sorted neither as numbers nor as strings. (serde_json's Value
        // sorts object keys: the order is read from the text.)
        let mut r = sample_report();
        r.processes.reverse();
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let at = |pid: &str| {
            text.find(&format!("\"{pid}\":{{"))
                .unwrap_or_else(|| panic!("{pid} in {text}"))
        };
        assert!(at("5678") < at("1234"), "{text}");
    }

    #[test]
    fn details_list_connections() {
        let mut r = sample_report();
        r.processes[0].connections = Some(vec![ConnDetail {
            protocol: "tcp",
            local: "10.0.0.1:5000".into(),
            remote: "10.0.0.2:443".into(),
            state: "ESTABLISHED",
            bytes_in: 10,
            bytes_out: 20,
            rate_in: 80.4,
            rate_out: 160.0,
            age: std::time::Duration::from_secs(3),
            rtt_us: Some(120),
            retransmits: Some(0),
        }]);
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let c = &v["processes"]["1234"]["connections"][0];
        assert_eq!(c["protocol"], "tcp");
        assert_eq!(c["local"], "10.0.0.1:5000");
        assert_eq!(c["remote"], "10.0.0.2:443");
        assert_eq!(c["state"], "ESTABLISHED");
        assert_eq!(
            (c["bytes_in"].as_u64(), c["bytes_out"].as_u64()),
            (Some(10), Some(20))
        );
        assert_eq!(
            (c["rate_in"].as_u64(), c["rate_out"].as_u64()),
            (Some(80), Some(160))
        );
        assert_eq!(c["age"], "3s");
        assert_eq!(c["rtt_us"], 120);
        assert_eq!(c["retransmits"], 0);
        assert!(v["processes"]["5678"].get("connections").is_none());
    }

    #[test]
    fn destinations_and_classes_only_when_asked() {
        let mut r = sample_report();
        let mut plain = Vec::new();
        write(&mut plain, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        assert!(v["processes"]["1234"].get("destinations").is_none());
        assert!(v["processes"]["1234"].get("classes").is_none());
        let c = Counters {
            bytes_in: 100,
            bytes_out: 200,
            packets_in: 1,
            packets_out: 2,
        };
        r.processes[0].destinations = Some(vec![
            Destination {
                remote: "10.0.1.2".into(),
                name: Some("db.test".into()),
                class: Some("private".into()),
                counters: c,
                rate_in: 800.0,
                rate_out: 1600.0,
                hosts: None,
                connections: Some(3),
            },
            Destination {
                remote: "other".into(),
                name: None,
                class: None,
                counters: c,
                rate_in: 0.0,
                rate_out: 0.0,
                hosts: Some(1000),
                connections: None,
            },
        ]);
        r.processes[0].classes = Some(vec![ClassTraffic {
            class: "private".into(),
            counters: c,
            rate_in: 1.4,
            rate_out: 0.0,
            by_protocol: crate::model::Traffic {
                tcp: c,
                ..crate::model::Traffic::default()
            },
        }]);
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let d = &v["processes"]["1234"]["destinations"];
        assert_eq!(d["10.0.1.2"]["name"], "db.test");
        assert_eq!(d["10.0.1.2"]["class"], "private");
        assert_eq!(d["10.0.1.2"]["bytes_out"], 200);
        assert_eq!(d["10.0.1.2"]["rate_in"], 800);
        assert!(d["10.0.1.2"].get("hosts").is_none());
        assert_eq!(d["10.0.1.2"]["connections"], 3);
        assert!(d["other"].get("connections").is_none());
        assert_eq!(d["other"]["hosts"], 1000);
        assert_eq!(v["processes"]["1234"]["classes"]["private"]["rate_in"], 1);
        assert!(v["processes"]["1234"].get("dns_unmatched").is_none());
        assert!(v["processes"]["1234"].get("gaps").is_none());
        // With --destinations: what of the target's DNS named nothing; after a move: a gap.
        r.processes[0].dns = Some(crate::model::DnsCounts {
            unmatched: 200_000,
            dropped: 3,
        });
        r.processes[0].gaps = vec![crate::model::Gap {
            cgroup: "/test/y".into(),
            from_ns: 1_000_000,
            to_ns: 3_500_000,
            ongoing: false,
        }];
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let p = &v["processes"]["1234"];
        assert_eq!(
            (p["dns_unmatched"].as_u64(), p["dns_dropped"].as_u64()),
            (Some(200_000), Some(3))
        );
        assert_eq!(
            p["gaps"],
            serde_json::json!([{"cgroup":"/test/y","duration_us":2500,"from_ns":1_000_000,"to_ns":3_500_000,"ongoing":false}])
        );
        // The seed's fields are unchanged by the additions.
        let mut without = v.clone();
        let p = without["processes"]["1234"].as_object_mut().unwrap();
        for k in [
            "destinations",
            "classes",
            "dns_unmatched",
            "dns_dropped",
            "gaps",
        ] {
            p.remove(k);
        }
        let mut seed: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        seed["timestamp"] = without["timestamp"].clone();
        assert_eq!(without, seed);
    }

    #[test]
    fn every_row_has_tcp_health() {
        let mut r = sample_report();
        let mut h = crate::model::TcpHealth {
            connect_failures: 3,
            retransmitted_segments: 17,
            ..Default::default()
        };
        // 10 samples: 9 in (32, 64] µs, one in (512, 1024] µs.
        h.rtt.buckets[6] = 9;
        h.rtt.buckets[10] = 1;
        r.processes[0].row.health = h;
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let t = &v["processes"]["1234"]["tcp_health"];
        assert_eq!(
            t,
            &serde_json::json!({"connect_failures": 3, "retransmitted_segments": 17,
                "rtt_us": {"p50": 64, "p90": 64, "p99": 1024, "max": 1024}})
        );
        // No samples: the percentiles are null; the aggregate row has one too.
        assert_eq!(
            v["processes"]["5678"]["tcp_health"]["rtt_us"],
            serde_json::json!({"p50": null, "p90": null, "p99": null, "max": null})
        );
        assert_eq!(v["aggregated"]["tcp_health"]["connect_failures"], 0);
        assert_eq!(v["aggregated"]["tcp_connections"], 15);
    }

    #[test]
    fn no_aggregate_without_a() {
        let mut r = sample_report();
        r.aggregated = None;
        let mut buf = Vec::new();
        write(&mut buf, &r).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(v.get("aggregated").is_none());
    }
}
