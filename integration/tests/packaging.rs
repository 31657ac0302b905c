//! What `scripts/package` builds, used the way operators use it: the image run as the
//! DaemonSet runs it (privileged, host PIDs and network, the host's /proc at /host/proc, the
//! cgroup2 mount) serving a workload's bytes on /metrics, and the Debian package installed
//! with dpkg, run, and purged without a trace. `scripts/test` runs `scripts/package` first;
//! run it yourself before `cargo test --test packaging`. The container runtime is podman
//! with runc (crun refuses hybrid cgroup layouts; docker cannot run --privileged here).

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Instant,
};

use procnetmon2_integration::{
    Cgroup, Counts, Peer, Proc, Scenario, Script, cgroup2_root,
    metrics::{CLASSIC, free_port, sample, scrape_until},
    only_process, run_monitor_with, udp4_bytes, unique, until_counting,
};

/// `target/package` (or `$PNM_PACKAGE_DIR`), where scripts/package leaves its products.
fn package_dir() -> PathBuf {
    std::env::var("PNM_PACKAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/package"))
}

/// A product of scripts/package; panics naming the fix when it is missing.
fn product(name: &str) -> PathBuf {
    let p = package_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/package first (scripts/test does)",
        p.display()
    );
    p
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"))
}

fn ok(cmd: &str, args: &[&str]) -> String {
    checked(run(cmd, args), cmd, args)
}

/// The stdout of a command that must have succeeded (else its output fails the test).
fn checked(out: Output, cmd: &str, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `procnetmon2 --version` of the static binary that went into the image and the package.
fn version_text() -> String {
    let bin = product("procnetmon2");
    ok(bin.to_str().expect("utf8"), &["--version"])
        .trim_end()
        .to_string()
}

/// podman with runc and no systemd/journald, as scripts/package uses it.
fn podman(args: &[&str]) -> Output {
    let mut all = vec![
        "--runtime",
        "runc",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "file",
    ];
    all.extend_from_slice(args);
    run("podman", &all)
}

fn podman_ok(args: &[&str]) -> String {
    checked(podman(args), "podman", args)
}

/// `--ulimit NAME=N:N` with N at most 8192 and at most this process's hard limit. Podman
/// otherwise asks runc to raise limits, which fails without CAP_SYS_RESOURCE (as in this
/// sandbox, where even `--ulimit host` is refused); lowering is always allowed.
fn ulimit(name: &str, limits_row: &str) -> String {
    let hard = std::fs::read_to_string("/proc/self/limits")
        .expect("limits")
        .lines()
        .find(|l| l.starts_with(limits_row))
        .and_then(|l| {
            l[limits_row.len()..]
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(u64::MAX);
    let n = hard.min(8192);
    format!("{name}={n}:{n}")
}

/// A running container, stopped (SIGTERM) and removed on drop.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["stop", "-t", "15", &self.0]);
        let _ = podman(&["rm", "-f", &self.0]);
    }
}

impl Container {
    /// Its log so far (stdout and stderr).
    fn logs(&self) -> String {
        let o = podman(&["logs", &self.0]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    }
}

/// The image's labels carry the binary's version text, its source and licence; the image
/// runs `--version` (as an operator checks what a node runs).
fn labels_and_version(image: &str, version: &str) {
    let labels: serde_json::Value = serde_json::from_str(&podman_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Labels}}",
        image,
    ]))
    .expect("labels json");
    let label = |k: &str| labels[k].as_str().unwrap_or_default().to_string();
    assert_eq!(
        version,
        format!(
            "procnetmon2 {} (commit {}, Linux >= {})",
            label("org.opencontainers.image.version"),
            label("org.opencontainers.image.revision"),
            label("io.github.bkohler.procnetmon2.min-kernel")
        ),
        "{labels}"
    );
    assert!(label("org.opencontainers.image.source").starts_with("https://"));
    assert!(label("org.opencontainers.image.licenses").contains("Apache-2.0"));
    let (nofile, nproc) = (
        ulimit("nofile", "Max open files"),
        ulimit("nproc", "Max processes"),
    );
    let args = [
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        &nofile,
        "--ulimit",
        &nproc,
        image,
        "--version",
    ];
    assert_eq!(podman_ok(&args).trim_end(), version);
}

/// The DaemonSet's pod, as podman flags: privileged, hostPID, hostNetwork, read-only root,
/// the host's /proc at /host/proc, its cgroup2 mount at /sys/fs/cgroup, /run/procnetmon2.
/// Metrics on loopback `port` only (the DaemonSet binds 0.0.0.0 on the node). Returned once
/// /metrics answers (the programs are attached before the server starts).
fn daemonset(image: &str, port: u16) -> Container {
    std::fs::create_dir_all("/run/procnetmon2").expect("state dir");
    let name = unique("pnm-test-img-");
    let cg2 = format!("{}:/sys/fs/cgroup", cgroup2_root().display());
    let metrics = format!("127.0.0.1:{port}");
    let (nofile, nproc) = (
        ulimit("nofile", "Max open files"),
        ulimit("nproc", "Max processes"),
    );
    let t0 = Instant::now();
    podman_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--privileged",
        "--pid",
        "host",
        "--network",
        "host",
        "--read-only",
        "--ulimit",
        &nofile,
        "--ulimit",
        &nproc,
        "-v",
        "/proc:/host/proc:ro",
        "-v",
        &cg2,
        "-v",
        "/run/procnetmon2:/run/procnetmon2",
        "-e",
        "RUST_LOG=info",
        image,
        "--all",
        "--metrics-addr",
        &metrics,
        "--host-proc",
        "/host/proc",
        "--interval",
        "200ms",
    ]);
    let container = Container(name);
    let text = scrape_until(port, CLASSIC, 30, |t| !t.is_empty());
    assert!(
        !text.is_empty(),
        "no /metrics after 30 s: {}",
        container.logs()
    );
    eprintln!("image: serving after {:?}", t0.elapsed());
    container
}

#[test]
fn image_serves_a_workloads_bytes_like_the_daemonset() {
    let Some(s) = Scenario::new() else { return };
    let image = std::fs::read_to_string(product("image"))
        .expect("image")
        .trim()
        .to_string();
    labels_and_version(&image, &version_text());

    // A workload in its own cgroup and network namespace, sending to a peer namespace.
    let (link, cg) = (s.link(73), s.cgroup());
    let udp = link.addr_b(7731);
    s.background(Peer::udp_sink(&udp).in_netns(&link.b));
    let mut w = Script::new()
        .step("udp-done", &[Peer::udp_send(&udp, 150, 400).connected()])
        .in_cgroup(&cg)
        .in_netns(&link.a)
        .start();
    let port = free_port();
    let container = daemonset(&image, port);
    w.go("udp-done");
    let label_end = format!("{}\"", cg.name());
    let udp_series = |t: &str, name: &str| sample(t, name, &[&label_end, "protocol=\"udp\""]);
    let want = 150 * udp4_bytes(400);
    let text = scrape_until(port, CLASSIC, 10, |t| {
        udp_series(t, "procnetmon_network_transmit_bytes_total") == Some(want)
    });
    assert_eq!(
        udp_series(&text, "procnetmon_network_transmit_bytes_total"),
        Some(want),
        "{text}\n{}",
        container.logs()
    );
    assert_eq!(
        udp_series(&text, "procnetmon_network_transmit_packets_total"),
        Some(150)
    );
    assert!(
        text.contains(&format!(
            "procnetmon_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    // SIGTERM (as the kubelet sends): a clean exit, status 0.
    podman_ok(&["stop", "-t", "15", &container.0]);
    let status = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &container.0]);
    assert_eq!(status.trim(), "0", "{}", container.logs());
}

/// Where the package installs its systemd unit (Debian 12: /lib is /usr/lib).
const UNIT: &str = "/usr/lib/systemd/system/procnetmon2.service";

/// The value of `Key=` in a unit file (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// Capability numbers (linux/capability.h) of the names the unit may use.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_DAC_READ_SEARCH" => 2,
        "CAP_NET_ADMIN" => 12,
        "CAP_SYS_PTRACE" => 19,
        "CAP_SYS_ADMIN" => 21,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        other => panic!("the unit grants {other}: add it here, and say in the unit why"),
    }
}

/// The installed unit: as shipped (deploy/systemd), disabled and stopped, clean under
/// `systemd-analyze verify` (offline: this machine's init is not systemd), hardened as the
/// README says; and its ExecStart, run under its CapabilityBoundingSet with no_new_privs (as
/// systemd starts it), passes the privilege check, attaches and serves a workload's bytes.
fn check_systemd_unit() {
    let unit = std::fs::read_to_string(UNIT).expect("installed unit");
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/procnetmon2.service");
    assert_eq!(
        unit,
        std::fs::read_to_string(shipped).expect("deploy/systemd unit")
    );
    assert!(
        !Path::new("/etc/systemd/system/multi-user.target.wants/procnetmon2.service").exists(),
        "the package must not enable the unit"
    );
    let verify = run("systemd-analyze", &["verify", UNIT]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    for (key, want) in [
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("User", "root"),
        ("RuntimeDirectory", "procnetmon2"),
        ("RuntimeDirectoryPreserve", "yes"),
    ] {
        assert_eq!(unit_value(&unit, key), want, "{key}");
    }
    let caps: Vec<&str> = unit_value(&unit, "CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    let mut argv: Vec<String> = unit_value(&unit, "ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        argv[1..4],
        ["--all", "--metrics-addr", "127.0.0.1:9809"],
        "ExecStart: {argv:?}"
    );
    // The same command on a free port (9809 may be taken on a shared machine).
    let port = 19_100 + (std::process::id() % 400) as u16;
    argv[3] = format!("127.0.0.1:{port}");
    let bounding = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect::<Vec<_>>()
            .join(",")
    );
    let (env_key, env_value) = unit_value(&unit, "Environment")
        .split_once('=')
        .expect("Environment=KEY=VALUE");
    let mut agent = Command::new("setpriv")
        .args([
            "--no-new-privs",
            "--inh-caps=-all",
            "--bounding-set",
            &bounding,
        ])
        .args(&argv)
        .env(env_key, env_value)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv");
    until_counting(&mut agent);
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.id())).expect("status");
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {k} in {status}"))
            .to_owned()
    };
    let want: u64 = caps.iter().map(|c| 1_u64 << cap_bit(c)).sum();
    assert_eq!(
        u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff"),
        want,
        "the agent runs with exactly the unit's capabilities"
    );
    assert_eq!(field("NoNewPrivs:"), "1");
    // A workload of its own cgroup, sending on loopback: its bytes on /metrics.
    let cg = Cgroup::new();
    let sink = Proc::peer(&["udp-recv", "127.0.0.1:7742", "1000000"], None, None);
    sink.expect_line("ready");
    let mut w = Proc::peer(
        &["udp-send", "127.0.0.1:7742", "30", "200", "connected"],
        Some(&cg),
        None,
    );
    w.wait();
    let name = cg
        .dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let sel = [name.as_str(), "protocol=\"udp\""];
    let want = 30 * udp4_bytes(200);
    let text = scrape_until(port, CLASSIC, 10, |t| {
        sample(t, "procnetmon_network_transmit_bytes_total", &sel) == Some(want)
    });
    assert_eq!(
        sample(&text, "procnetmon_network_transmit_bytes_total", &sel),
        Some(want),
        "{text}"
    );
    // systemd stops it with SIGTERM: a clean exit.
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let st = agent.wait().expect("wait");
    assert!(st.success(), "{st:?}");
}

/// Purges the package on drop if it is still installed (a failed test leaves nothing).
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if is_installed() {
            let _ = run("dpkg", &["-P", "procnetmon2"]);
        }
    }
}

fn is_installed() -> bool {
    let out = run("dpkg-query", &["-W", "-f=${Status}", "procnetmon2"]);
    String::from_utf8_lossy(&out.stdout).contains("installed")
}

/// The package's files are installed where operators look for them: the binary, the man
/// page (found and rendered by man, with its sections), the completions (the ones the binary
/// prints, and bash loads them), the copyright. Returns every path the package lists.
fn installed_where_expected(version: &str) -> Vec<String> {
    let files: Vec<String> = ok("dpkg", &["-L", "procnetmon2"])
        .lines()
        .map(str::to_string)
        .collect();
    for f in [
        "/usr/bin/procnetmon2",
        "/usr/share/man/man1/procnetmon2.1.gz",
        "/usr/share/bash-completion/completions/procnetmon2",
        "/usr/share/zsh/vendor-completions/_procnetmon2",
        "/usr/share/fish/vendor_completions.d/procnetmon2.fish",
        "/usr/share/doc/procnetmon2/copyright",
        UNIT,
    ] {
        assert!(files.iter().any(|l| l == f), "package lacks {f}: {files:?}");
    }
    assert_eq!(ok(INSTALLED, &["--version"]).trim_end(), version);
    assert_eq!(
        ok("man", &["-w", "procnetmon2"]).trim(),
        "/usr/share/man/man1/procnetmon2.1.gz"
    );
    let page = Command::new("man")
        .args(["procnetmon2"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("man");
    let page = String::from_utf8_lossy(&page.stdout);
    for s in ["EXAMPLES", "EXIT STATUS", "UNITS", "FILES"] {
        assert!(page.contains(s), "man page lacks {s}: {page}");
    }
    let script = ok(INSTALLED, &["completions", "bash"]);
    assert_eq!(
        std::fs::read_to_string("/usr/share/bash-completion/completions/procnetmon2")
            .expect("read completions"),
        script
    );
    ok(
        "bash",
        &[
            "-c",
            "source /usr/share/bash-completion/completions/procnetmon2 && complete -p procnetmon2",
        ],
    );
    files
}

/// Where the package installs the binary.
const INSTALLED: &str = "/usr/bin/procnetmon2";

#[test]
fn deb_installs_runs_and_purges() {
    let Some(s) = Scenario::new() else { return };
    let deb = std::fs::read_dir(package_dir())
        .expect("target/package: run scripts/package first")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("no .deb in target/package: run scripts/package first");
    assert!(
        !is_installed(),
        "procnetmon2 is already installed on this machine; the test installs and purges its \
         own copy: remove it first (dpkg -P procnetmon2)"
    );
    let version = version_text();
    let t0 = Instant::now();
    let guard = Installed;
    ok("dpkg", &["-i", deb.to_str().expect("utf8")]);
    let files = installed_where_expected(&version);
    // A short -t run of the installed binary over a loopback workload.
    s.background(Peer::udp_sink("127.0.0.1:7741"));
    let send = Peer::udp_send("127.0.0.1:7741", 20, 100)
        .connected()
        .quiet_argv();
    let mut args = vec!["--json", "-t", "2s", "--"];
    args.extend(send.iter().map(String::as_str));
    let (status, reports, err) = run_monitor_with(Path::new(INSTALLED), &args);
    assert!(status.success(), "{err}");
    let p = only_process(reports.last().expect("a report"));
    assert_eq!(Counts::of(&p["current"]), Counts::udp4_out(20, 100), "{p}");
    check_systemd_unit();
    // Remove, then purge: every file the package brought is gone, and dpkg forgets it.
    let regular: Vec<&String> = files.iter().filter(|f| Path::new(f).is_file()).collect();
    ok("dpkg", &["-r", "procnetmon2"]);
    for f in &regular {
        assert!(!Path::new(f).exists(), "{f} left after dpkg -r");
    }
    ok("dpkg", &["-P", "procnetmon2"]);
    assert!(!is_installed());
    assert!(!Path::new("/usr/share/doc/procnetmon2").exists());
    drop(guard);
    eprintln!("deb: installed, used and purged in {:?}", t0.elapsed());
}
