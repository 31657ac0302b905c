//! The human table: the seed's columns plus peak rates, a TOTAL row with `-a`.

use std::io::{self, Write};

use super::{DisplayBytes, DisplayRate, DisplayRtt, compact_duration};
use crate::{
    host::identity::ContainerIdentity,
    model::{ConnDetail, ProcessReport, Report, Row, TcpHealth},
};

/// Clears a terminal and homes the cursor, so a live report replaces the last one like top.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// One table line: PID, name (cut to 16 characters), the eight cells of `row_cells`, with
/// `--details` the four of `health_cells`, and an optional trailing text (runtime,
/// POD/CONTAINER).
/// Names come from processes and cgroups (anyone can set a `comm`): control characters are
/// shown escaped, never sent to the terminal.
fn line(
    pid: &str,
    name: &str,
    c: &[String; 8],
    health: Option<&[String; 4]>,
    tail: Option<&str>,
) -> String {
    let name: String = super::printable(name).chars().take(16).collect();
    let mut l = format!(
        "{pid:<8} {name:<16} {:>11} {:>11} {:>11} {:>11} {:>11} {:>11} {:>5} {:>5}",
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]
    );
    if let Some(h) = health {
        l.push_str(&format!(" {:>5} {:>6} {:>8} {:>8}", h[0], h[1], h[2], h[3]));
    }
    if let Some(t) = tail {
        l.push_str("  ");
        l.push_str(&super::printable(t));
    }
    l.push('\n');
    l
}

/// With `--details`: connect failures, retransmitted segments, RTT p50 and p99 (bucket upper
/// bounds, see `model::RttHistogram::quantile_us`).
fn health_cells(h: &TcpHealth) -> [String; 4] {
    [
        h.connect_failures.to_string(),
        h.retransmitted_segments.to_string(),
        DisplayRtt(h.rtt.quantile_us(0.5)).to_string(),
        DisplayRtt(h.rtt.quantile_us(0.99)).to_string(),
    ]
}

/// A gap under its process: when it moved to a cgroup the programs did not cover, what it did
/// there until they did could not be counted (or cannot, when the cgroup cannot be covered).
pub fn gap_line(g: &crate::model::Gap) -> String {
    let d = g.duration();
    let took = if d < std::time::Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    };
    let cgroup = super::printable(&g.cgroup);
    if g.ongoing {
        format!(
            "  └ gap: moved to cgroup {cgroup}, which cannot be counted: its new sockets uncounted for {took} so far\n"
        )
    } else {
        format!(
            "  └ gap: moved to cgroup {cgroup}: its new sockets there uncounted for {took}, until counting began there\n"
        )
    }
}

fn row_cells(r: &Row) -> [String; 8] {
    [
        DisplayRate(r.rate_in).to_string(),
        DisplayRate(r.rate_out).to_string(),
        DisplayRate(r.peak_rate_in).to_string(),
        DisplayRate(r.peak_rate_out).to_string(),
        DisplayBytes(r.counters.bytes_in).to_string(),
        DisplayBytes(r.counters.bytes_out).to_string(),
        r.tcp_connections.to_string(),
        r.udp_connections.to_string(),
    ]
}

/// Writes `report` as a table. `refresh`: clear the terminal first (live view on a tty).
/// `health`: the TCP health columns (`--details`).
pub fn write(out: &mut dyn Write, report: &Report, refresh: bool, health: bool) -> io::Result<()> {
    let mut s = String::new();
    if refresh {
        s.push_str(CLEAR);
    }
    let title = if report.is_final {
        "window total"
    } else {
        "live"
    };
    s.push_str(&format!(
        "procnetmon2 {} ({title})\n",
        report
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
    ));
    let t = Columns {
        with_pod: report.processes.iter().any(|p| p.container.is_some())
            || report.workloads.iter().any(|w| w.container.is_some()),
        health,
    };
    let header = t.header();
    s.push_str(&header);
    for p in &report.processes {
        t.process(&mut s, p);
    }
    for w in &report.workloads {
        let state = if w.exited { "(gone)" } else { "-" };
        s.push_str(&line(
            "-",
            &w.name,
            &row_cells(&w.row),
            t.health(&w.row).as_ref(),
            Some(&t.tail(state.into(), w.container.as_ref())),
        ));
    }
    if let Some(agg) = &report.aggregated {
        s.push_str(&"─".repeat(header.trim_end().chars().count()));
        s.push('\n');
        s.push_str(&line(
            "TOTAL",
            "",
            &row_cells(agg),
            t.health(agg).as_ref(),
            None,
        ));
    }
    untracked(&mut s, report);
    s.push('\n');
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// The table's optional columns: TCP health (`--details`), and in the last column the
/// runtime and the pod/container when any row has one.
struct Columns {
    with_pod: bool,
    health: bool,
}

impl Columns {
    fn header(&self) -> String {
        let labels = [
            "Rate In",
            "Rate Out",
            "Peak In",
            "Peak Out",
            "Total In",
            "Total Out",
            "TCP",
            "UDP",
        ]
        .map(String::from);
        let last = if self.with_pod {
            format!("{:<18}  POD/CONTAINER", "Runtime")
        } else {
            "Runtime".into()
        };
        let health = ["Fail", "Retx", "RTT p50", "RTT p99"].map(String::from);
        line(
            "PID",
            "Name",
            &labels,
            self.health.then_some(&health),
            Some(&last),
        )
    }

    /// A row's health cells, when the table has the columns.
    fn health(&self, r: &Row) -> Option<[String; 4]> {
        self.health.then(|| health_cells(&r.health))
    }

    fn tail(&self, runtime: String, c: Option<&ContainerIdentity>) -> String {
        if self.with_pod {
            format!(
                "{runtime:<18}  {}",
                c.map_or_else(|| "-".into(), ContainerIdentity::workload)
            )
        } else {
            runtime
        }
    }

    /// A process's line, then one line per connection with `--details`.
    fn process(&self, s: &mut String, p: &ProcessReport) {
        let runtime = if p.exited {
            format!("{} (exited)", compact_duration(p.runtime))
        } else {
            compact_duration(p.runtime)
        };
        s.push_str(&line(
            &p.pid.to_string(),
            &p.name,
            &row_cells(&p.row),
            self.health(&p.row).as_ref(),
            Some(&self.tail(runtime, p.container.as_ref())),
        ));
        for conn in p.connections.iter().flatten() {
            s.push_str(&connection_line(conn));
        }
        for g in &p.gaps {
            s.push_str(&gap_line(g));
        }
    }
}

/// A `--details` line under its process.
fn connection_line(conn: &ConnDetail) -> String {
    let rtt = match (conn.rtt_us, conn.retransmits) {
        (Some(rtt), Some(re)) => {
            format!("  rtt {:.1} ms, {re} retrans", f64::from(rtt) / 1000.0)
        }
        _ => String::new(),
    };
    format!(
        "  └ {:<3} {:<22} → {:<22} {:<11} in {} ({}) out {} ({}) age {}{rtt}\n",
        conn.protocol,
        conn.local,
        conn.remote,
        conn.state,
        DisplayBytes(conn.bytes_in),
        DisplayRate(conn.rate_in),
        DisplayBytes(conn.bytes_out),
        DisplayRate(conn.rate_out),
        compact_duration(conn.age),
    )
}

/// What could not be attributed, when there is any (never silent).
fn untracked(s: &mut String, report: &Report) {
    let u = &report.untracked;
    if u.bytes_in + u.bytes_out + report.untracked_sockets + report.untracked_processes > 0 {
        s.push_str(&format!(
            "untracked: {} in, {} out; {} socket(s) and {} process(es) could not be attributed\n",
            DisplayBytes(u.bytes_in),
            DisplayBytes(u.bytes_out),
            report.untracked_sockets,
            report.untracked_processes
        ));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{Counters, ProcessReport, Traffic};

    /// The seed README's example, as a report.
    pub(crate) fn sample_report() -> Report {
        let nginx = Counters {
            bytes_in: 1_288_490_188,
            bytes_out: 2_254_857_429,
            packets_in: 900_000,
            packets_out: 1_600_000,
        };
        let python = Counters {
            bytes_in: 157_286_400,
            bytes_out: 78_643_200,
            packets_in: 1000,
            packets_out: 500,
        };
        let row = |c: Counters, ri: f64, ro: f64, pi: f64, t: u32, u: u32| Row {
            counters: c,
            rate_in: ri,
            rate_out: ro,
            peak_rate_in: pi,
            peak_rate_out: ro,
            tcp_connections: t,
            udp_connections: u,
            health: Default::default(),
        };
        Report {
            timestamp: chrono::DateTime::parse_from_rfc3339("2025-02-18T17:48:42+01:00").unwrap(),
            processes: vec![
                ProcessReport {
                    pid: 1234,
                    name: "nginx".into(),
                    runtime: Duration::from_secs(3723),
                    exited: false,
                    row: row(nginx, 1_572_864.0, 2_411_724.0, 3_000_000.0, 12, 0),
                    traffic: Traffic {
                        tcp: nginx,
                        ..Traffic::default()
                    },
                    connections: None,
                    container: None,
                    nspid: None,
                    destinations: None,
                    classes: None,
                    dns: None,
                    gaps: Vec::new(),
                },
                ProcessReport {
                    pid: 5678,
                    name: "python".into(),
                    runtime: Duration::from_secs(59),
                    exited: true,
                    row: row(python, 256_000.0, 128_000.0, 256_000.0, 3, 1),
                    traffic: Traffic {
                        tcp: python,
                        ..Traffic::default()
                    },
                    connections: None,
                    container: None,
                    nspid: None,
                    destinations: None,
                    classes: None,
                    dns: None,
                    gaps: Vec::new(),
                },
            ],
            aggregated: Some(row(
                nginx.plus(python),
                1_828_864.0,
                2_539_724.0,
                3_100_000.0,
                15,
                1,
            )),
            workloads: Vec::new(),
            untracked: Counters::default(),
            untracked_sockets: 0,
            untracked_processes: 0,
            is_final: false,
        }
    }

    #[test]
    fn table_snapshot() {
        let mut buf = Vec::new();
        write(&mut buf, &sample_report(), false, false).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let expected = "\
procnetmon2 2025-02-18T17:48:42+01:00 (live)
PID      Name                 Rate In    Rate Out     Peak In    Peak Out    Total In   Total Out   TCP   UDP  Runtime
1234     nginx               1.6 Mbps    2.4 Mbps    3.0 Mbps    2.4 Mbps     1.2 GiB     2.1 GiB    12     0  1h2m3s
5678     python            256.0 Kbps  128.0 Kbps  256.0 Kbps  128.0 Kbps   150.0 MiB    75.0 MiB     3     1  59s (exited)
──────────────────────────────────────────────────────────────────────────────────────────────────────────────────────
TOTAL                        1.8 Mbps    2.5 Mbps    3.1 Mbps    2.5 Mbps     1.3 GiB     2.2 GiB    15     1

";
        assert_eq!(text, expected, "got:\n{text}");
    }

    /// A gap is a line under its process, never silent: how long, where, and whether it lasts.
    #[test]
    fn gaps_are_shown_under_their_process() {
        let mut r = sample_report();
        r.processes[0].gaps = vec![
            crate::model::Gap {
                cgroup: "/test/y".into(),
                from_ns: 1_000_000,
                to_ns: 3_200_000,
                ongoing: false,
            },
            crate::model::Gap {
                cgroup: "/".into(),
                from_ns: 0,
                to_ns: 12_300_000_000,
                ongoing: true,
            },
        ];
        let mut buf = Vec::new();
        write(&mut buf, &r, false, false).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("1234     nginx"), "{text}");
        assert_eq!(
            lines[3],
            "  └ gap: moved to cgroup /test/y: its new sockets there uncounted for 2.2 ms, until counting began there"
        );
        assert_eq!(
            lines[4],
            "  └ gap: moved to cgroup /, which cannot be counted: its new sockets uncounted for 12.3 s so far"
        );
    }

    #[test]
    fn details_add_the_health_columns() {
        let mut r = sample_report();
        let h = &mut r.processes[0].row.health;
        h.connect_failures = 3;
        h.retransmitted_segments = 120;
        h.rtt.buckets[6] = 9; // ≤ 64 µs
        h.rtt.buckets[12] = 1; // ≤ 4.096 ms
        let mut buf = Vec::new();
        write(&mut buf, &r, false, true).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("  UDP  Fail   Retx  RTT p50  RTT p99  Runtime"),
            "{text}"
        );
        assert!(
            lines[2].contains("    12     0     3    120     64µs    4.1ms  1h2m3s"),
            "{text}"
        );
        // No sample: a dash; the TOTAL row has the columns too.
        assert!(
            lines[3].contains("     0      0        -        -  59s"),
            "{text}"
        );
        assert!(
            lines[5].ends_with("     0      0        -        -"),
            "{text}"
        );
        // Without --details the table is what it was.
        let mut plain = Vec::new();
        write(&mut plain, &r, false, false).unwrap();
        assert!(!String::from_utf8(plain).unwrap().contains("Retx"));
    }

    #[test]
    fn refresh_clears_the_screen() {
        let mut buf = Vec::new();
        write(&mut buf, &sample_report(), true, false).unwrap();
        assert!(buf.starts_with(CLEAR.as_bytes()));
    }
}
