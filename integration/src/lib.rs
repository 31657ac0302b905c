//! Harness for the privileged integration tests: network namespaces, veth pairs, child
//! cgroups, processes placed in them, the `pnm-peer` traffic helper, the `procnetmon2` binary,
//! and the kernel's own interface counters as ground truth.
//!
//! Every resource is an RAII guard that removes itself on drop, also while a test panics.
//! Tests must run as root, one at a time (`--test-threads=1`): they share the kernel.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

pub mod pods;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short name: `pfx` + pid + counter (interface names must stay under 16 bytes).
pub fn unique(pfx: &str) -> String {
    format!(
        "{pfx}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and panics with its stderr when it fails.
pub fn sh(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Skips (returns true) when not root, printing why.
pub fn skip_unless_root() -> bool {
    // SAFETY: plain syscall.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping test - needs root");
        return true;
    }
    false
}

/// The running kernel's (major, minor), from its release string.
pub fn kernel_version() -> (u32, u32) {
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let mut parts = rel
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Says that (part of) `test` cannot apply to this kernel, and why, on the line
/// scripts/test-kernels counts and prints as a skip: `pnm-skip: TEST: REASON`.
pub fn skip_for_kernel(test: &str, reason: &str) {
    eprintln!("pnm-skip: {test}: {reason}");
}

/// `PNM_TIME_SCALE`: how many times slower than this host the tests run (1 here; set in the
/// emulated VMs of scripts/test-kernels). Deadlines and `-t` windows are multiplied by it.
pub fn time_scale() -> u64 {
    std::env::var("PNM_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 1)
        .unwrap_or(1)
}

/// Stretches `-t` windows by `PNM_TIME_SCALE` (a whole number, default 1). Under emulation
/// (scripts/test-kernels sets it in its VMs) starting the monitor and running the traffic take
/// several times longer, and a window that ends before the traffic does undercounts: the
/// deadline grows instead of the test being retried. Only the window moves; every count
/// asserted stays exact.
pub fn scaled_window_args(args: &[&str]) -> Vec<String> {
    let scale = time_scale();
    let mut out: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    if scale == 1 {
        return out;
    }
    for i in 1..out.len() {
        if out[i - 1] != "-t" {
            continue;
        }
        let v = out[i].clone();
        let (num, unit) = match v.strip_suffix("ms") {
            Some(n) => (n, "ms"),
            None => match v.strip_suffix('s') {
                Some(n) => (n, "s"),
                None => continue,
            },
        };
        if let Ok(n) = num.parse::<u64>() {
            out[i] = format!("{}{unit}", n * scale);
        }
    }
    out
}

/// The `-t` window of an argument list, unstretched (`3s`, `500ms`; other forms: none).
fn window_arg(args: &[&str]) -> Option<Duration> {
    let v = args.iter().skip_while(|a| **a != "-t").nth(1)?;
    match v.strip_suffix("ms") {
        Some(n) => n.parse().ok().map(Duration::from_millis),
        None => v.strip_suffix('s')?.parse().ok().map(Duration::from_secs),
    }
}

/// Whether sockets report their namespace's cookie (`SO_NETNS_COOKIE`, Linux 5.14).
pub fn so_netns_cookie() -> bool {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp socket");
    let mut cookie = 0_u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `cookie` is a writable u64 of `len` bytes.
    unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            71, // SO_NETNS_COOKIE
            (&raw mut cookie).cast(),
            &raw mut len,
        ) == 0
    }
}

/// `-i` needs `SO_NETNS_COOKIE` (Linux 5.14) to name each interface's namespace. Where it is
/// missing, procnetmon2 must refuse an `-i` run (`args`) with one line naming the kernel it
/// needs, exit 2: checked here, then the skip is printed and true returned (the rest of the
/// test cannot apply).
pub fn skip_iface_without_netns_cookie(test: &str, args: &[&str]) -> bool {
    if so_netns_cookie() {
        return false;
    }
    let (status, _, err) = run_monitor(args);
    assert_eq!(status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains("needs Linux >= 5.14"), "{args:?}: {err}");
    skip_for_kernel(
        test,
        "-i needs SO_NETNS_COOKIE (Linux 5.14); its one-line refusal was checked",
    );
    true
}

/// A network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up and IPv6 off on every other link unless `ipv6`.
    ///
    /// Two processes (`ip netns add`, `ip -n … link set lo up`); the sysctls are written from
    /// a thread inside the namespace. Every process start costs 0.24-0.9 s in the emulated VMs of
    /// scripts/test-kernels (measured: `/bin/true` 0.24 s on 6.12 and 0.7-0.9 s on 5.10 under
    /// TCG), so the harness starts as few as it can.
    pub fn new(ipv6: bool) -> Self {
        let name = unique("pnmt");
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        sh("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        if !ipv6 {
            // No router solicitations, MLD reports or DAD probes on our links.
            ns.sysctl(&[
                ("net/ipv6/conf/all/disable_ipv6", "1"),
                ("net/ipv6/conf/default/disable_ipv6", "1"),
            ]);
        }
        ns
    }

    /// Writes sysctls (paths under /proc/sys) as seen inside the namespace: a thread joins
    /// it (setns affects the calling thread only) and opens the files there, since
    /// /proc/sys/net resolves to the namespace of the task that opens it.
    pub fn sysctl(&self, settings: &[(&str, &str)]) {
        let ns_file = std::fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns: {e}"));
                for (key, value) in settings {
                    std::fs::write(Path::new("/proc/sys").join(key), value)
                        .unwrap_or_else(|e| panic!("sysctl {key}={value}: {e}"));
                }
            });
        });
    }

    /// Runs `ip -n NS -batch -` with `lines` (one ip command each, without `ip`): one process
    /// for a namespace's whole setup.
    pub fn ip_batch(&self, lines: &[String]) {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ip: {e}"));
        {
            let mut stdin = child.stdin.take().expect("ip stdin");
            for l in lines {
                writeln!(stdin, "{l}").expect("write to ip -batch");
            }
        }
        let out = child.wait_with_output().expect("ip -batch");
        assert!(
            out.status.success(),
            "ip -n {} -batch {lines:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        sh("ip", &args)
    }

    /// Path of the namespace file, for setns.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Counters of interface `dev` in this namespace.
    pub fn link_stats(&self, dev: &str) -> LinkStats {
        let out = sh(
            "ip",
            &["-n", &self.name, "-s", "-j", "link", "show", "dev", dev],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        let s = &v[0]["stats64"];
        let n = |dir: &str, k: &str| {
            s[dir][k]
                .as_u64()
                .unwrap_or_else(|| panic!("stats64.{dir}.{k} in {out}"))
        };
        LinkStats {
            rx_bytes: n("rx", "bytes"),
            rx_packets: n("rx", "packets"),
            tx_bytes: n("tx", "bytes"),
            tx_packets: n("tx", "packets"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// An interface's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes received (frames, with link-layer header).
    pub rx_bytes: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
}

impl LinkStats {
    /// Counters accumulated since `before`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            rx_bytes: self.rx_bytes - before.rx_bytes,
            rx_packets: self.rx_packets - before.rx_packets,
            tx_bytes: self.tx_bytes - before.tx_bytes,
            tx_packets: self.tx_packets - before.tx_packets,
        }
    }

    /// IP bytes received on a veth: frame bytes less the 14-byte Ethernet header of each
    /// frame. (Loopback counts from the IP header already: use `rx_bytes` there.)
    pub fn ip_rx(&self) -> u64 {
        self.rx_bytes - 14 * self.rx_packets
    }

    /// IP bytes sent.
    pub fn ip_tx(&self) -> u64 {
        self.tx_bytes - 14 * self.tx_packets
    }
}

/// A veth pair `a` (in `ns_a`, address `10.X.Y.1`) ↔ `b` (in `ns_b`, `10.X.Y.2`), with
/// permanent neighbour entries so no ARP crosses the link. Removed with its namespaces.
pub struct Veth {
    /// Interface name on the A side.
    pub a: String,
    /// Interface name on the B side.
    pub b: String,
    /// IPv4 address of the A side.
    pub ip_a: String,
    /// IPv4 address of the B side.
    pub ip_b: String,
}

/// Test subnet prefix (`10.X`), overridable with `PNM_TEST_NET` (e.g. `10.231`).
fn net_prefix() -> String {
    std::env::var("PNM_TEST_NET").unwrap_or_else(|_| "10.231".into())
}

impl Veth {
    /// Creates the pair, addresses, neighbours; `a_name`/`b_name` name the ends.
    ///
    /// Three processes: the pair is created with each end already in its namespace under its
    /// final name (so an `eth0` never meets the host's own) and with known MAC addresses,
    /// then each side is set up by one `ip -batch`.
    pub fn new(ns_a: &Netns, a_name: &str, ns_b: &Netns, b_name: &str, subnet: u8) -> Self {
        // Locally administered, unique per pair in this process (the pair is its own link:
        // only the two ends must differ).
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mac = |side: u8| {
            format!(
                "02:70:{:02x}:{:02x}:{subnet:02x}:{side:02x}",
                (seq >> 8) & 0xff,
                seq & 0xff
            )
        };
        let (mac_a, mac_b) = (mac(1), mac(2));
        sh(
            "ip",
            &[
                "link", "add", a_name, "address", &mac_a, "netns", &ns_a.name, "type", "veth",
                "peer", "name", b_name, "address", &mac_b, "netns", &ns_b.name,
            ],
        );
        let p = net_prefix();
        let (ip_a, ip_b) = (format!("{p}.{subnet}.1"), format!("{p}.{subnet}.2"));
        let setup = |dev: &str, ip: &str, peer_ip: &str, peer_mac: &str| {
            vec![
                format!("addr add {ip}/24 dev {dev}"),
                format!("link set {dev} up"),
                format!("neigh replace {peer_ip} lladdr {peer_mac} dev {dev} nud permanent"),
            ]
        };
        ns_a.ip_batch(&setup(a_name, &ip_a, &ip_b, &mac_b));
        ns_b.ip_batch(&setup(b_name, &ip_b, &ip_a, &mac_a));
        Self {
            a: a_name.into(),
            b: b_name.into(),
            ip_a,
            ip_b,
        }
    }
}

/// The cgroup v2 mount point, from /proc/self/mountinfo.
pub fn cgroup2_root() -> PathBuf {
    let text = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    for line in text.lines() {
        if let Some((pre, post)) = line.split_once(" - ")
            && post.split_whitespace().next() == Some("cgroup2")
        {
            return PathBuf::from(pre.split(' ').nth(4).expect("mount point"));
        }
    }
    panic!("no cgroup2 mount");
}

/// A child cgroup of the cgroup v2 root, removed on drop (its processes must be gone).
pub struct Cgroup {
    /// Its directory.
    pub dir: PathBuf,
}

impl Cgroup {
    /// Creates `<cgroup2 root>/pnm-test-…`.
    pub fn new() -> Self {
        let dir = cgroup2_root().join(unique("pnm-test-"));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self { dir }
    }

    /// Its path as `--cgroup` takes it (`/pnm-test-…`, relative to the cgroup2 root).
    pub fn rel(&self) -> String {
        let root = cgroup2_root();
        format!(
            "/{}",
            self.dir
                .strip_prefix(&root)
                .expect("under the cgroup2 root")
                .display()
        )
    }

    /// PIDs in the cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Everything left in a test's cgroup is the test's (a shell's children may outlive
        // it): end it all, then remove the cgroup once the processes are reaped.
        if !self.procs().is_empty() {
            let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        }
        for _ in 0..250 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("warning: could not remove {}", self.dir.display());
    }
}

/// Path of a binary built by this workspace (`procnetmon2`, `pnm-peer`): `$PNM_TARGET_DIR`
/// (default `<workspace>/target/debug`).
pub fn bin(name: &str) -> PathBuf {
    let dir = std::env::var("PNM_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let p = dir.join(name);
    assert!(p.exists(), "{} not built (run scripts/test)", p.display());
    p
}

/// A process started by a test, killed and reaped on drop.
pub struct Proc {
    /// The child.
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `cmd args` inside cgroup `cg` (if any) and network namespace `ns` (if any),
    /// placed there before it executes, so it never runs anywhere else.
    pub fn spawn(cmd: &Path, args: &[&str], cg: Option<&Cgroup>, ns: Option<&Netns>) -> Self {
        use std::os::unix::process::CommandExt as _;
        let procs_file = cg.map(|c| {
            std::ffi::CString::new(c.dir.join("cgroup.procs").to_str().expect("utf8"))
                .expect("cstr")
        });
        let ns_file =
            ns.map(|n| std::ffi::CString::new(n.path().to_str().expect("utf8")).expect("cstr"));
        let mut c = Command::new(cmd);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only async-signal-safe calls (open, write, setns, close) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if let Some(f) = &procs_file {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                if let Some(f) = &ns_file {
                    let fd = libc::open(f.as_ptr(), libc::O_RDONLY);
                    if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                Ok(())
            });
        }
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", cmd.display()));
        let stdin = child.stdin.take();
        let stdout: ChildStdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Starts the `pnm-peer` helper.
    pub fn peer(args: &[&str], cg: Option<&Cgroup>, ns: Option<&Netns>) -> Self {
        Self::spawn(&bin("pnm-peer"), args, cg, ns)
    }

    /// PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a stdout line equal to `word` (60 s, stretched by `PNM_TIME_SCALE`).
    pub fn expect_line(&self, word: &str) {
        let deadline = Instant::now() + Duration::from_secs(60 * time_scale());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == word => return,
                Ok(_) => {}
                Err(e) => panic!("waiting for '{word}' from pid {}: {e}", self.pid()),
            }
        }
    }

    /// The next stdout line, if one comes within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends one line on its stdin.
    pub fn send_line(&mut self, line: &str) {
        let s = self.stdin.as_mut().expect("stdin open");
        writeln!(s, "{line}").expect("write stdin");
        s.flush().expect("flush stdin");
    }

    /// Closes its stdin (helpers in "hold" mode then exit).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for it to exit (at most 60 s).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "pid {} did not exit", self.pid());
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `procnetmon2`.
pub struct Monitor {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_all: Vec<String>,
    /// The `-t` window as the test wrote it (unstretched), if any.
    window: Option<Duration>,
}

impl Monitor {
    /// Starts `procnetmon2 ARGS` and waits until it says it is counting.
    pub fn start(args: &[&str]) -> Self {
        Self::start_under(&[], args)
    }

    /// Starts `WRAPPER… procnetmon2 ARGS` (e.g. `setpriv` with fewer capabilities) and waits
    /// until it says it is counting.
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Self {
        Self::start_full(wrapper, &[], args)
    }

    /// Starts `procnetmon2 ARGS` with extra environment variables and waits until it says it
    /// is counting.
    pub fn start_env(env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_full(&[], env, args)
    }

    fn start_full(wrapper: &[&str], env: &[(&str, &str)], args: &[&str]) -> Self {
        let agent = bin("procnetmon2");
        let mut cmd = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = Command::new(w);
                c.args(rest).arg(&agent);
                c
            }
            None => Command::new(&agent),
        };
        let mut child = cmd
            .args(scaled_window_args(args))
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn procnetmon2");
        let out = child.stdout.take().expect("stdout");
        let (otx, stdout) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if otx.send(line).is_err() {
                    break;
                }
            }
        });
        let err = child.stderr.take().expect("stderr");
        let (tx, stderr) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut m = Self {
            child,
            stdout,
            stderr,
            stderr_all: Vec::new(),
            window: window_arg(args),
        };
        let deadline = Instant::now() + Duration::from_secs(30 * time_scale());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match m.stderr.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains("counting");
                    m.stderr_all.push(l);
                    if done {
                        return m;
                    }
                }
                Err(_) => {
                    let _ = m.child.kill();
                    panic!("procnetmon2 did not start: {:?}", m.stderr_all);
                }
            }
        }
    }

    /// PID of the monitor.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit; returns (status, JSON reports, stderr lines).
    ///
    /// Under emulation (`PNM_TIME_SCALE` > 1) a `-t` window was stretched so that a slow
    /// start and slow traffic fit in it; a test calls `finish` once its traffic is over, and
    /// the rest of the stretched window would only be waited out. So there the window ends
    /// at the latest the test's own (unstretched) window after this call — more settling time
    /// than the host leaves after its traffic — with SIGINT, which prints the window's report
    /// after a last look at the counters and the targets (README: Ctrl-C), exit 0 as at
    /// expiry. A monitor that ends by itself before that (spawn mode, targets gone) is not
    /// signalled.
    pub fn finish(
        mut self,
    ) -> (
        std::process::ExitStatus,
        Vec<serde_json::Value>,
        Vec<String>,
    ) {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(120);
        let mut cut = self.window.filter(|_| time_scale() > 1).map(|w| now + w);
        let status = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if cut.is_some_and(|c| Instant::now() >= c) {
                self.signal(libc::SIGINT);
                cut = None;
            }
            assert!(Instant::now() < deadline, "procnetmon2 did not exit");
            thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF: drain until then (a loaded machine can take more
        // than a moment to read a long report), or 5 s if a child still holds the pipes.
        let drain = |rx: &mpsc::Receiver<String>| {
            let until = Instant::now() + Duration::from_secs(5);
            let mut lines = Vec::new();
            while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                lines.push(l);
            }
            lines
        };
        let stdout = drain(&self.stdout);
        self.stderr_all.extend(drain(&self.stderr));
        let reports = stdout
            .into_iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (status, reports, std::mem::take(&mut self.stderr_all))
    }

    /// Waits (30 s, stretched by `PNM_TIME_SCALE`) for a log line containing `needle`: an
    /// event the agent reports (e.g. a namespace it found mid-run), instead of a fixed sleep.
    pub fn expect_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30 * time_scale());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains(needle);
                    self.stderr_all.push(l);
                    if done {
                        return;
                    }
                }
                Err(_) => panic!("no log line with '{needle}': {:?}", self.stderr_all),
            }
        }
    }

    /// The next JSON report (continuous mode), within 30 s.
    pub fn next_report(&mut self) -> serde_json::Value {
        let l = self
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("a report from procnetmon2");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
    }

    /// Skips reports until `pred` holds for one (at most 20 reports, times `PNM_TIME_SCALE`:
    /// under emulation what the report waits for takes more intervals), and returns it.
    pub fn report_where(&mut self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        for _ in 0..20 * time_scale() {
            last = self.next_report();
            if pred(&last) {
                return last;
            }
        }
        panic!("no report matched; last: {last}");
    }

    /// Stops a continuous monitor with SIGTERM and waits for it.
    pub fn stop(
        self,
    ) -> (
        std::process::ExitStatus,
        Vec<serde_json::Value>,
        Vec<String>,
    ) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.finish()
    }

    /// Sends signal `sig` (SIGINT as Ctrl-C would, SIGHUP as a closed terminal would).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `procnetmon2 ARGS` to completion (at most 120 s); returns (status, JSON reports,
/// stderr).
pub fn run_monitor(args: &[&str]) -> (std::process::ExitStatus, Vec<serde_json::Value>, String) {
    run_monitor_with(&bin("procnetmon2"), args)
}

/// `run_monitor` with another procnetmon2 binary (e.g. the one a package installed).
pub fn run_monitor_with(
    binary: &Path,
    args: &[&str],
) -> (std::process::ExitStatus, Vec<serde_json::Value>, String) {
    let out = Command::new(binary)
        .args(scaled_window_args(args))
        .stdin(Stdio::null())
        .output()
        .expect("run procnetmon2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let reports = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (
        out.status,
        reports,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The cgroup v2 path of `pid` (the `0::` line of /proc/PID/cgroup).
pub fn cgroup_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("read /proc/PID/cgroup")
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        .expect("cgroup v2 line")
}

/// `bpftool cgroup tree` output (programs attached to cgroups), for before/after checks.
pub fn bpftool_cgroup_tree() -> String {
    sh("bpftool", &["cgroup", "tree"])
}

/// Directories named `procnetmon2-*` anywhere under `dir`.
pub fn leftover_cgroups(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                if e.file_name().to_string_lossy().starts_with("procnetmon2-") {
                    out.push(e.path());
                }
                stack.push(e.path());
            }
        }
    }
    out
}

/// Waits (at most 30 s, scaled under emulation) until a `procnetmon2` started with
/// `RUST_LOG=info` and piped stderr says it is counting; the rest of its stderr is drained in
/// the background. Traffic that must be counted starts after this, never after a fixed sleep.
pub fn until_counting(child: &mut Child) {
    let err = child.stderr.take().expect("stderr piped");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains("counting") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30 * time_scale()))
        .expect("procnetmon2 did not start counting");
}

/// The one process of a report (spawn mode's command, or a single `-p` target).
pub fn only_process(report: &serde_json::Value) -> &serde_json::Value {
    report["processes"]
        .as_object()
        .expect("processes")
        .values()
        .next()
        .expect("a process")
}

/// `current` object of process `pid` in a report.
pub fn current(report: &serde_json::Value, pid: u32) -> &serde_json::Value {
    let c = &report["processes"][pid.to_string()]["current"];
    assert!(c.is_object(), "no process {pid} in {report}");
    c
}

/// A number field of a JSON object.
pub fn num(v: &serde_json::Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// IPv4 bytes of a UDP datagram with `payload` bytes (20 IP + 8 UDP).
pub const fn udp4_bytes(payload: u64) -> u64 {
    payload + 28
}

/// IPv6 bytes of a UDP datagram with `payload` bytes (40 IPv6 + 8 UDP).
pub const fn udp6_bytes(payload: u64) -> u64 {
    payload + 48
}
