//! Scrape-time encoding of the store: a `prometheus-client` [`Collector`] that reads
//! [`State`] when `/metrics` is asked for, in `OpenMetrics` text, and its conversion to the
//! classic Prometheus text format (0.0.4) that `promtool check metrics` and older scrapers read.
//!
//! Label values are escaped by `prometheus-client` itself since 0.26 (`prometheus/client_rust`
//! PR 347: `\` → `\\`, `"` → `\"`, newline → `\n`), so values are passed through unchanged:
//! escaping here as well would double-escape. `tests::label_values_are_escaped_once` pins that.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};

use super::store::{HealthSeries, MetricsRegistry, State, rtt_buckets};
use crate::model::Counters;

/// The `Content-Type` of `/metrics`: `OpenMetrics` text 1.0.0.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the classic Prometheus text format (version 0.0.4).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The two text formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `OpenMetrics` text 1.0.0 ([`CONTENT_TYPE`]).
    OpenMetrics,
    /// The classic Prometheus text format 0.0.4 ([`CLASSIC_CONTENT_TYPE`]).
    Classic,
}

impl Format {
    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => CONTENT_TYPE,
            Self::Classic => CLASSIC_CONTENT_TYPE,
        }
    }
}

/// Rewrites an `OpenMetrics` exposition into the classic text format: counter families are
/// named with their `_total` suffix in `# HELP`/`# TYPE`, and `# UNIT`/`# EOF` go.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl MetricsRegistry {
    /// Encodes everything in the `OpenMetrics` text format, `# EOF` included.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        // A registry per scrape is a few allocations; keeping one in the store would tie the
        // store to this encoder.
        let mut registry = Registry::default();
        registry.register_collector(Box::new(StateCollector {
            state: Arc::clone(&self.state),
        }));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }

    /// Encodes everything in `format`.
    pub fn encode_as(&self, format: Format) -> Result<String, std::fmt::Error> {
        let om = self.encode()?;
        Ok(match format {
            Format::OpenMetrics => om,
            Format::Classic => to_classic_text(&om),
        })
    }
}

/// Reads [`State`] at scrape time.
#[derive(Debug)]
struct StateCollector {
    state: Arc<Mutex<State>>,
}

/// One of the four traffic counter families.
struct TrafficFamily {
    /// Name without `_total` (the encoder appends it) and without the unit suffix.
    name: &'static str,
    help: &'static str,
    /// Counts bytes (unit `bytes`, which the encoder appends to the name) rather than packets.
    bytes: bool,
    pick: fn(&Counters) -> u64,
}

const TRAFFIC_FAMILIES: [TrafficFamily; 4] = [
    TrafficFamily {
        name: "procnetmon_network_receive",
        help: "IP bytes received by the workload's sockets",
        bytes: true,
        pick: |c| c.bytes_in,
    },
    TrafficFamily {
        name: "procnetmon_network_transmit",
        help: "IP bytes sent by the workload's sockets",
        bytes: true,
        pick: |c| c.bytes_out,
    },
    TrafficFamily {
        name: "procnetmon_network_receive_packets",
        help: "Packets received by the workload's sockets",
        bytes: false,
        pick: |c| c.packets_in,
    },
    TrafficFamily {
        name: "procnetmon_network_transmit_packets",
        help: "Packets sent by the workload's sockets",
        bytes: false,
        pick: |c| c.packets_out,
    },
];

/// Encodes one counter family over every (workload, protocol).
fn encode_traffic(
    encoder: &mut DescriptorEncoder<'_>,
    st: &State,
    family: &TrafficFamily,
) -> Result<(), std::fmt::Error> {
    let TrafficFamily {
        name,
        help,
        bytes,
        pick,
    } = family;
    let unit = bytes.then_some(Unit::Bytes);
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (key, w) in &st.workloads {
        for (proto, series) in &w.by_proto {
            let mut labels: Vec<(&str, &str)> =
                key.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            labels.push(("protocol", proto.as_str()));
            ConstCounter::new(pick(&series.exposed())).encode(metric.encode_family(&labels)?)?;
        }
        for ((proto, class), series) in &w.by_class {
            let mut labels: Vec<(&str, &str)> =
                key.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            labels.push(("protocol", proto.as_str()));
            labels.push(("destination_class", class.as_str()));
            ConstCounter::new(pick(&series.exposed())).encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let st = self.state.lock().unwrap_or_else(PoisonError::into_inner);

        for family in &TRAFFIC_FAMILIES {
            encode_traffic(&mut encoder, &st, family)?;
        }
        encode_health(&mut encoder, &st)?;
        encode_workload_gauges(&mut encoder, &st)?;
        encode_identity(&mut encoder, &st)?;
        encode_self(&mut encoder, &st)
    }
}

/// A TCP health counter family: name without `_total`, help, the value.
type HealthCounter = (&'static str, &'static str, fn(&HealthSeries) -> u64);

/// The TCP health counter families.
const HEALTH_COUNTERS: [HealthCounter; 2] = [
    (
        "procnetmon_tcp_connect_failures",
        "Outgoing TCP connects that never reached ESTABLISHED (refused, reset, timed out) and incoming handshakes that never completed",
        |h| h.connect_failures.value,
    ),
    (
        "procnetmon_tcp_retransmitted_segments",
        "TCP segments the workload's sockets retransmitted",
        |h| h.retransmitted_segments.value,
    ),
];

/// TCP health per workload: two counters and `procnetmon_tcp_rtt_seconds`, a histogram of
/// smoothed RTT samples (one per connection per interval) with fixed buckets (`RTT_LE_US`).
fn encode_health(encoder: &mut DescriptorEncoder<'_>, st: &State) -> Result<(), std::fmt::Error> {
    let with_health = || {
        st.workloads
            .iter()
            .filter_map(|(key, w)| w.health.as_ref().map(|h| (labels_of(key), h)))
    };
    for (name, help, pick) in HEALTH_COUNTERS {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, h) in with_health() {
            ConstCounter::new(pick(h)).encode(metric.encode_family(&labels)?)?;
        }
    }
    let mut rtt = encoder.encode_descriptor(
        "procnetmon_tcp_rtt",
        "Smoothed RTT of the workload's TCP connections, sampled once per connection per interval",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (labels, h) in with_health() {
        let sum = h.rtt.sum_us as f64 / 1e6;
        rtt.encode_family(&labels)?
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                sum,
                h.rtt.count(),
                &rtt_buckets(&h.rtt),
                None,
            )?;
    }
    Ok(())
}

/// A workload's labels, in exposition order.
fn labels_of(key: &super::store::WorkloadKey) -> Vec<(&'static str, &str)> {
    key.labels.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// The per-workload gauges: `procnetmon_network_connections{…,protocol}` (where counted) and
/// `procnetmon_remote_hosts{…[,destination_class]}` (with `--destinations`). A family without
/// samples still gets its `# HELP`/`# TYPE`, as the traffic families do.
fn encode_workload_gauges(
    encoder: &mut DescriptorEncoder<'_>,
    st: &State,
) -> Result<(), std::fmt::Error> {
    let mut conns = encoder.encode_descriptor(
        "procnetmon_network_connections",
        "TCP connections in ESTABLISHED and UDP sockets bound or connected, now",
        None,
        MetricType::Gauge,
    )?;
    for (key, w) in &st.workloads {
        let Some((tcp, udp)) = w.gauges.connections else {
            continue;
        };
        for (proto, n) in [("tcp", tcp), ("udp", udp)] {
            let mut labels = labels_of(key);
            labels.push(("protocol", proto));
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            conns.encode_family(&labels)?.encode_gauge(&n)?;
        }
    }
    let mut hosts = encoder.encode_descriptor(
        "procnetmon_remote_hosts",
        "Remote hosts the workload exchanged traffic with, kept apart by --destinations (at most --destinations-max)",
        None,
        MetricType::Gauge,
    )?;
    for (key, w) in &st.workloads {
        for (class, n) in &w.gauges.remote_hosts {
            let mut labels = labels_of(key);
            if let Some(c) = class {
                labels.push(("destination_class", c.as_str()));
            }
            let n = i64::try_from(*n).unwrap_or(i64::MAX);
            hosts.encode_family(&labels)?.encode_gauge(&n)?;
        }
    }
    Ok(())
}

/// `procnetmon_target_info` and `procnetmon_build_info`.
fn encode_identity(encoder: &mut DescriptorEncoder<'_>, st: &State) -> Result<(), std::fmt::Error> {
    // `*_info` as gauges of value 1 (the classic convention): `promtool check metrics`,
    // which speaks the Prometheus text format, refuses the OpenMetrics `info` type.
    let mut targets = encoder.encode_descriptor(
        "procnetmon_target_info",
        "A process named with -p; join on pid",
        None,
        MetricType::Gauge,
    )?;
    for t in &st.targets {
        let pid = t.pid.to_string();
        let mut labels: Vec<(&str, &str)> = vec![("pid", &pid), ("comm", &t.comm)];
        // A repeated label name would make the exposition invalid.
        labels.extend(
            t.labels
                .iter()
                .filter(|(k, _)| !matches!(*k, "pid" | "comm"))
                .map(|(k, v)| (*k, v.as_str())),
        );
        targets.encode_family(&labels)?.encode_gauge(&1_i64)?;
    }

    encoder
        .encode_descriptor(
            "procnetmon_build_info",
            "procnetmon2 build",
            None,
            MetricType::Gauge,
        )?
        .encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?
        .encode_gauge(&1_i64)?;
    Ok(())
}

/// The agent's own health: tracked sockets, untracked bytes, map fill, series held and dropped.
fn encode_self(encoder: &mut DescriptorEncoder<'_>, st: &State) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(i64::try_from(st.tracked_sockets).unwrap_or(i64::MAX));
    gauge.encode(encoder.encode_descriptor(
        "procnetmon_tracked_sockets",
        "Sockets the agent tracks now",
        None,
        gauge.metric_type(),
    )?)?;

    let untracked = ConstCounter::new(st.untracked_bytes.value);
    untracked.encode(encoder.encode_descriptor(
        "procnetmon_untracked",
        "Bytes that could not be charged to any workload",
        Some(&Unit::Bytes),
        untracked.metric_type(),
    )?)?;

    for (name, help, value) in [
        (
            "procnetmon_dns_unmatched",
            "DNS answers to targets that matched none of their queries (named nothing)",
            st.dns_unmatched.value,
        ),
        (
            "procnetmon_dns_dropped",
            "Targets' DNS queries and answers not handed up (past the per-target budget, or a full buffer)",
            st.dns_dropped.value,
        ),
    ] {
        let c = ConstCounter::new(value);
        c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
    }

    let mut fill = encoder.encode_descriptor(
        "procnetmon_map_fill_ratio",
        "Entries in use over max_entries, per eBPF map",
        None,
        MetricType::Gauge,
    )?;
    for m in &st.maps {
        let ratio = if m.max_entries == 0 {
            0.0
        } else {
            f64::from(m.entries) / f64::from(m.max_entries)
        };
        ConstGauge::new(ratio).encode(fill.encode_family(&[("map", m.map.as_str())])?)?;
    }

    let series = ConstGauge::new(i64::try_from(st.series).unwrap_or(i64::MAX));
    series.encode(encoder.encode_descriptor(
        "procnetmon_series",
        "Label sets held now: each (workload, protocol) is four traffic series, each workload's TCP health 15",
        None,
        series.metric_type(),
    )?)?;

    let dropped = ConstCounter::new(st.series_dropped);
    dropped.encode(encoder.encode_descriptor(
        "procnetmon_series_dropped",
        "Updates refused because the series cap was reached, one per (workload, protocol)",
        None,
        dropped.metric_type(),
    )?)?;
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::metrics::{MapFill, SelfStats, TargetInfo, WorkloadKey, store::tests::tcp};

    #[test]
    fn classed_workloads_carry_destination_class() {
        use crate::{
            metrics::{MetricsRegistry, Protocol},
            model::Traffic,
        };
        let reg = MetricsRegistry::default();
        let key = WorkloadKey::cgroup("/a");
        reg.update_workload_classes(
            &key,
            &[
                ("private".into(), tcp(1000, 1000)),
                ("internet".into(), Traffic::default()),
            ],
        );
        reg.update_workload_classes(&key, &[("private".into(), tcp(3000, 3000))]);
        // A class without traffic gets no series; counters are cumulative per class.
        assert_eq!(reg.series(), 1);
        assert_eq!(
            reg.class_counters(&key, Protocol::Tcp, "private")
                .map(|c| c.bytes_in),
            Some(3000)
        );
        let out = reg.encode().unwrap();
        assert!(
            out.contains(
                "procnetmon_network_receive_bytes_total{cgroup=\"/a\",protocol=\"tcp\",destination_class=\"private\"} 3000"
            ),
            "{out}"
        );
        assert!(!out.contains("destination_class=\"internet\""), "{out}");
    }

    /// Connections per protocol and remote hosts per class hang on a workload that has
    /// series; a workload without series gets no gauges (they add no label sets of their own).
    #[test]
    fn workload_gauges_are_exposed_beside_their_series() {
        use crate::metrics::WorkloadGauges;
        let reg = MetricsRegistry::default();
        let web = WorkloadKey::kubernetes("shop", "web-1", "nginx");
        reg.update_workload(&web, &tcp(10, 20));
        reg.set_workload_gauges(
            &web,
            WorkloadGauges {
                connections: Some((3, 1)),
                remote_hosts: vec![(Some("internet".into()), 2), (Some("private".into()), 5)],
            },
        );
        let ghost = WorkloadKey::cgroup("/never-sent");
        reg.set_workload_gauges(
            &ghost,
            WorkloadGauges {
                connections: Some((1, 1)),
                remote_hosts: vec![(None, 1)],
            },
        );
        let out = reg.encode().unwrap();
        let labels = "namespace=\"shop\",pod=\"web-1\",container=\"nginx\"";
        for line in [
            format!("procnetmon_network_connections{{{labels},protocol=\"tcp\"}} 3\n"),
            format!("procnetmon_network_connections{{{labels},protocol=\"udp\"}} 1\n"),
            format!("procnetmon_remote_hosts{{{labels},destination_class=\"internet\"}} 2\n"),
            format!("procnetmon_remote_hosts{{{labels},destination_class=\"private\"}} 5\n"),
            "# TYPE procnetmon_network_connections gauge\n".to_string(),
            "# TYPE procnetmon_remote_hosts gauge\n".to_string(),
        ] {
            assert!(out.contains(&line), "missing {line:?} in\n{out}");
        }
        assert!(!out.contains("never-sent"), "{out}");
        assert_eq!(reg.series(), 1, "gauges are no series of the cap");
    }

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP x_bytes X.\n# TYPE x_bytes counter\n# UNIT x_bytes bytes\nx_bytes_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP x_bytes_total X.\n# TYPE x_bytes_total counter\nx_bytes_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n"
        );
    }

    /// A comm with a quote, a backslash and a newline, as a process can set with prctl.
    const NASTY: &str = "evil\"na\\me\nx";
    /// `NASTY` escaped per `OpenMetrics` (`\\`, `\"`, `\n`).
    const NASTY_ESCAPED: &str = r#"evil\"na\\me\nx"#;

    pub(in crate::metrics) fn nasty_registry() -> MetricsRegistry {
        let reg = MetricsRegistry::default();
        let key = WorkloadKey::cgroup(format!("system.slice/{NASTY}.service"));
        reg.update_workload(&key, &tcp(1000, 2000));
        let mut health = crate::model::TcpHealth {
            connect_failures: 2,
            retransmitted_segments: 9,
            ..Default::default()
        };
        // Three samples: 50 µs (→ 64), 100 µs (→ 128), 3 s (→ 2^22 µs).
        for (b, us) in [(6, 50), (7, 100), (22, 3_000_000)] {
            health.rtt.buckets[b] += 1;
            health.rtt.sum_us += us;
        }
        reg.update_workload_health(&key, &health);
        reg.set_targets(vec![TargetInfo {
            pid: 42,
            comm: NASTY.into(),
            labels: vec![("cgroup", "/user.slice".into())],
        }]);
        reg.set_self_stats(SelfStats {
            tracked_sockets: 3,
            untracked_bytes: 7,
            dns_unmatched: 200_000,
            dns_dropped: 2,
            maps: vec![MapFill {
                map: "SOCK_TRAFFIC".into(),
                entries: 1,
                max_entries: 4,
            }],
        });
        reg
    }

    #[test]
    fn label_values_are_escaped_once() {
        let out = nasty_registry().encode().expect("encode");
        assert!(
            out.contains(&format!(
                "procnetmon_target_info{{pid=\"42\",comm=\"{NASTY_ESCAPED}\",cgroup=\"/user.slice\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains(&format!(
                "procnetmon_network_receive_bytes_total{{cgroup=\"system.slice/{NASTY_ESCAPED}.service\",protocol=\"tcp\"}} 1000\n"
            )),
            "{out}"
        );
        // Every sample stays on one line: no raw newline inside a label value.
        for line in out.lines() {
            assert!(
                line.starts_with('#') || line.starts_with("procnetmon_"),
                "{line:?}"
            );
        }
    }

    #[test]
    fn encoding_has_every_series() {
        let out = nasty_registry().encode().expect("encode");
        for name in [
            "procnetmon_network_receive_bytes_total{",
            "procnetmon_network_transmit_bytes_total{",
            "procnetmon_network_receive_packets_total{",
            "procnetmon_network_transmit_packets_total{",
            "procnetmon_target_info{",
            "procnetmon_build_info{version=\"",
            "procnetmon_tracked_sockets 3\n",
            "procnetmon_untracked_bytes_total 7\n",
            "procnetmon_dns_unmatched_total 200000\n",
            "procnetmon_dns_dropped_total 2\n",
            "procnetmon_map_fill_ratio{map=\"SOCK_TRAFFIC\"} 0.25\n",
            "procnetmon_series 2\n",
            "procnetmon_tcp_connect_failures_total{cgroup=",
            "procnetmon_tcp_retransmitted_segments_total{cgroup=",
            "# TYPE procnetmon_tcp_rtt_seconds histogram\n",
            "# UNIT procnetmon_tcp_rtt_seconds seconds\n",
            "procnetmon_tcp_rtt_seconds_count{cgroup=",
            "procnetmon_series_dropped_total 0\n",
            "# TYPE procnetmon_network_receive_bytes counter\n",
            "# TYPE procnetmon_target_info gauge\n",
        ] {
            assert!(out.contains(name), "missing {name:?} in\n{out}");
        }
        assert!(out.ends_with("# EOF\n"));
        // The histogram: cumulative, exact at each bound, `+Inf` = `_count`, `_sum` in s.
        let rtt: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("procnetmon_tcp_rtt_seconds"))
            .collect();
        let value = |needle: &str| {
            rtt.iter()
                .find(|l| l.contains(needle))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("{needle} missing in {rtt:?}"))
                .to_string()
        };
        assert_eq!(value("le=\"0.000016\""), "0");
        assert_eq!(value("le=\"0.000064\""), "1");
        assert_eq!(value("le=\"0.000256\""), "2");
        assert_eq!(value("le=\"4.194304\""), "3");
        assert_eq!(value("le=\"+Inf\""), "3");
        assert_eq!(value("_count"), "3");
        assert_eq!(value("_sum").parse::<f64>().ok(), Some(3.00015));
        assert_eq!(rtt.len(), crate::metrics::RTT_LE_US.len() + 3);
        // No PID on a counter.
        for line in out.lines().filter(|l| l.contains("_total{")) {
            assert!(!line.contains("pid="), "{line}");
        }
    }

    /// Validates the exposition with Prometheus' own `OpenMetrics` parser and reads the label
    /// values back. `promtool check metrics` only knows the older text format (it rejects the
    /// `info` type), so this goes through `promtool tsdb create-blocks-from openmetrics`, which
    /// needs a timestamp on every sample, and `promtool tsdb dump`, which prints the stored
    /// labels Go-quoted (the same escapes as `OpenMetrics`). `promtool` comes with Debian's
    /// package `prometheus`, which `scripts/setup` installs: without it this fails (a skip
    /// would pass as a pass).
    /// `promtool check metrics` (the linter, which reads the classic text format) accepts
    /// every family, the TCP health ones included.
    #[test]
    fn promtool_checks_classic_text() {
        use std::{io::Write as _, process::Command};
        let classic = to_classic_text(&nasty_registry().encode().expect("encode"));
        let mut p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect(
                "promtool is missing: run scripts/setup (it installs Debian's prometheus package)",
            );
        p.stdin
            .as_mut()
            .expect("stdin")
            .write_all(classic.as_bytes())
            .expect("write");
        let out = p.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool: {}{}\n{classic}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn promtool_parses_exposition() {
        use std::process::Command;
        assert!(
            Command::new("promtool").arg("--version").output().is_ok(),
            "promtool is missing: run scripts/setup (it installs Debian's prometheus package)"
        );
        let out = nasty_registry().encode().expect("encode");
        let stamped: String = out
            .lines()
            .map(|l| {
                if l.starts_with('#') {
                    format!("{l}\n")
                } else {
                    format!("{l} 1700000000\n")
                }
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("procnetmon2-promtool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let input = dir.join("exposition.txt");
        std::fs::write(&input, stamped).expect("write");
        let blocks = dir.join("blocks");
        let created = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&blocks)
            .output()
            .expect("run promtool");
        assert!(
            created.status.success(),
            "promtool rejected:\n{out}\n{}",
            String::from_utf8_lossy(&created.stderr)
        );
        // `tsdb dump` insists on a WAL directory.
        std::fs::create_dir_all(blocks.join("wal")).expect("mkdir wal");
        let dumped = Command::new("promtool")
            .args(["tsdb", "dump"])
            .arg(&blocks)
            .output()
            .expect("run promtool dump");
        let _ = std::fs::remove_dir_all(&dir);
        let dump = String::from_utf8_lossy(&dumped.stdout);
        assert!(dumped.status.success(), "{dump}");
        assert!(
            dump.contains(&format!("comm=\"{NASTY_ESCAPED}\"")),
            "label value did not round-trip:\n{dump}"
        );
        assert!(dump.contains("__name__=\"procnetmon_network_transmit_packets_total\""));
    }
}
