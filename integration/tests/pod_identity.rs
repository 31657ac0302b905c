//! Kubernetes nodes, simulated: a pod hierarchy under the cgroup v2 root in both kubelet
//! cgroup-driver shapes, two "containers" each with its own network namespace and eth0, a
//! fake containerd OCI bundle for names, and the host /proc bind-mounted elsewhere
//! (`--host-proc`). Identity fields, exact bytes per container, `--container`, `--cgroup`,
//! `--all`, and a run from inside a private cgroup namespace.

use std::{path::Path, rc::Rc, time::Duration};

use procnetmon2_integration::{
    Cgroup, Counts, Link, Monitor, Peer, Proc, Scenario, bin, cgroup2_root, current, pids,
    pods::{HostRoot, hex64, pod_uid},
    time_scale, unique, workload, workload_where,
};
use serde_json::Value;

/// A container of the simulated node: its cgroup in a kubelet layout, a network namespace of
/// its own whose eth0 leads to a peer with a UDP sink.
struct Container {
    id: String,
    uid: String,
    /// The pod's cgroup, as `--cgroup` takes it.
    pod_cgroup: String,
    cg: Rc<Cgroup>,
    link: Link,
    /// The peer's UDP sink.
    sink: String,
}

impl Container {
    /// Creates the container's cgroup at `rel` (under the cgroup2 root), making the pod's
    /// directories on the way (removed with the scenario, deepest first).
    fn new(s: &Scenario, id: String, uid: String, rel: &str, subnet: u8) -> Self {
        let root = cgroup2_root();
        let mut dir = root.clone();
        let mut cg = None;
        for part in Path::new(rel).components() {
            dir.push(part);
            if !dir.exists() {
                cg = Some(s.keep_cgroup(Cgroup::make(dir.clone())));
            }
        }
        let cg = cg.expect("the container's cgroup is new");
        let pod = Path::new(rel).parent().expect("a pod directory");
        let link = s.link(subnet);
        let sink = link.addr_b(7600 + u16::from(subnet));
        s.background(Peer::udp_sink(&sink).in_netns(&link.b));
        Self {
            id,
            uid,
            pod_cgroup: format!("/{}", pod.display()),
            cg,
            link,
            sink,
        }
    }

    /// A sender in the container, its socket connected before the monitor starts.
    fn sender(&self, (count, size): (u64, u64)) -> Proc {
        Peer::udp_send(&self.sink, count, size)
            .connected()
            .on_go()
            .hold()
            .in_cgroup(&self.cg)
            .in_netns(&self.link.a)
            .start()
    }
}

/// The node: the host's /proc elsewhere, container A (systemd driver, containerd, names in
/// its bundle) and container B (cgroupfs driver, a bare ID, no runtime metadata).
struct Node {
    host: HostRoot,
    a: Container,
    b: Container,
}

impl Node {
    fn new(s: &Scenario) -> Self {
        let tag = unique("");
        let (uid_a, uid_b) = (pod_uid(&format!("pa{tag}")), pod_uid(&format!("pb{tag}")));
        let (id_a, id_b) = (hex64(&format!("a{tag}")), hex64(&format!("b{tag}")));
        let rel_a = format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id_a}.scope",
            uid_a.replace('-', "_")
        );
        let rel_b = format!("kubepods/besteffort/pod{uid_b}/{id_b}");
        let host = HostRoot::new();
        // The runtime's own metadata for container A (names); none for B.
        let bundle = host.0.join(format!(
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id_a}"
        ));
        std::fs::create_dir_all(&bundle).expect("bundle dir");
        let config = serde_json::json!({"annotations": {
            "io.kubernetes.cri.sandbox-name": "web-7d4f",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.container-name": "nginx",
            "io.kubernetes.cri.sandbox-uid": uid_a,
        }});
        std::fs::write(bundle.join("config.json"), config.to_string()).expect("config.json");
        Self {
            host,
            a: Container::new(s, id_a, uid_a, &rel_a, 61),
            b: Container::new(s, id_b, uid_b, &rel_b, 62),
        }
    }

    /// One run: a sender in each container ((count, size) each), the monitor with `args`
    /// (`{PIDS}` stands for the senders' PIDs) and `--host-proc`. The last report and the
    /// senders' PIDs.
    fn run(&self, args: &[&str], sends: [(u64, u64); 2]) -> (Value, u32, u32) {
        let (mut a, mut b) = (self.a.sender(sends[0]), self.b.sender(sends[1]));
        let (all, host_proc) = (pids(&[&a, &b]), self.host.proc());
        let mut argv: Vec<&str> = args
            .iter()
            .map(|a| if *a == "{PIDS}" { all.as_str() } else { *a })
            .collect();
        argv.extend(["--json", "-t", "2s", "--host-proc", &host_proc]);
        let mon = Monitor::start(&argv);
        a.go("done");
        b.go("done");
        let run = mon.finish_ok();
        (run.last().clone(), a.pid(), b.pid())
    }
}

/// By PID: identity fields from the cgroup path (both shapes) and the bundle (names).
fn by_pid(node: &Node) {
    let (r, pa, pb) = node.run(&["-p", "{PIDS}"], [(100, 300), (40, 900)]);
    let ca = &r["processes"][pa.to_string()]["container"];
    assert_eq!(ca["runtime"], "containerd", "{r}");
    assert_eq!(ca["id"], node.a.id.as_str());
    assert_eq!(ca["pod_uid"], node.a.uid.as_str());
    assert_eq!(ca["qos"], "burstable");
    assert_eq!(
        (
            ca["pod"].as_str(),
            ca["namespace"].as_str(),
            ca["name"].as_str()
        ),
        (Some("web-7d4f"), Some("shop"), Some("nginx"))
    );
    let cb = &r["processes"][pb.to_string()]["container"];
    assert_eq!(cb["id"], node.b.id.as_str(), "{r}");
    assert_eq!(cb["pod_uid"], node.b.uid.as_str());
    assert_eq!(cb["qos"], "besteffort");
    assert!(r["processes"][pa.to_string()]["nspid"].is_u64());
    assert_eq!(Counts::of(current(&r, pa)), Counts::udp4_out(100, 300));
    assert_eq!(Counts::of(current(&r, pb)), Counts::udp4_out(40, 900));
}

/// `--container` by a unique ID prefix; `--cgroup` by the pod's cgroup (a subtree).
fn by_container_and_cgroup(node: &Node) {
    let prefix = &node.a.id[..12];
    let pod_b = &node.b.pod_cgroup;
    let (r, _, _) = node.run(
        &["--container", prefix, "--cgroup", pod_b],
        [(70, 500), (30, 200)],
    );
    let by_container = workload_where(&r, |w| w["container"]["id"] == node.a.id.as_str())
        .unwrap_or_else(|| panic!("container A: {r}"));
    assert_eq!(by_container["name"], "shop/web-7d4f/nginx", "{r}");
    assert_eq!(
        Counts::of(&by_container["current"]),
        Counts::udp4_out(70, 500)
    );
    let by_cgroup = workload(&r, pod_b).unwrap_or_else(|| panic!("pod B: {r}"));
    assert_eq!(Counts::of(&by_cgroup["current"]), Counts::udp4_out(30, 200));
}

/// `--all`: node-wide, grouped by workload; the two containers carry exactly their payloads.
fn node_wide(node: &Node) {
    let (r, _, _) = node.run(&["--all"], [(55, 100), (66, 200)]);
    for (c, sent) in [(&node.a, (55, 100)), (&node.b, (66, 200))] {
        let w = workload_where(&r, |w| w["container"]["id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("{} in --all: {r}", c.id));
        assert_eq!(
            Counts::of(&w["current"]),
            Counts::udp4_out(sent.0, sent.1),
            "{r}"
        );
    }
}

/// From inside a container: a private cgroup namespace (paths read `0::/../…`) and a private
/// mount namespace, with the host /proc bind-mounted; resolved all the same.
fn from_inside_a_container(s: &Scenario, node: &Node) {
    let mut a = node.a.sender((25, 250));
    // Its log joins stdout, so the traffic starts once it says it is counting (a fixed
    // delay can end before a slow start, e.g. under emulation); the window and the wait
    // stretch by PNM_TIME_SCALE.
    let scale = time_scale();
    let script = format!(
        "exec 2>&1; RUST_LOG=info exec unshare --cgroup --mount {} -p {} --json -t {}s --host-proc {}",
        bin("procnetmon2").display(),
        a.pid(),
        3 * scale,
        node.host.proc()
    );
    let mon = Proc::spawn(Path::new("sh"), &["-c", &script], Some(&s.cgroup()), None);
    let wait = Duration::from_secs(30 * scale);
    while !mon
        .next_line(wait)
        .expect("the contained run starts counting")
        .contains("counting")
    {}
    a.go("done");
    if scale > 1 {
        // As Monitor::finish does under emulation: the stretched window ends its own
        // (unstretched) length after the traffic, with Ctrl-C (the window's report).
        std::thread::sleep(Duration::from_secs(3));
        // SAFETY: plain syscall on our own child (procnetmon2: sh and unshare exec it).
        unsafe { libc::kill(mon.pid() as i32, libc::SIGINT) };
    }
    let line = std::iter::from_fn(|| mon.next_line(wait))
        .find(|l| l.starts_with('{'))
        .expect("a report from the contained run");
    let r: Value = serde_json::from_str(&line).expect("json");
    assert_eq!(
        Counts::of(current(&r, a.pid())),
        Counts::udp4_out(25, 250),
        "{r}"
    );
    assert_eq!(
        r["processes"][a.pid().to_string()]["container"]["id"],
        node.a.id.as_str()
    );
}

#[test]
fn simulated_pods() {
    let Some(s) = Scenario::new() else { return };
    let node = Node::new(&s);
    by_pid(&node);
    by_container_and_cgroup(&node);
    node_wide(&node);
    from_inside_a_container(&s, &node);
}
