//! What ships for Prometheus and Grafana, checked without a cluster: the dashboard is a
//! Grafana 10+ model whose queries name only series the agent exposes; the ConfigMap and the
//! PrometheusRule in deploy/kubernetes hold exactly the dashboard and the rules file (written by
//! scripts/gen-deploy); `promtool check rules` accepts the rules and `promtool test rules` runs a
//! firing and a silent case of every alert. The queries themselves are run against a real
//! Prometheus scraping a real agent by integration/tests/fleet_prometheus.rs.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use procnetmon2::{
    metrics::{MapFill, MetricsRegistry, SelfStats, TargetInfo, WorkloadGauges, WorkloadKey},
    model::{Counters, RttHistogram, TcpHealth, Traffic},
};
use serde::Deserialize as _;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn yaml(rel: &str) -> Value {
    let text = read(rel);
    Value::deserialize(serde_norway::Deserializer::from_str(&text))
        .unwrap_or_else(|e| panic!("parse {rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/procnetmon2.json")).expect("dashboard JSON")
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Variables Grafana itself provides.
const BUILTIN_VARIABLES: [&str; 4] = ["__rate_interval", "__range", "__interval", "__all"];

/// `$name` references in a query.
fn variables_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    for (i, _) in expr.match_indices('$') {
        let name: String = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
            .map(|c| char::from(*c))
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Series names (`procnetmon_…`) a query reads.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in expr.match_indices("procnetmon_") {
        let name: String = expr[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// An agent's exposition with every family populated: a Kubernetes workload with classes,
/// connections, remote hosts and TCP health, a `-p` target, self-statistics.
fn full_exposition() -> String {
    let reg = MetricsRegistry::default();
    let web = WorkloadKey::kubernetes("shop", "web-1", "nginx");
    let c = Counters {
        bytes_in: 10,
        bytes_out: 20,
        packets_in: 1,
        packets_out: 2,
    };
    let t = Traffic {
        tcp: c,
        ..Traffic::default()
    };
    reg.update_workload_classes(&web, &[("internet".into(), t)]);
    reg.set_workload_gauges(
        &web,
        WorkloadGauges {
            connections: Some((1, 1)),
            remote_hosts: vec![(Some("internet".into()), 1)],
        },
    );
    let mut rtt = RttHistogram {
        sum_us: 700,
        ..RttHistogram::default()
    };
    rtt.buckets[10] = 1;
    reg.update_workload_health(
        &web,
        &TcpHealth {
            connect_failures: 1,
            retransmitted_segments: 1,
            rtt,
        },
    );
    reg.set_targets(vec![TargetInfo {
        pid: 1,
        comm: "init".into(),
        labels: Vec::new(),
    }]);
    reg.set_self_stats(SelfStats {
        tracked_sockets: 1,
        untracked_bytes: 1,
        maps: vec![MapFill {
            map: "CGROUP_TOTALS".into(),
            entries: 1,
            max_entries: 2,
        }],
        dns_unmatched: 1,
        dns_dropped: 1,
    });
    reg.encode().expect("encode")
}

/// Sample names in an exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn dashboard_is_a_grafana_10_model() {
    let d = dashboard();
    // Grafana 10.0 writes schemaVersion 38; older Grafanas migrate newer models badly.
    let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(schema >= 38, "schemaVersion {schema}");
    for key in ["uid", "title"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "{key}");
    }
    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let by_name: BTreeMap<&str, &Value> = vars
        .iter()
        .map(|v| (v["name"].as_str().expect("variable name"), v))
        .collect();
    let ds = by_name.get("datasource").expect("a datasource variable");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    for name in ["node", "namespace", "workload", "destination_class"] {
        let v = by_name
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        // "All" must match series without the label too (non-Kubernetes cgroups, no classes).
        assert_eq!(v["allValue"], ".*", "{name}");
        assert!(v["includeAll"].as_bool() == Some(true), "{name}");
        let q = v["definition"].as_str().expect("definition");
        assert!(q.starts_with("label_values("), "{name}: {q}");
        assert_eq!(
            v["query"]["query"], q,
            "{name}: query and definition differ"
        );
    }
    let exposed = sample_names(&full_exposition());
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    let all = panels(&d);
    assert!(all.len() > 10, "{} panels", all.len());
    for p in all {
        let title = p["title"].as_str().expect("title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "{title}: id repeats"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: gridPos {g}");
        for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
            assert!(
                cells.insert(cell),
                "{title} overlaps another panel at {cell:?}"
            );
        }
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat", "bargauge", "table", "gauge"]
                .contains(&p["type"].as_str().expect("type")),
            "{title}: type {}",
            p["type"]
        );
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}: description"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                refs.insert(t["refId"].as_str().expect("refId")),
                "{title}: refId repeats"
            );
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().expect("expr");
            for v in variables_in(expr) {
                assert!(
                    by_name.contains_key(v.as_str()) || BUILTIN_VARIABLES.contains(&v.as_str()),
                    "{title}: ${v} is no variable"
                );
            }
            for m in metrics_in(expr) {
                assert!(exposed.contains(&m), "{title}: the agent exposes no {m}");
            }
        }
    }
}

#[test]
fn configmap_holds_the_dashboard() {
    let cm = yaml("deploy/kubernetes/grafana-dashboard.yaml");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(
        cm["metadata"]["labels"]["grafana_dashboard"], "1",
        "the label Grafana's dashboard sidecar looks for (a string)"
    );
    assert_eq!(cm["metadata"]["namespace"], "procnetmon");
    let embedded: Value = serde_json::from_str(
        cm["data"]["procnetmon2.json"]
            .as_str()
            .expect("data.procnetmon2.json"),
    )
    .expect("embedded JSON");
    assert!(
        embedded == dashboard(),
        "deploy/kubernetes/grafana-dashboard.yaml is stale: run scripts/gen-deploy"
    );
}

#[test]
fn prometheusrule_holds_the_rules_file() {
    let pr = yaml("deploy/kubernetes/prometheusrule.yaml");
    assert_eq!(pr["kind"], "PrometheusRule");
    assert_eq!(pr["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(pr["metadata"]["namespace"], "procnetmon");
    let rules = yaml("deploy/prometheus/procnetmon2-rules.yaml");
    assert!(
        pr["spec"]["groups"] == rules["groups"],
        "deploy/kubernetes/prometheusrule.yaml is stale: run scripts/gen-deploy"
    );
}

/// Every alert: a severity, a `for`, and a summary, description and runbook.
#[test]
fn every_alert_is_documented() {
    let rules = yaml("deploy/prometheus/procnetmon2-rules.yaml");
    let mut n = 0;
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("alerting rules only");
            n += 1;
            assert!(r["labels"]["severity"].is_string(), "{name}: severity");
            assert!(r["for"].is_string(), "{name}: for");
            for a in ["summary", "description", "runbook"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| s.len() > 20),
                    "{name}: annotation {a}"
                );
            }
            assert!(
                r["expr"]
                    .as_str()
                    .expect("expr")
                    .contains("job=\"procnetmon2\""),
                "{name}: selects job=\"procnetmon2\""
            );
        }
    }
    assert_eq!(n, 8);
}

/// Fails, naming the fix, without `promtool` (scripts/setup installs it): a missing tool must
/// not pass as a skip.
fn need_promtool() {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok(),
        "promtool is missing: scripts/setup installs Debian's prometheus"
    );
}

fn promtool_ok(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_checks_and_tests_the_rules() {
    need_promtool();
    let dir = repo().join("deploy/prometheus");
    promtool_ok(&dir, &["check", "rules", "procnetmon2-rules.yaml"]);
    promtool_ok(&dir, &["test", "rules", "procnetmon2-rules.test.yaml"]);
    // Every alert has a case where it fires and one where it stays silent.
    let rules = yaml("deploy/prometheus/procnetmon2-rules.yaml");
    let tests = yaml("deploy/prometheus/procnetmon2-rules.test.yaml");
    let mut cases: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            let e = cases
                .entry(a["alertname"].as_str().expect("alertname"))
                .or_default();
            if a["exp_alerts"].as_array().is_some_and(|v| !v.is_empty()) {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
    }
    for g in rules["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            let name = r["alert"].as_str().expect("alert");
            let (firing, silent) = cases.get(name).copied().unwrap_or_default();
            assert!(
                firing > 0 && silent > 0,
                "{name}: {firing} firing, {silent} silent cases"
            );
        }
    }
}

/// The metric and label names against Prometheus' naming conventions, and the one rule the
/// ecosystem adds: never cAdvisor's `container_network_*` (the kubernetes-mixin dashboards would
/// count the same bytes twice).
#[test]
fn names_follow_prometheus_conventions() {
    let text = full_exposition();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = l.split_once(' ').expect("TYPE line");
        types.insert(name.to_owned(), kind.to_owned());
    }
    assert!(types.len() >= 13, "{types:?}");
    for (family, kind) in &types {
        assert!(
            family.starts_with("procnetmon_"),
            "{family}: one prefix for the application"
        );
        assert!(
            family.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
            "{family}: snake_case"
        );
        assert!(!family.starts_with("container_network_"), "{family}");
        match kind.as_str() {
            // OpenMetrics names the counter family without _total; the samples carry it.
            "counter" => assert!(!family.ends_with("_total"), "{family}"),
            "gauge" => assert!(
                !family.ends_with("_total"),
                "{family}: a gauge named like a counter"
            ),
            // A histogram in its base unit (`procnetmon_tcp_rtt_seconds`).
            "histogram" => assert!(
                family.ends_with("_seconds") && text.contains(&format!("# UNIT {family} seconds")),
                "{family}: a histogram named in its base unit"
            ),
            k => panic!("{family}: unexpected type {k}"),
        }
        // Byte counts are named in bytes (the base unit); ratios end in _ratio.
        if text.contains(&format!("# UNIT {family} bytes")) {
            assert!(family.ends_with("_bytes"), "{family}");
        }
    }
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((_, labels)) = l.split_once('{') else {
            continue;
        };
        let labels = labels.rsplit_once('}').expect("closing brace").0;
        for pair in labels.split("\",") {
            let name = pair.split_once('=').expect("label=value").0;
            assert!(
                !name.starts_with("__") && name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{l}: label {name}"
            );
            // job, instance and le/quantile belong to Prometheus; `le` only on a histogram's
            // buckets.
            let bucket = l.split_once('{').is_some_and(|(n, _)| {
                n.strip_suffix("_bucket")
                    .is_some_and(|f| types.get(f).is_some_and(|k| k == "histogram"))
            });
            assert!(
                !["job", "instance", "quantile"].contains(&name) && (name != "le" || bucket),
                "{l}"
            );
        }
    }
}
