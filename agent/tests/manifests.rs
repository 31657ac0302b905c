//! Parses `deploy/kubernetes/*.yaml` and checks the fields the binary relies on: its arguments,
//! the metrics port as seen by the container, the probes and the scrapers, the host mounts, and
//! the privileges of each profile. Runs unprivileged; needs no cluster.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use procnetmon2::{config::parse_metrics_addr, host::identity::MetadataRoots};
use serde::Deserialize as _;
use serde_json::Value;

/// The capabilities the least-privilege profile adds, and no others.
const LEAST_PRIVILEGE_CAPS: [&str; 7] = [
    "BPF",
    "PERFMON",
    "NET_ADMIN",
    "SYS_ADMIN",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYS_RESOURCE",
];

/// Host paths every node has: only these may use hostPath type `Directory` (which stops the
/// pod where the path is missing).
const ALWAYS_PRESENT: [&str; 2] = ["/proc", "/sys/fs/cgroup"];

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every YAML document of one manifest file, as JSON values.
fn load(file: &str) -> Vec<Value> {
    let path = deploy_dir().join(file);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("parse {file}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// The single document of `file`, checked to be of `kind`.
fn load_one(file: &str, kind: &str) -> Value {
    let docs = load(file);
    assert_eq!(docs.len(), 1, "{file}: expected one document");
    let doc = docs.into_iter().next().expect("one document");
    assert_eq!(doc["kind"], kind, "{file}: kind");
    doc
}

/// The value at JSON pointer `ptr`, or a panic naming it.
fn at<'a>(v: &'a Value, ptr: &str) -> &'a Value {
    v.pointer(ptr)
        .unwrap_or_else(|| panic!("missing {ptr} in {v:#}"))
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    at(v, ptr)
        .as_str()
        .unwrap_or_else(|| panic!("{ptr} is not a string"))
}

fn array_at<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    at(v, ptr)
        .as_array()
        .unwrap_or_else(|| panic!("{ptr} is not a list"))
}

/// The namespace `namespace.yaml` creates.
fn namespace() -> String {
    str_at(&load_one("namespace.yaml", "Namespace"), "/metadata/name").to_owned()
}

/// Every `key: value` of `sub` is in `sup` (label selectors).
fn is_subset(sub: &Value, sup: &Value) -> bool {
    let (Some(sub), Some(sup)) = (sub.as_object(), sup.as_object()) else {
        return false;
    };
    !sub.is_empty() && sub.iter().all(|(k, v)| sup.get(k) == Some(v))
}

/// The value following `flag` in `args`.
fn flag_value<'a>(args: &'a [Value], flag: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("args lack {flag}: {args:?}"));
    args.get(i + 1)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{flag} has no value"))
}

/// A probe or scrape port, by name or number, names the metrics port.
fn names_port(port: &Value, number: u16) -> bool {
    port == "metrics" || port.as_u64() == Some(u64::from(number))
}

/// The pod template's mount at `mount_path` and the host path behind it.
fn host_mount<'a>(pod: &'a Value, mount_path: &str) -> (&'a Value, &'a str) {
    let mount = array_at(pod, "/containers/0/volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == mount_path)
        .unwrap_or_else(|| panic!("no volumeMount at {mount_path}"));
    let name = str_at(mount, "/name");
    let volume = array_at(pod, "/volumes")
        .iter()
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no volume {name}"));
    (mount, str_at(volume, "/hostPath/path"))
}

/// Checks what both `DaemonSet` profiles share; returns the template and the metrics port.
fn check_daemonset(file: &str) -> (Value, u16) {
    let ds = load_one(file, "DaemonSet");
    assert_eq!(ds["apiVersion"], "apps/v1", "{file}");
    assert_eq!(str_at(&ds, "/metadata/namespace"), namespace(), "{file}");
    let template = at(&ds, "/spec/template").clone();
    assert!(
        is_subset(
            at(&ds, "/spec/selector/matchLabels"),
            at(&template, "/metadata/labels")
        ),
        "{file}: selector does not match the pod labels"
    );
    let pod = at(&template, "/spec");
    assert_eq!(pod["hostPID"], true, "{file}: hostPID");
    assert_eq!(
        pod["priorityClassName"], "system-node-critical",
        "{file}: priorityClassName"
    );
    let tolerates_all = array_at(pod, "/tolerations")
        .iter()
        .any(|t| t["operator"] == "Exists" && t.get("key").is_none() && t.get("effect").is_none());
    assert!(tolerates_all, "{file}: no toleration of every taint");

    let containers = array_at(pod, "/containers");
    assert_eq!(containers.len(), 1, "{file}: one container");
    // The image scripts/package builds and tags (ghcr.io/bkohler/procnetmon2:<crate version>).
    assert_eq!(
        str_at(pod, "/containers/0/image"),
        format!("ghcr.io/bkohler/procnetmon2:{}", env!("CARGO_PKG_VERSION")),
        "{file}: image"
    );
    let args = array_at(pod, "/containers/0/args");
    assert!(args.iter().any(|a| a == "--all"), "{file}: --all");
    let addr = parse_metrics_addr(flag_value(args, "--metrics-addr"))
        .unwrap_or_else(|e| panic!("{file}: --metrics-addr: {e}"));
    assert!(
        addr.ip().is_unspecified(),
        "{file}: {addr} is not reachable by probes and scrapers"
    );
    let port = addr.port();
    assert_eq!(flag_value(args, "--host-proc"), "/host/proc", "{file}");

    let metrics_port = array_at(pod, "/containers/0/ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .unwrap_or_else(|| panic!("{file}: no container port named metrics"));
    assert_eq!(
        metrics_port["containerPort"].as_u64(),
        Some(u64::from(port)),
        "{file}: containerPort vs --metrics-addr"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = at(pod, &format!("/containers/0/{probe}/httpGet"));
        assert_eq!(get["path"], "/healthz", "{file}: {probe} path");
        assert!(names_port(&get["port"], port), "{file}: {probe} port");
    }

    let (proc_mount, proc_host) = host_mount(pod, "/host/proc");
    assert_eq!(proc_host, "/proc", "{file}: /host/proc source");
    assert_eq!(proc_mount["readOnly"], true, "{file}: /host/proc read-only");
    let (_, cgroup_host) = host_mount(pod, "/sys/fs/cgroup");
    assert_eq!(cgroup_host, "/sys/fs/cgroup", "{file}: cgroup source");
    let (_, state_host) = host_mount(pod, procnetmon2::host::lifecycle::STATE_DIR);
    assert_eq!(
        state_host,
        procnetmon2::host::lifecycle::STATE_DIR,
        "{file}: state dir"
    );

    check_runtime_state_mounts(file, pod, flag_value(args, "--host-proc"));
    check_classes(file, pod, flag_value(args, "--classes"));
    check_no_pod_stoppers(file, pod);

    let annotations = at(&template, "/metadata/annotations");
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{file}");
    assert_eq!(
        annotations["prometheus.io/port"],
        port.to_string(),
        "{file}: scrape port annotation"
    );
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{file}");
    (template, port)
}

/// `--classes FILE` is a key of the classes ConfigMap, mounted read-only at FILE's directory,
/// and the agent accepts its content (built-ins at least: the dashboard's cost view reads
/// `destination_class`).
fn check_classes(file: &str, pod: &Value, classes: &str) {
    let path = Path::new(classes);
    let dir = path.parent().expect("a directory").to_str().expect("utf8");
    let key = path.file_name().expect("a file").to_str().expect("utf8");
    let mount = array_at(pod, "/containers/0/volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("{file}: nothing mounted at {dir}"));
    assert_eq!(mount["readOnly"], true, "{file}: {dir} read-only");
    let volume = array_at(pod, "/volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{file}: no volume {}", mount["name"]));
    let cm = load_one("configmap-classes.yaml", "ConfigMap");
    assert_eq!(
        volume["configMap"]["name"], cm["metadata"]["name"],
        "{file}"
    );
    assert_eq!(str_at(&cm, "/metadata/namespace"), namespace());
    let text = str_at(&cm, &format!("/data/{key}"));
    // One file per call: the tests run on parallel threads of one process.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = std::env::temp_dir().join(format!("pnm-classes-{}-{n}.yaml", std::process::id()));
    std::fs::write(&tmp, text).expect("write");
    let set = procnetmon2::classes::ClassSet::from_flags(&[], Some(&tmp));
    let _ = std::fs::remove_file(&tmp);
    let set = set.unwrap_or_else(|e| panic!("configmap-classes.yaml: {e}"));
    assert!(set.names.iter().any(|n| n == "internet"), "{:?}", set.names);
}

/// Each runtime's state directory, where the agent looks for it under the `--host-proc`
/// parent layout ([`MetadataRoots::under`]), is mounted read-only from the same host path,
/// and nothing broader (a runtime's API socket lives next to its state).
fn check_runtime_state_mounts(file: &str, pod: &Value, host_proc: &str) {
    let host_root = Path::new(host_proc)
        .parent()
        .unwrap_or_else(|| panic!("{file}: --host-proc {host_proc} has no parent"));
    let roots = MetadataRoots::under(host_root);
    let mounts = array_at(pod, "/containers/0/volumeMounts");
    for (runtime, dirs) in [
        ("containerd", &roots.containerd),
        ("CRI-O", &roots.crio),
        ("docker", &roots.docker),
    ] {
        let covering = dirs.iter().find_map(|dir| {
            mounts.iter().find(|m| {
                m["mountPath"]
                    .as_str()
                    .is_some_and(|p| dir.starts_with(p) && Path::new(p) != host_root)
            })
        });
        let mount = covering
            .unwrap_or_else(|| panic!("{file}: no mount covers {runtime}'s state ({dirs:?})"));
        let mount_path = str_at(mount, "/mountPath");
        let (mount, host) = host_mount(pod, mount_path);
        assert_eq!(mount["readOnly"], true, "{file}: {mount_path} read-only");
        let rel = Path::new(mount_path)
            .strip_prefix(host_root)
            .expect("under the host root");
        assert_eq!(
            Path::new(host),
            Path::new("/").join(rel),
            "{file}: {mount_path} must show the host's own directory"
        );
        for broad in [
            "/",
            "/run",
            "/var/run",
            "/run/containerd",
            "/run/crio",
            "/var/lib",
        ] {
            assert_ne!(host, broad, "{file}: {mount_path} mounts too much");
        }
    }
}

/// Nothing that keeps the pod from starting on an ordinary node: no mount propagation (which
/// needs a shared or slave host mount), no bpffs, and hostPath type `Directory` only for
/// paths every node has.
fn check_no_pod_stoppers(file: &str, pod: &Value) {
    for m in array_at(pod, "/containers/0/volumeMounts") {
        assert!(
            m.get("mountPropagation").is_none() || m["mountPropagation"] == "None",
            "{file}: {m} needs a shared host mount"
        );
        assert_ne!(m["mountPath"], "/sys/fs/bpf", "{file}: bpffs mount");
    }
    for v in array_at(pod, "/volumes") {
        let Some(host) = v.pointer("/hostPath/path").and_then(Value::as_str) else {
            continue;
        };
        let kind = v
            .pointer("/hostPath/type")
            .and_then(Value::as_str)
            .unwrap_or("");
        match kind {
            "DirectoryOrCreate" => {}
            "Directory" => assert!(
                ALWAYS_PRESENT.contains(&host),
                "{file}: {host} may be missing on a node: use DirectoryOrCreate"
            ),
            other => panic!("{file}: hostPath {host} has type {other:?}"),
        }
    }
}

#[test]
fn privileged_daemonset() {
    let (template, _) = check_daemonset("daemonset-privileged.yaml");
    assert_eq!(
        template["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
}

#[test]
fn least_privilege_daemonset() {
    let (template, _) = check_daemonset("daemonset-least-privilege.yaml");
    let sc = at(&template, "/spec/containers/0/securityContext");
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let caps = |which: &str| -> BTreeSet<&str> {
        array_at(sc, &format!("/capabilities/{which}"))
            .iter()
            .map(|c| c.as_str().expect("capability name"))
            .collect()
    };
    assert_eq!(caps("drop"), BTreeSet::from(["ALL"]));
    assert_eq!(caps("add"), BTreeSet::from(LEAST_PRIVILEGE_CAPS));
    assert_eq!(
        array_at(sc, "/capabilities/add").len(),
        LEAST_PRIVILEGE_CAPS.len()
    );
}

#[test]
fn profiles_agree_on_port() {
    let (_, a) = check_daemonset("daemonset-privileged.yaml");
    let (_, b) = check_daemonset("daemonset-least-privilege.yaml");
    assert_eq!(a, b);
}

#[test]
fn scrapers_target_metrics_port() {
    let (template, port) = check_daemonset("daemonset-least-privilege.yaml");
    let ns = namespace();

    let svc = load_one("service.yaml", "Service");
    assert_eq!(str_at(&svc, "/metadata/namespace"), ns);
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    assert!(is_subset(
        at(&svc, "/spec/selector"),
        at(&template, "/metadata/labels")
    ));
    let svc_port = array_at(&svc, "/spec/ports")
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("service port named metrics");
    assert_eq!(svc_port["port"].as_u64(), Some(u64::from(port)));
    assert!(names_port(&svc_port["targetPort"], port));

    let sm = load_one("servicemonitor.yaml", "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(str_at(&sm, "/metadata/namespace"), ns);
    assert!(is_subset(
        at(&sm, "/spec/selector/matchLabels"),
        at(&svc, "/metadata/labels")
    ));
    assert!(
        array_at(&sm, "/spec/namespaceSelector/matchNames")
            .iter()
            .any(|n| n == ns.as_str())
    );
    let endpoints = array_at(&sm, "/spec/endpoints");
    assert!(!endpoints.is_empty());
    for ep in endpoints {
        assert_eq!(ep["port"], "metrics");
        assert_eq!(ep["path"], "/metrics");
        // The series carry the workload's namespace/pod/container labels.
        assert_eq!(ep["honorLabels"], true);
    }
}

/// Recording is opt-in: neither profile records; `recording-patch.yaml` adds `--record` on a
/// hostPath (with retention) to the profile's own arguments, and leaves the securityContext
/// (a read-only root filesystem) alone. Its arguments are a valid command line.
#[test]
fn recording_is_opt_in_and_patches_either_profile() {
    let patch = load_one_untyped("recording-patch.yaml");
    let container = &array_at(&patch, "/spec/template/spec/containers")[0];
    assert!(
        container.get("securityContext").is_none(),
        "the patch keeps the profile's"
    );
    let patched: Vec<&str> = array_at(container, "/args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect();
    for file in [
        "daemonset-privileged.yaml",
        "daemonset-least-privilege.yaml",
    ] {
        let (template, _) = check_daemonset(file);
        let base = array_at(&template, "/spec/containers/0/args");
        assert!(
            !base.iter().any(|a| a == "--record"),
            "{file} records by default"
        );
        assert_eq!(
            container["name"], template["spec"]["containers"][0]["name"],
            "{file}"
        );
        // The patch replaces the list: it must be the profile's plus the recorder's flags.
        assert_eq!(
            &patched[..base.len()],
            base.iter()
                .map(|a| a.as_str().expect("arg"))
                .collect::<Vec<_>>(),
            "{file}"
        );
        assert_eq!(
            template["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true,
            "{file}"
        );
    }
    let args: Vec<Value> = patched.iter().map(|a| Value::from(*a)).collect();
    let dir = flag_value(&args, "--record");
    flag_value(&args, "--retain");
    flag_value(&args, "--retain-size");
    let mount = array_at(container, "/volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == dir)
        .expect("the recording directory is mounted");
    let volume = array_at(&patch, "/spec/template/spec/volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("its volume");
    assert_eq!(str_at(volume, "/hostPath/path"), "/var/lib/procnetmon2");
    assert_eq!(str_at(volume, "/hostPath/type"), "DirectoryOrCreate");
    // The classes file is the ConfigMap's (mounted in the pod): read from a copy here.
    let cm = load_one("configmap-classes.yaml", "ConfigMap");
    let tmp = std::env::temp_dir().join(format!("pnm-rec-classes-{}.yaml", std::process::id()));
    std::fs::write(&tmp, str_at(&cm, "/data/classes.yaml")).expect("write");
    let classes = flag_value(&args, "--classes");
    let local = tmp.to_str().expect("utf8");
    let argv = std::iter::once("procnetmon2").chain(
        patched
            .iter()
            .map(|a| if *a == classes { local } else { *a }),
    );
    let procnetmon2::cli::Parsed::Run(opt) = procnetmon2::cli::parse(argv) else {
        panic!("the patched arguments do not parse: {patched:?}");
    };
    let mode = procnetmon2::config::Mode::from_opt(
        &opt,
        4_194_304,
        procnetmon2::config::Terminal::default(),
    );
    let _ = std::fs::remove_file(&tmp);
    let mode = mode.expect("valid flags");
    let procnetmon2::config::Mode::Watch(run) = mode else {
        panic!("the DaemonSet watches: {mode:?}");
    };
    assert!(run.record.is_some());
}

/// The single document of `file`, whatever its kind (a patch has none).
fn load_one_untyped(file: &str) -> Value {
    let docs = load(file);
    assert_eq!(docs.len(), 1, "{file}: expected one document");
    docs.into_iter().next().expect("one document")
}
