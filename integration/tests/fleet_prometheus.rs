//! The dashboard and the alert rules against real parts (issue 27): a real agent (`--all
//! --metrics-addr`, destination classes, `--destinations`) counts two simulated pods, each in
//! its own network namespace and cgroup, while a real Prometheus (Debian's, started here on
//! loopback with its own config and storage) scrapes it every second and evaluates the rules.
//! Every query of every panel of deploy/grafana/procnetmon2.json, with the template variables
//! filled in as Grafana would, goes through Prometheus' HTTP API and must parse, return series
//! and, for bytes, equal what the pods sent (known payloads and the IPv4/UDP header formula;
//! pod A's refused connects, whose segments have fixed sizes). A third pod, C, alone in its
//! namespace, moves TCP over its loopback for the RTT panel, selected on its own as a user
//! would (its bytes are no part of the other panels' selection).
//! The README's PromQL examples are run too. Host-only (scripts/test-kernels leaves it out, see
//! docs/kernels.md): the kernel-dependent counting is covered by the other tests.
//!
//! Exactness. Prometheus' `increase` and `rate` extrapolate to the edges of their window, so a
//! window chosen at random reads a few percent off. Here the dashboard's time range runs from a
//! scrape `s0` taken after a one-datagram warm-up (so every series exists and is flat there) to
//! a scrape `T` after the measured burst (flat again); queries are evaluated at `T` with
//! `$__range` and `$__rate_interval` = T - s0. Prometheus 2.x selects both ends of a range, so
//! the first and last samples sit exactly on the window's edges, nothing is extrapolated, and
//! `increase` is exactly the measured bytes (`rate` times the window, up to float rounding).
//! Rates are also evaluated over a window that starts half a scrape interval earlier, as
//! Grafana's own `$__rate_interval` would: there they must be within one scrape interval's
//! worth of bytes. Prometheus 3 excludes a range's left end, which would break the first
//! scheme: the test checks the version.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{
    Cgroup, Monitor, Netns, Proc, Veth, pods::KubeNode, skip_unless_root, udp4_bytes, unique,
};
use serde_json::Value;

/// Prometheus' scrape interval.
const SCRAPE: Duration = Duration::from_secs(1);
/// The measured traffic comes in `PARTS` bursts, each after Prometheus has scraped the one
/// before (so rates span several scrapes): datagrams per burst pod A sends to pod B (class
/// other-zone) and to the internet, and pod B to the internet. Before them each pod sends one
/// datagram to each address (the warm-up).
const PARTS: u64 = 4;
const A_TO_B: u64 = 20;
const A_TO_NET: u64 = 15;
const B_TO_NET: u64 = 15;
const A_SIZE: u64 = 400;
const B_SIZE: u64 = 300;
/// Internet destinations: documentation addresses (RFC 5737, TEST-NET-3: reserved, never
/// routed) that no class prefix matches. `internet` is by definition what no prefix matches,
/// and 10/8 is always `private` (a user class cannot add prefixes to `internet`), so no 10.x
/// address can stand for it. They leave each pod only through its default route, the test's
/// own veth to the other pod's namespace, which drops them (it forwards nothing and sends no
/// ICMP for them): nothing leaves the test's namespaces, and only the send counts.
const NET_A: &str = "203.0.113.7:9";
const NET_B: &str = "203.0.113.8:9";

/// TCP health (the dashboard's TCP health row): pod A connects once per burst (and once in the
/// warm-up, so its health and TCP series exist at s0) to a port of B nobody listens on. The
/// segments' IP sizes are fixed: a SYN carries MSS, SACK-permitted, timestamps and window scale
/// (20 + 20 + 20 bytes), the reset a closed port answers it with no option (20 + 20). The reset
/// comes from B's namespace's own control socket, no pod's: only A's SYN and the reset it
/// receives are a pod's.
const SYN: u64 = 60;
const RST: u64 = 40;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One sample of a query's result.
#[derive(Debug, Clone)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn has(&self, want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| self.labels.get(*k).map(String::as_str) == Some(*v))
    }
}

/// Debian's `prometheus` on loopback with its own config and storage; killed (by its PID) and
/// its directory removed on drop.
struct Prometheus {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Prometheus {
    /// Scrapes `target` every second as job `procnetmon2` with `node` as a target label (as the
    /// ServiceMonitor's relabeling gives), honouring the agent's labels, and loads the rules.
    fn start(target: &str, node: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("pnm-prom-"));
        std::fs::create_dir_all(&dir).expect("prometheus dir");
        let rules = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/prometheus/procnetmon2-rules.yaml")
            .canonicalize()
            .expect("rules file");
        let config = format!(
            "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\n  evaluation_interval: {s}s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: procnetmon2\n    honor_labels: true\n    static_configs:\n\
             \x20     - targets: ['{target}']\n        labels:\n          node: {node}\n",
            s = SCRAPE.as_secs(),
            rules = rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let log = std::fs::File::create(dir.join("log")).expect("log");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/setup installs Debian's prometheus)");
        let p = Self { child, dir, port };
        // Ready once its readiness endpoint answers 200 (the TSDB is open, rules loaded).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let code = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://127.0.0.1:{}/-/ready", p.port))
                .output()
                .expect("curl");
            if String::from_utf8_lossy(&code.stdout) == "200" {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready: {}",
                p.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// GET an API path with URL-encoded parameters; `data` of a successful answer.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut cmd = Command::new("curl");
        cmd.args(["-sG", &format!("http://127.0.0.1:{}{path}", self.port)]);
        for (k, v) in params {
            cmd.args(["--data-urlencode", &format!("{k}={v}")]);
        }
        let out = cmd.output().expect("curl");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{path} {params:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert_eq!(v["status"], "success", "{path} {params:?}: {v}");
        v["data"].clone()
    }

    /// An instant query at `at` (seconds); the result must be a vector.
    fn query(&self, expr: &str, at: f64) -> Vec<Sample> {
        let time = format!("{at:.3}");
        let data = self.api("/api/v1/query", &[("query", expr), ("time", &time)]);
        assert_eq!(data["resultType"], "vector", "{expr}: {data}");
        data["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|r| Sample {
                labels: r["metric"]
                    .as_object()
                    .expect("metric")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect(),
                value: r["value"][1]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("value"),
            })
            .collect()
    }

    /// The timestamp (seconds, millisecond precision) of the latest scrape of the agent, once
    /// there is one.
    fn last_scrape(&self) -> Option<f64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        let r = self.query("timestamp(up{job=\"procnetmon2\"})", now);
        assert!(r.len() <= 1, "{r:?}");
        r.first().map(|s| s.value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The two pods' names.
struct Names {
    node: String,
    ns_a: String,
    pod_a: String,
    ns_b: String,
    pod_b: String,
    ns_c: String,
    pod_c: String,
}

/// Bytes of the two pods, per (namespace, destination class), in one direction.
type ByClass = BTreeMap<(String, String), f64>;

/// What the pods sent after bursts of (A to B, A to the internet, B to the internet)
/// datagrams and `refused` connects of A, in both directions, per (namespace, class). Each pod
/// has a series for both classes (A sends to both; B sends to the internet and receives from A,
/// other-zone), and a series carries all four counters: the directions it did not use read 0.
/// A refused connect is other-zone: A's SYN out and a reset in.
fn expected(n: &Names, counts: (u64, u64, u64), refused: u64) -> (ByClass, ByClass) {
    let (ab, an, bn) = counts;
    let a = |c: u64| (c * udp4_bytes(A_SIZE)) as f64;
    let k = |ns: &String, c: &str| (ns.clone(), c.to_owned());
    let (a_out, a_in) = (refused * SYN, refused * RST);
    let tx = BTreeMap::from([
        (k(&n.ns_a, "other-zone"), a(ab) + a_out as f64),
        (k(&n.ns_a, "internet"), a(an)),
        (k(&n.ns_b, "internet"), (bn * udp4_bytes(B_SIZE)) as f64),
        (k(&n.ns_b, "other-zone"), 0.0),
    ]);
    let rx = BTreeMap::from([
        (k(&n.ns_a, "other-zone"), a_in as f64),
        (k(&n.ns_a, "internet"), 0.0),
        (k(&n.ns_b, "internet"), 0.0),
        (k(&n.ns_b, "other-zone"), a(ab)),
    ]);
    (tx, rx)
}

/// The pods' bytes in Prometheus at `at`, per (namespace, class) and direction.
fn stored(p: &Prometheus, n: &Names, at: f64) -> (ByClass, ByClass) {
    let read = |family: &str| -> ByClass {
        let expr = format!(
            "sum by (namespace, destination_class) ({family}{{namespace=~\"{}|{}\"}})",
            n.ns_a, n.ns_b
        );
        p.query(&expr, at)
            .into_iter()
            .map(|s| {
                (
                    (
                        s.labels["namespace"].clone(),
                        s.labels["destination_class"].clone(),
                    ),
                    s.value,
                )
            })
            .collect()
    };
    (
        read("procnetmon_network_transmit_bytes_total"),
        read("procnetmon_network_receive_bytes_total"),
    )
}

/// Gauges once the agent has listed the pods' sockets and remote hosts: per (pod, protocol)
/// connections and per pod remote hosts.
fn gauges_settled(p: &Prometheus, n: &Names, at: f64) -> bool {
    let sel = format!("namespace=~\"{}|{}\"", n.ns_a, n.ns_b);
    let conns = p.query(
        &format!("sum by (pod, protocol) (procnetmon_network_connections{{{sel}}})"),
        at,
    );
    let hosts = p.query(
        &format!("sum by (pod) (procnetmon_remote_hosts{{{sel}}})"),
        at,
    );
    let c = |pod: &str, proto: &str| {
        conns
            .iter()
            .find(|s| s.has(&[("pod", pod), ("protocol", proto)]))
            .map(|s| s.value)
    };
    let h = |pod: &str| {
        hosts
            .iter()
            .find(|s| s.has(&[("pod", pod)]))
            .map(|s| s.value)
    };
    c(&n.pod_a, "tcp") == Some(1.0)
        && c(&n.pod_a, "udp") == Some(1.0)
        && c(&n.pod_b, "tcp") == Some(1.0)
        && c(&n.pod_b, "udp") == Some(2.0)
        && h(&n.pod_a) == Some(2.0)
        && h(&n.pod_b) == Some(2.0)
}

/// Waits (20 s) until Prometheus holds `want` (and, when `gauges`, the settled gauges), then
/// returns the timestamp of a scrape that holds them, checked there exactly.
fn scrape_holding(p: &Prometheus, n: &Names, want: &(ByClass, ByClass), gauges: bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let at = p.last_scrape();
        if let Some(at) = at
            && stored(p, n, at) == *want
            && (!gauges || gauges_settled(p, n, at))
        {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never held {want:?}: last {:?}\n{}",
            at.map(|at| stored(p, n, at)),
            p.log()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// Fills a panel query's template variables as Grafana would for this selection: the node,
/// both pods' namespaces and pods (multi-value: a regex alternation), the classes used, and
/// the windows.
fn fill(expr: &str, n: &Names, rate_window_ms: i64, range_ms: i64) -> String {
    let out = expr
        .replace("$__rate_interval", &format!("{rate_window_ms}ms"))
        .replace("$__range", &format!("{range_ms}ms"))
        .replace("$node", &n.node)
        .replace("$namespace", &format!("({}|{})", n.ns_a, n.ns_b))
        .replace("$workload", &format!("({}|{})", n.pod_a, n.pod_b))
        .replace("$destination_class", "(internet|other-zone)")
        .replace("$zone_classes", "other-zone");
    assert!(!out.contains('$'), "a variable left unfilled: {out}");
    out
}

/// How a panel query's values relate to bytes sent: a rate (per second over the window), an
/// increase over the range, or a gauge read as is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Rate,
    Increase,
    Gauge,
}

/// A panel query's expected rows: each row's labels and its value in base units (bytes for
/// rates and increases, before the query's own `scale`).
struct Rows {
    kind: Kind,
    scale: f64,
    rows: Vec<(Vec<(&'static str, String)>, f64)>,
}

/// The window of the run, and the names.
struct Run<'a> {
    p: &'a Prometheus,
    n: &'a Names,
    t: f64,
    range_ms: i64,
}

impl Run<'_> {
    /// Runs `expr` with the variables filled; checks it returns series and, per `want`, the
    /// rows and values; returns the samples.
    fn check(&self, title: &str, expr: &str, want: Option<&Rows>) -> Vec<Sample> {
        let exact = self
            .p
            .query(&fill(expr, self.n, self.range_ms, self.range_ms), self.t);
        assert!(!exact.is_empty(), "{title}: no series for {expr}");
        let Some(want) = want else {
            return exact;
        };
        assert_eq!(exact.len(), want.rows.len(), "{title}: rows {exact:?}");
        let secs = self.range_ms as f64 / 1000.0;
        for (labels, bytes) in &want.rows {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let got = exact
                .iter()
                .find(|s| s.has(&l))
                .unwrap_or_else(|| panic!("{title}: no row {l:?} in {exact:?}"));
            let want_v = match want.kind {
                Kind::Rate => bytes * want.scale / secs,
                Kind::Increase | Kind::Gauge => bytes * want.scale,
            };
            // Exact up to float rounding (the rate divides by the window).
            assert!(
                (got.value - want_v).abs() <= 1e-9 * want_v.abs().max(1.0),
                "{title} {l:?}: {} != {want_v} over {secs} s",
                got.value
            );
        }
        if want.kind == Kind::Rate {
            self.check_rate_unaligned(title, expr, want);
        }
        exact
    }

    /// A rate over a window starting half a scrape interval before `s0` (not on a scrape):
    /// rate x window must be the bytes sent within one scrape interval's worth at that rate.
    fn check_rate_unaligned(&self, title: &str, expr: &str, want: &Rows) {
        let w_ms = self.range_ms + 500;
        let got = self
            .p
            .query(&fill(expr, self.n, w_ms, self.range_ms), self.t);
        let w = w_ms as f64 / 1000.0;
        for (labels, bytes) in &want.rows {
            let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let v = got
                .iter()
                .find(|s| s.has(&l))
                .unwrap_or_else(|| panic!("{title}: no row {l:?} in {got:?}"))
                .value
                / want.scale;
            let slack = v * 1.1 * SCRAPE.as_secs_f64() + 1e-6;
            assert!(
                (v * w - bytes).abs() <= slack,
                "{title} {l:?}: {v} B/s over {w} s is not {bytes} B within one scrape"
            );
        }
    }
}

/// A result, short: each row's distinguishing labels and value.
fn show(got: &[Sample]) -> String {
    got.iter()
        .map(|s| {
            let l: Vec<&str> = ["namespace", "pod", "destination_class", "map", "version"]
                .iter()
                .filter_map(|k| s.labels.get(*k).map(String::as_str))
                .collect();
            format!("{}={}", l.join("/"), s.value)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Labels of a row.
fn lbl(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Every panel's title, and each of its queries' expected rows (None: checked by hand).
fn panel_expectations(
    n: &Names,
    tx: &ByClass,
    rx: &ByClass,
) -> BTreeMap<&'static str, Vec<Option<Rows>>> {
    let node = || lbl(&[("node", &n.node)]);
    let (sum_tx, sum_rx): (f64, f64) = (tx.values().sum(), rx.values().sum());
    let get = |m: &ByClass, ns: &str, c: &str| {
        m.get(&(ns.to_owned(), c.to_owned()))
            .copied()
            .unwrap_or(0.0)
    };
    let both = |m: &ByClass, ns: &str| get(m, ns, "other-zone") + get(m, ns, "internet");
    let (a_tx, b_tx) = (both(tx, &n.ns_a), both(tx, &n.ns_b));
    let (a_rx, b_rx) = (both(rx, &n.ns_a), both(rx, &n.ns_b));
    let pod = |ns: &str, pod: &str| lbl(&[("namespace", ns), ("pod", pod)]);
    let rate = |rows| {
        Some(Rows {
            kind: Kind::Rate,
            scale: 1.0,
            rows,
        })
    };
    let inc = |scale, rows| {
        Some(Rows {
            kind: Kind::Increase,
            scale,
            rows,
        })
    };
    let class_rows = || {
        tx.iter()
            .map(|((ns, c), b)| (lbl(&[("namespace", ns), ("destination_class", c)]), *b))
            .collect::<Vec<_>>()
    };
    let gauge = |rows| {
        Some(Rows {
            kind: Kind::Gauge,
            scale: 1.0,
            rows,
        })
    };
    BTreeMap::from([
        (
            "Node traffic",
            vec![rate(vec![(node(), sum_tx)]), rate(vec![(node(), sum_rx)])],
        ),
        (
            "Node bytes over the time range",
            vec![
                inc(1.0, vec![(node(), sum_tx)]),
                inc(1.0, vec![(node(), sum_rx)]),
            ],
        ),
        (
            "Top pods by transmit rate",
            vec![rate(vec![
                (pod(&n.ns_a, &n.pod_a), a_tx),
                (pod(&n.ns_b, &n.pod_b), b_tx),
            ])],
        ),
        (
            "Top pods by receive rate",
            vec![rate(vec![
                (pod(&n.ns_a, &n.pod_a), a_rx),
                (pod(&n.ns_b, &n.pod_b), b_rx),
            ])],
        ),
        (
            "Egress GB per hour, by namespace and destination class",
            vec![Some(Rows {
                kind: Kind::Rate,
                scale: 3600.0 / 1e9,
                rows: class_rows(),
            })],
        ),
        (
            "Egress GB per day, by namespace and destination class",
            vec![Some(Rows {
                kind: Kind::Rate,
                scale: 86400.0 / 1e9,
                rows: class_rows(),
            })],
        ),
        (
            "Egress to the internet over the time range (GB), by namespace",
            vec![inc(
                1e-9,
                vec![
                    (lbl(&[("namespace", &n.ns_a)]), get(tx, &n.ns_a, "internet")),
                    (lbl(&[("namespace", &n.ns_b)]), get(tx, &n.ns_b, "internet")),
                ],
            )],
        ),
        (
            "Egress to other zones over the time range (GB), by namespace",
            vec![inc(
                1e-9,
                vec![
                    (
                        lbl(&[("namespace", &n.ns_a)]),
                        get(tx, &n.ns_a, "other-zone"),
                    ),
                    (
                        lbl(&[("namespace", &n.ns_b)]),
                        get(tx, &n.ns_b, "other-zone"),
                    ),
                ],
            )],
        ),
        (
            // A: a TCP client and one UDP socket; B: the accepted TCP connection (the listener
            // is no connection), its UDP sink and its UDP sender.
            "Connections per pod",
            vec![
                gauge(vec![
                    (pod(&n.ns_a, &n.pod_a), 1.0),
                    (pod(&n.ns_b, &n.pod_b), 1.0),
                ]),
                gauge(vec![
                    (pod(&n.ns_a, &n.pod_a), 1.0),
                    (pod(&n.ns_b, &n.pod_b), 2.0),
                ]),
            ],
        ),
        (
            // A: B's address (other-zone) and 203.0.113.7; B: A's address and 203.0.113.8.
            "Remote hosts per pod",
            vec![gauge(
                [(&n.ns_a, &n.pod_a), (&n.ns_b, &n.pod_b)]
                    .into_iter()
                    .flat_map(|(ns, p)| {
                        ["other-zone", "internet"].map(|c| {
                            (
                                lbl(&[("namespace", ns), ("pod", p), ("destination_class", c)]),
                                1.0,
                            )
                        })
                    })
                    .collect(),
            )],
        ),
        // Checked by hand (check_tcp_health): A's exact counts, and its RTT within bounds.
        ("Failed TCP connects per pod, per second", vec![None]),
        ("Retransmitted TCP segments per pod, per second", vec![None]),
        ("TCP round-trip time per pod (p50, p99)", vec![None, None]),
        ("Scrape duration", vec![None]),
        (
            "Series held and dropped",
            vec![None, gauge(vec![(node(), 0.0)])],
        ),
        ("Kernel map fill", vec![None]),
        ("Untracked bytes", vec![rate(vec![(node(), 0.0)])]),
        (
            "Untracked share of all bytes",
            vec![gauge(vec![(node(), 0.0)])],
        ),
        (
            "Agents by version",
            vec![gauge(vec![(
                lbl(&[("version", env!("CARGO_PKG_VERSION"))]),
                1.0,
            )])],
        ),
    ])
}

/// The TCP health panels for the selection of A and B: A's refused connects exactly `PARTS`
/// over the window (per second), no retransmission, and no RTT sample (NaN: a refused connect
/// measures none); B has counted nothing (no series, or zeros). Then the RTT panel's queries
/// with pod C selected, whose echoes over its loopback run through the window: a quantile
/// inside the histogram's finite buckets and well under a second (on a loaded 2-core host its
/// p99 was 16 ms: the echo thread waits for a CPU), from at most one sample per socket per
/// agent interval.
fn check_tcp_health(run: &Run<'_>, title: &str, refid: usize, expr: &str, got: &[Sample]) {
    let n = run.n;
    let row = |ns: &str, pod: &str| {
        got.iter()
            .find(|s| s.has(&[("namespace", ns), ("pod", pod)]))
            .map(|s| s.value)
    };
    let a =
        row(&n.ns_a, &n.pod_a).unwrap_or_else(|| panic!("{title}: no row for pod A in {got:?}"));
    let b = row(&n.ns_b, &n.pod_b);
    let secs = run.range_ms as f64 / 1000.0;
    match (title, refid) {
        ("Failed TCP connects per pod, per second", 0) => {
            let want = PARTS as f64 / secs;
            assert!((a - want).abs() <= 1e-9 * want, "{title}: {a} != {want}");
            assert!(b.is_none_or(|b| b == 0.0), "{title}: B {b:?}");
        }
        ("Retransmitted TCP segments per pod, per second", 0) => {
            assert_eq!(a, 0.0, "{title}");
            assert!(b.is_none_or(|b| b == 0.0), "{title}: B {b:?}");
        }
        ("TCP round-trip time per pod (p50, p99)", 0 | 1) => {
            assert!(a.is_nan(), "{title} query {refid}: A {a}");
            assert!(b.is_none_or(f64::is_nan), "{title}: B {b:?}");
            let only_c = expr
                .replace("$__rate_interval", &format!("{}ms", run.range_ms))
                .replace("$node", &n.node)
                .replace("$namespace", &n.ns_c)
                .replace("$workload", &n.pod_c);
            let c = run.p.query(&only_c, run.t);
            assert_eq!(c.len(), 1, "{title} with pod C selected: {c:?}");
            let v = c[0].value;
            assert!(
                v > 0.0 && v <= 0.262_144,
                "{title} query {refid}, pod C: {v}"
            );
            eprintln!("panel {title:?} query {refid} with pod C selected: {v}");
            // 4 connections, both ends sampled, once per 250 ms interval each at most.
            let samples = run.p.query(
                &format!(
                    "sum(increase(procnetmon_tcp_rtt_seconds_count{{namespace=\"{}\"}}[{}ms]))",
                    n.ns_c, run.range_ms
                ),
                run.t,
            );
            let most = 8.0 * (secs / 0.25 + 2.0);
            assert!(
                samples.len() == 1 && samples[0].value >= 1.0 && samples[0].value <= most,
                "pod C's RTT samples over {secs} s: {samples:?}, at most {most}"
            );
        }
        _ => panic!("{title}: query {refid} has no check"),
    }
}

/// The hand-checked queries: scrape duration within the timeout, the series held at least the
/// pods', the maps the run uses partly filled.
fn check_health(title: &str, refid: usize, got: &[Sample], n: &Names) {
    let one = |got: &[Sample]| -> f64 {
        assert_eq!(got.len(), 1, "{title}: {got:?}");
        assert_eq!(got[0].labels.get("node"), Some(&n.node), "{title}: {got:?}");
        got[0].value
    };
    match (title, refid) {
        ("Scrape duration", 0) => {
            let v = one(got);
            assert!(v > 0.0 && v < SCRAPE.as_secs_f64(), "{title}: {v}");
        }
        // Two series per pod (other-zone and internet for A; internet sent, other-zone
        // received for B), and whatever else runs on this host.
        ("Series held and dropped", 0) => assert!(one(got) >= 4.0, "{title}: {got:?}"),
        ("Kernel map fill", 0) => {
            let maps: BTreeSet<&str> = got.iter().map(|s| s.labels["map"].as_str()).collect();
            assert_eq!(
                maps,
                BTreeSet::from(["CGROUP_TOTALS", "NODE_DEST_TOTALS"]),
                "{title}: {got:?}"
            );
            for s in got {
                assert!(s.value > 0.0 && s.value < 1.0, "{title}: {s:?}");
            }
        }
        _ => panic!("{title}: query {refid} has no check"),
    }
}

/// `label_values(METRIC{SELECTOR}, LABEL)` → (METRIC{SELECTOR}, LABEL).
fn label_values_args(q: &str) -> (&str, &str) {
    let inner = q
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not label_values: {q}"));
    let (sel, label) = inner.rsplit_once(',').expect("label_values(SERIES, LABEL)");
    (sel.trim(), label.trim())
}

/// The variables' own queries, as Grafana runs them (the series API's label values).
fn check_variables(run: &Run<'_>, dash: &Value) {
    let n = run.n;
    let mut seen = BTreeSet::new();
    for v in dash["templating"]["list"].as_array().expect("variables") {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().expect("name");
        let (sel, label) = label_values_args(v["definition"].as_str().expect("definition"));
        let sel = fill(sel, n, run.range_ms, run.range_ms);
        let data = run.p.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", &sel)],
        );
        let values: BTreeSet<&str> = data
            .as_array()
            .expect("values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let want: BTreeSet<&str> = match name {
            "node" => BTreeSet::from([n.node.as_str()]),
            "namespace" => BTreeSet::from([n.ns_a.as_str(), n.ns_b.as_str()]),
            "workload" => BTreeSet::from([n.pod_a.as_str(), n.pod_b.as_str()]),
            "destination_class" => BTreeSet::from(["internet", "other-zone"]),
            other => panic!("variable {other} has no check"),
        };
        // The host's own traffic may add namespaces (none here) and classes (private,
        // loopback); the selection of the pods' namespaces names exactly their pods.
        if matches!(name, "node" | "workload") {
            assert_eq!(values, want, "{name}: {sel}");
        } else {
            assert!(
                values.is_superset(&want),
                "{name}: {values:?} lacks {want:?}"
            );
        }
        eprintln!("variable {name}: {values:?}");
        seen.insert(name.to_owned());
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

/// Every `promql` fenced block line of the READMEs (comments dropped).
fn readme_examples() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for file in ["README.md", "deploy/kubernetes/README.md"] {
        let text = std::fs::read_to_string(root.join(file)).expect("README");
        let mut inside = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                inside = line.trim() == "```promql";
                continue;
            }
            if inside {
                let q = line.split(" #").next().unwrap_or("").trim();
                if !q.is_empty() && !q.starts_with('#') {
                    out.push((file.to_owned(), q.to_owned()));
                }
            }
        }
    }
    out
}

/// The README's examples over the whole run. Their windows (5 minutes to 30 days) are longer
/// than the pods' series have lived: Prometheus then extrapolates a series toward the window's
/// start by at most half a scrape interval and never past zero, so a pod's value over the
/// window lies between the measured burst (the bytes after its first scrape) and all it sent
/// (the warm-up datagram too).
fn check_readme_examples(run: &Run<'_>, warm: &(ByClass, ByClass), tx: &ByClass) {
    let n = run.n;
    let examples = readme_examples();
    assert!(examples.len() >= 6, "{examples:?}");
    let total = |k: &(String, String)| tx[k] + warm.0[k];
    let within = |what: &str, got: f64, keys: &[(String, String)]| {
        let lo: f64 = keys.iter().map(|k| tx[k]).sum();
        let hi: f64 = keys.iter().map(total).sum();
        assert!(
            got >= lo * (1.0 - 1e-9) && got <= hi * (1.0 + 1e-9),
            "{what}: {got} not within [{lo}, {hi}]"
        );
    };
    let key = |ns: &str, c: &str| (ns.to_owned(), c.to_owned());
    for (file, q) in examples {
        let got = run.p.query(&q, run.t);
        assert!(!got.is_empty(), "{file}: no series for {q}");
        eprintln!("{file} example {q:?}: {}", show(&got));
        let row = |want: &[(&str, &str)]| {
            got.iter()
                .find(|s| s.has(want))
                .unwrap_or_else(|| panic!("{file}: {q}: no row {want:?} in {got:?}"))
                .value
        };
        match q.as_str() {
            "sum by (namespace, pod, destination_class) (rate(procnetmon_network_transmit_bytes_total[5m]))" => {
                for (ns, p, c) in [
                    (&n.ns_a, &n.pod_a, "other-zone"),
                    (&n.ns_a, &n.pod_a, "internet"),
                    (&n.ns_b, &n.pod_b, "internet"),
                ] {
                    let v = row(&[("namespace", ns), ("pod", p), ("destination_class", c)]);
                    within(&q, v * 300.0, &[key(ns, c)]);
                }
            }
            "sum by (namespace) (rate(procnetmon_network_transmit_bytes_total{destination_class=\"other-zone\"}[1h])) * 3600 / 1e9" =>
            {
                within(
                    &q,
                    row(&[("namespace", &n.ns_a)]) * 1e9,
                    &[key(&n.ns_a, "other-zone")],
                );
            }
            "sum(increase(procnetmon_network_transmit_bytes_total{destination_class=\"internet\"}[30d])) / 1e9" =>
            {
                // The whole node: the host's own internet traffic adds to the pods'.
                let pods = tx[&key(&n.ns_a, "internet")] + tx[&key(&n.ns_b, "internet")];
                assert!(row(&[]) * 1e9 >= pods * (1.0 - 1e-9), "{q}: {got:?}");
            }
            "topk(10, sum by (namespace, pod) (increase(procnetmon_network_transmit_bytes_total{destination_class=\"internet\"}[1d]))) / 1e9" =>
            {
                within(
                    &q,
                    row(&[("pod", &n.pod_a)]) * 1e9,
                    &[key(&n.ns_a, "internet")],
                );
                within(
                    &q,
                    row(&[("pod", &n.pod_b)]) * 1e9,
                    &[key(&n.ns_b, "internet")],
                );
            }
            "sum by (namespace, pod) (procnetmon_network_connections{protocol=\"tcp\"})" => {
                assert_eq!(row(&[("pod", &n.pod_a)]), 1.0, "{q}");
                assert_eq!(row(&[("pod", &n.pod_b)]), 1.0, "{q}");
            }
            "count by (node) (procnetmon_build_info)" => {
                assert_eq!(row(&[("node", &n.node)]), 1.0, "{q}");
            }
            // A's failed connects: the window's, up to the warm-up's one.
            "sum by (namespace, pod) (rate(procnetmon_tcp_connect_failures_total[5m]))" => {
                let v = row(&[("pod", &n.pod_a)]) * 300.0;
                let (lo, hi) = (PARTS as f64, (PARTS + 1) as f64);
                assert!(
                    v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9),
                    "{q}: {v} not within [{lo}, {hi}]"
                );
            }
            "sum by (namespace, pod) (rate(procnetmon_tcp_retransmitted_segments_total[5m]))" => {
                assert_eq!(row(&[("pod", &n.pod_a)]), 0.0, "{q}");
            }
            "histogram_quantile(0.99, sum by (namespace, pod, le) (rate(procnetmon_tcp_rtt_seconds_bucket[5m])))" =>
            {
                let v = row(&[("pod", &n.pod_c)]);
                assert!(v > 0.0 && v <= 0.262_144, "{q}: {v}");
            }
            other => panic!("{file}: the example {other:?} has no check here: add one"),
        }
    }
}

/// The rules loaded into the real Prometheus evaluate without error against the real series,
/// and none fires or is pending: the run is healthy and its traffic tiny.
fn check_rules_on_real_series(p: &Prometheus) {
    let groups = p.api("/api/v1/rules", &[]);
    let mut alerts = BTreeSet::new();
    for g in groups["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["name"].as_str().expect("name");
            assert_eq!(r["health"], "ok", "{name}: {r}");
            assert!(
                r["lastError"].as_str().unwrap_or_default().is_empty(),
                "{name}: {r}"
            );
            assert_eq!(r["state"], "inactive", "{name}: {r}");
            alerts.insert(name.to_owned());
        }
    }
    assert_eq!(alerts.len(), 8, "{alerts:?}");
    let active = p.api("/api/v1/alerts", &[]);
    assert_eq!(
        active["alerts"].as_array().map(Vec::len),
        Some(0),
        "{active}"
    );
}

/// The two pods and their processes: A sends UDP to B (other-zone) and to the internet and
/// holds a TCP connection to B; B receives, listens and sends UDP to the internet.
/// Fields drop in order: the processes, then their cgroups, then the namespaces.
struct Pods {
    send_a: Proc,
    send_b: Proc,
    /// A's `tcp-connect`: refused connects on demand, to where nobody listens in B.
    connect_a: Proc,
    closed_b: String,
    _procs: Vec<Proc>,
    _cgroups: (Cgroup, Cgroup),
    _veth: Veth,
    _ns: (Netns, Netns),
}

impl Pods {
    /// One connect of A to B's closed port, refused.
    fn refused_connect(&mut self) {
        let line = format!("{} 1", self.closed_b);
        self.connect_a.send_line(&line);
        self.connect_a
            .expect_line("ok 0 refused 1 timedout 0 other 0");
    }
}

/// Pod C: a `tcp-echo` and a `tcp-pingpong` of 4 connections to it over the loopback of its
/// own namespace, rounds of 16 bytes there and back until the test ends. Started once the
/// agent runs (its sockets must be created under it to be sampled).
struct PodC {
    _procs: Vec<Proc>,
    _cgroup: Cgroup,
    _ns: Netns,
}

fn start_pod_c(node: &mut KubeNode, n: &Names) -> PodC {
    let cg = node.container(&n.ns_c, &n.pod_c, "relay");
    let ns = Netns::new(false);
    let echo = Proc::peer(&["tcp-echo", "127.0.0.1:7975"], Some(&cg), Some(&ns));
    echo.expect_line("ready");
    let pingpong = Proc::peer(
        &["tcp-pingpong", "127.0.0.1:7975", "4"],
        Some(&cg),
        Some(&ns),
    );
    pingpong.expect_line("ready");
    PodC {
        _procs: vec![pingpong, echo],
        _cgroup: cg,
        _ns: ns,
    }
}

fn start_pods(node: &mut KubeNode, n: &Names) -> (Pods, String) {
    let cg_a = node.container(&n.ns_a, &n.pod_a, "nginx");
    let cg_b = node.container(&n.ns_b, &n.pod_b, "worker");
    let (na, nb) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&na, "eth0", &nb, "eth0", 97);
    na.ip_batch(&[format!("route add default via {} dev eth0", v.ip_b)]);
    nb.ip_batch(&[format!("route add default via {} dev eth0", v.ip_a)]);
    let (udp_b, tcp_b) = (format!("{}:7971", v.ip_b), format!("{}:7972", v.ip_b));
    let sink = Proc::peer(&["udp-recv", &udp_b, "1000000"], Some(&cg_b), Some(&nb));
    sink.expect_line("ready");
    let server = Proc::peer(&["tcp-server", &tcp_b], Some(&cg_b), Some(&nb));
    server.expect_line("ready");
    let send_b = Proc::peer(
        &[
            "udp-multi",
            &B_SIZE.to_string(),
            &format!("{NET_B}={B_TO_NET}"),
        ],
        Some(&cg_b),
        Some(&nb),
    );
    send_b.expect_line("ready");
    let send_a = Proc::peer(
        &[
            "udp-multi",
            &A_SIZE.to_string(),
            &format!("{udp_b}={A_TO_B}"),
            &format!("{NET_A}={A_TO_NET}"),
        ],
        Some(&cg_a),
        Some(&na),
    );
    send_a.expect_line("ready");
    // Connected and then idle (it waits for a line that never comes): no bytes in the window.
    let client = Proc::peer(
        &["tcp-client", &tcp_b, "0", "0", "0", "1", "wait"],
        Some(&cg_a),
        Some(&na),
    );
    client.expect_line("connected");
    let connect_a = Proc::peer(&["tcp-connect"], Some(&cg_a), Some(&na));
    connect_a.expect_line("ready");
    let class = format!("other-zone={}.0/24", v.ip_b.rsplit_once('.').expect("ip").0);
    let pods = Pods {
        send_a,
        send_b,
        connect_a,
        closed_b: format!("{}:7973", v.ip_b),
        _procs: vec![sink, server, client],
        _cgroups: (cg_a, cg_b),
        _veth: v,
        _ns: (na, nb),
    };
    (pods, class)
}

#[test]
fn dashboard_and_alerts_on_a_real_prometheus() {
    if skip_unless_root() {
        return;
    }
    let t0 = Instant::now();
    let mut node = KubeNode::new();
    let tag = unique("");
    let n = Names {
        node: format!("pnm-node-{tag}"),
        ns_a: format!("shop-{tag}"),
        pod_a: format!("web-{tag}"),
        ns_b: format!("batch-{tag}"),
        pod_b: format!("report-{tag}"),
        ns_c: format!("chat-{tag}"),
        pod_c: format!("relay-{tag}"),
    };
    let (mut pods, class) = start_pods(&mut node, &n);
    let agent = format!("127.0.0.1:{}", free_port());
    let host_proc = node.host_proc();
    let mon = Monitor::start(&[
        "--all",
        "--metrics-addr",
        &agent,
        "--host-proc",
        &host_proc,
        "--class",
        &class,
        "--destinations",
        "--interval",
        "250ms",
    ]);
    let _pod_c = start_pod_c(&mut node, &n);
    let p = Prometheus::start(&agent, &n.node);
    let build = p.api("/api/v1/status/buildinfo", &[]);
    assert!(
        build["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.")),
        "Prometheus {build}: the exact windows assume 2.x, which selects a range's left end"
    );

    // Warm-up: one datagram to each address, so every series exists before s0.
    pods.send_a.send_line("1");
    pods.send_a.expect_line("done");
    pods.send_b.send_line("1");
    pods.send_b.expect_line("done");
    pods.refused_connect();
    let warm = expected(&n, (1, 1, 1), 1);
    let s0 = scrape_holding(&p, &n, &warm, false);
    // The measured bursts, each seen by a scrape before the next.
    let mut t = s0;
    for part in 1..=PARTS {
        pods.send_a.send_line("go");
        pods.send_a.expect_line("done");
        pods.send_b.send_line("go");
        pods.send_b.expect_line("done");
        pods.refused_connect();
        let sent = expected(
            &n,
            (1 + part * A_TO_B, 1 + part * A_TO_NET, 1 + part * B_TO_NET),
            1 + part,
        );
        t = scrape_holding(&p, &n, &sent, part == PARTS);
    }
    let (tx, rx) = expected(
        &n,
        (PARTS * A_TO_B, PARTS * A_TO_NET, PARTS * B_TO_NET),
        PARTS,
    );
    let range_ms = ((t - s0) * 1000.0).round() as i64;
    eprintln!(
        "fleet_prometheus: s0 {s0:.3}, T {t:.3}, window {range_ms} ms, set up and traffic in {:?}",
        t0.elapsed()
    );
    let run = Run {
        p: &p,
        n: &n,
        t,
        range_ms,
    };

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/procnetmon2.json"),
        )
        .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let mut want = panel_expectations(&n, &tx, &rx);
    let mut queries = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("title");
        let expects = want
            .remove(title)
            .unwrap_or_else(|| panic!("panel {title:?} has no expectation in this test: add one"));
        let targets = panel["targets"].as_array().expect("targets");
        assert_eq!(targets.len(), expects.len(), "{title}: queries");
        for (i, (target, exp)) in targets.iter().zip(&expects).enumerate() {
            let expr = target["expr"].as_str().expect("expr");
            let got = run.check(title, expr, exp.as_ref());
            if exp.is_none() && title.contains("TCP") {
                check_tcp_health(&run, title, i, expr, &got);
            } else if exp.is_none() {
                check_health(title, i, &got, &n);
            }
            eprintln!("panel {title:?} query {i}: {}", show(&got));
            queries += 1;
        }
    }
    assert!(
        want.is_empty(),
        "panels gone from the dashboard: {:?}",
        want.keys()
    );
    check_variables(&run, &dash);
    check_readme_examples(&run, &warm, &tx);
    check_rules_on_real_series(&p);
    eprintln!(
        "fleet_prometheus: {queries} panel queries checked in {:?}",
        t0.elapsed()
    );
    drop(p);
    let (status, _, err) = mon.stop();
    assert!(status.success(), "{err:?}");
}
