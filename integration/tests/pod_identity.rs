//! Kubernetes nodes, simulated: a pod hierarchy under the cgroup v2 root in both kubelet
//! cgroup-driver shapes, two "containers" each with its own network namespace and eth0, a
//! fake containerd OCI bundle for names, and the host /proc bind-mounted elsewhere
//! (`--host-proc`). Identity fields, exact bytes per container, `--container`, `--cgroup`,
//! `--all`, and a run from inside a private cgroup namespace.

use std::path::Path;

use procnetmon2_integration::{
    Monitor, Netns, Proc, Veth, cgroup2_root, current, num,
    pods::{CgroupTree as Tree, HostRoot, hex64, pod_uid as uid},
    skip_unless_root, udp4_bytes, unique,
};

#[test]
fn simulated_pods() {
    if skip_unless_root() {
        return;
    }
    let tag = unique("");
    let (uid_a, uid_b) = (uid(&format!("pa{tag}")), uid(&format!("pb{tag}")));
    let (id_a, id_b) = (hex64(&format!("a{tag}")), hex64(&format!("b{tag}")));
    let root = cgroup2_root();
    // systemd driver, containerd; cgroupfs driver, bare id.
    let rel_a = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id_a}.scope",
        uid_a.replace('-', "_")
    );
    let pod_b = format!("kubepods/besteffort/pod{uid_b}");
    let rel_b = format!("{pod_b}/{id_b}");
    let mut tree = Tree(Vec::new());
    tree.make(&root.join(&rel_a));
    tree.make(&root.join(&rel_b));
    let host = HostRoot::new();
    // The runtime's own metadata for container A (names); none for B.
    let bundle = host.0.join(format!(
        "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id_a}"
    ));
    std::fs::create_dir_all(&bundle).expect("bundle dir");
    std::fs::write(
        bundle.join("config.json"),
        serde_json::json!({"annotations": {
            "io.kubernetes.cri.sandbox-name": "web-7d4f",
            "io.kubernetes.cri.sandbox-namespace": "shop",
            "io.kubernetes.cri.container-name": "nginx",
            "io.kubernetes.cri.sandbox-uid": uid_a,
        }})
        .to_string(),
    )
    .expect("config.json");

    // Each container: its own netns with eth0 to a peer namespace.
    let (na, pa, nb, pb) = (
        Netns::new(false),
        Netns::new(false),
        Netns::new(false),
        Netns::new(false),
    );
    let va = Veth::new(&na, "eth0", &pa, "eth0", 61);
    let vb = Veth::new(&nb, "eth0", &pb, "eth0", 62);
    let (to_a, to_b) = (format!("{}:7601", va.ip_b), format!("{}:7602", vb.ip_b));
    let sink_a = Proc::peer(&["udp-recv", &to_a, "1000000"], None, Some(&pa));
    let sink_b = Proc::peer(&["udp-recv", &to_b, "1000000"], None, Some(&pb));
    sink_a.expect_line("ready");
    sink_b.expect_line("ready");
    let cg_a = procnetmon2_integration::Cgroup {
        dir: root.join(&rel_a),
    };
    let cg_b = procnetmon2_integration::Cgroup {
        dir: root.join(&rel_b),
    };
    let host_proc = host.0.join("proc");
    let host_proc = host_proc.to_str().expect("utf8");

    let run = |args: &[&str], sends: [(u32, u32); 2]| {
        let mut a = Proc::peer(
            &[
                "udp-send",
                &to_a,
                &sends[0].0.to_string(),
                &sends[0].1.to_string(),
                "connected",
                "wait",
                "hold",
            ],
            Some(&cg_a),
            Some(&na),
        );
        let mut b = Proc::peer(
            &[
                "udp-send",
                &to_b,
                &sends[1].0.to_string(),
                &sends[1].1.to_string(),
                "connected",
                "wait",
                "hold",
            ],
            Some(&cg_b),
            Some(&nb),
        );
        a.expect_line("bound");
        b.expect_line("bound");
        let pids = format!("{},{}", a.pid(), b.pid());
        let args: Vec<String> = args.iter().map(|s| s.replace("{PIDS}", &pids)).collect();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mon = Monitor::start(&argv);
        a.send_line("go");
        b.send_line("go");
        a.expect_line("done");
        b.expect_line("done");
        let (status, reports, err) = mon.finish();
        assert!(status.success(), "{err:?}");
        let r = reports.last().expect("report").clone();
        a.close_stdin();
        b.close_stdin();
        (r, a.pid(), b.pid())
    };

    // 1. By PID: identity fields from the path (both shapes) and the bundle (names).
    let (r, pa_pid, pb_pid) = run(
        &[
            "-p",
            "{PIDS}",
            "--json",
            "-t",
            "2s",
            "--host-proc",
            host_proc,
        ],
        [(100, 300), (40, 900)],
    );
    let ca = &r["processes"][pa_pid.to_string()]["container"];
    assert_eq!(ca["runtime"], "containerd", "{r}");
    assert_eq!(ca["id"], id_a.as_str());
    assert_eq!(ca["pod_uid"], uid_a.as_str());
    assert_eq!(ca["qos"], "burstable");
    assert_eq!(
        (
            ca["pod"].as_str(),
            ca["namespace"].as_str(),
            ca["name"].as_str()
        ),
        (Some("web-7d4f"), Some("shop"), Some("nginx"))
    );
    let cb = &r["processes"][pb_pid.to_string()]["container"];
    assert_eq!(cb["id"], id_b.as_str(), "{r}");
    assert_eq!(cb["pod_uid"], uid_b.as_str());
    assert_eq!(cb["qos"], "besteffort");
    assert!(r["processes"][pa_pid.to_string()]["nspid"].is_u64());
    assert_eq!(num(current(&r, pa_pid), "bytes_out"), 100 * udp4_bytes(300));
    assert_eq!(num(current(&r, pb_pid), "bytes_out"), 40 * udp4_bytes(900));

    // 2. --container by a unique id prefix; --cgroup by the pod's cgroup (a subtree).
    let prefix = &id_a[..12];
    let cg_arg = format!("/{pod_b}");
    let (r, _, _) = run(
        &[
            "--container",
            prefix,
            "--cgroup",
            &cg_arg,
            "--json",
            "-t",
            "2s",
            "--host-proc",
            host_proc,
        ],
        [(70, 500), (30, 200)],
    );
    let w = r["workloads"].as_object().expect("workloads");
    let by_container = w
        .values()
        .find(|v| v["container"]["id"] == id_a.as_str())
        .expect("container A");
    assert_eq!(by_container["name"], "shop/web-7d4f/nginx", "{r}");
    assert_eq!(
        num(&by_container["current"], "bytes_out"),
        70 * udp4_bytes(500)
    );
    let by_cgroup = w
        .values()
        .find(|v| v["cgroup"] == cg_arg.as_str())
        .expect("pod B");
    assert_eq!(
        num(&by_cgroup["current"], "bytes_out"),
        30 * udp4_bytes(200)
    );

    // 3. --all: node-wide, grouped by workload; our two containers carry exactly their payloads.
    let (r, _, _) = run(
        &["--all", "--json", "-t", "2s", "--host-proc", host_proc],
        [(55, 100), (66, 200)],
    );
    let w = r["workloads"].as_object().expect("workloads");
    let wa = w
        .values()
        .find(|v| v["container"]["id"] == id_a.as_str())
        .expect("A in --all");
    let wb = w
        .values()
        .find(|v| v["container"]["id"] == id_b.as_str())
        .expect("B in --all");
    assert_eq!(
        num(&wa["current"], "bytes_out"),
        55 * udp4_bytes(100),
        "{r}"
    );
    assert_eq!(num(&wb["current"], "bytes_out"), 66 * udp4_bytes(200));
    assert_eq!(
        num(&wa["current"], "bytes_out") + num(&wb["current"], "bytes_out"),
        55 * udp4_bytes(100) + 66 * udp4_bytes(200)
    );

    // 4. From inside a container: a private cgroup namespace (paths read `0::/../…`) and a
    // private mount namespace, with the host /proc bind-mounted; resolved all the same.
    let agent_cg = procnetmon2_integration::Cgroup::new();
    let mut a = Proc::peer(
        &["udp-send", &to_a, "25", "250", "connected", "wait", "hold"],
        Some(&cg_a),
        Some(&na),
    );
    a.expect_line("bound");
    let bin = procnetmon2_integration::bin("procnetmon2");
    // Its log joins stdout, so the traffic starts once it says it is counting (a fixed
    // delay can end before a slow start, e.g. under emulation); the window and the wait
    // stretch by PNM_TIME_SCALE.
    let scale = procnetmon2_integration::time_scale();
    let script = format!(
        "exec 2>&1; RUST_LOG=info exec unshare --cgroup --mount {} -p {} --json -t {}s --host-proc {host_proc}",
        bin.display(),
        a.pid(),
        3 * scale
    );
    let mon = Proc::spawn(Path::new("sh"), &["-c", &script], Some(&agent_cg), None);
    let wait = std::time::Duration::from_secs(30 * scale);
    while !mon
        .next_line(wait)
        .expect("the contained run starts counting")
        .contains("counting")
    {}
    a.send_line("go");
    a.expect_line("done");
    if scale > 1 {
        // As Monitor::finish does under emulation: the stretched window ends its own
        // (unstretched) length after the traffic, with Ctrl-C (the window's report).
        std::thread::sleep(std::time::Duration::from_secs(3));
        // SAFETY: plain syscall on our own child (procnetmon2: sh and unshare exec it).
        unsafe { libc::kill(mon.pid() as i32, libc::SIGINT) };
    }
    let line = std::iter::from_fn(|| mon.next_line(wait))
        .find(|l| l.starts_with('{'))
        .expect("a report from the contained run");
    let r: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(
        num(current(&r, a.pid()), "bytes_out"),
        25 * udp4_bytes(250),
        "{r}"
    );
    assert_eq!(
        r["processes"][a.pid().to_string()]["container"]["id"],
        id_a.as_str()
    );
    drop(mon);
    a.close_stdin();
    drop(a);
    drop(agent_cg);
    drop(host);
    drop(tree);
}
