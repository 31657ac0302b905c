//! Processes a test starts: commands run to completion (`sh`), and children placed in a cgroup
//! and a network namespace before they execute (`Proc`), killed and reaped on drop.

use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use crate::{Cgroup, Netns, skip::time_scale};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A number unique in this process (names, MAC addresses).
pub(crate) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// A unique short name: `pfx` + pid + a random tag of this process + counter (under 16
/// bytes after a 4-byte prefix, as interface names must be). The tag matters on a shared
/// machine: test processes in other PID namespaces can have the same PID, and namespaces and
/// cgroups are shared (two runs once made the same pnm-test-PIDxN).
pub fn unique(pfx: &str) -> String {
    static TAG: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
    let tag = TAG.get_or_init(|| {
        let mut b = [0_u8; 2];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .expect("/dev/urandom");
        u16::from_ne_bytes(b) & 0xfff
    });
    format!(
        "{pfx}{}{tag:03x}x{}",
        std::process::id() % 100_000,
        next_seq()
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

/// The lines of `r`, read by a thread of their own until EOF (or until nobody listens).
pub(crate) fn line_channel(r: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Makes `c` start inside cgroup `cg` (if any) and network namespace `ns` (if any): placed
/// there before it executes, so it never runs anywhere else.
pub(crate) fn place(c: &mut Command, cg: Option<&Cgroup>, ns: Option<&Netns>) {
    use std::os::unix::process::CommandExt as _;
    let procs_file = cg.map(|c| {
        std::ffi::CString::new(c.dir.join("cgroup.procs").to_str().expect("utf8")).expect("cstr")
    });
    let ns_file =
        ns.map(|n| std::ffi::CString::new(n.path().to_str().expect("utf8")).expect("cstr"));
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
}

/// `1234,5678`: the PIDs of `procs`, as `-p` takes them.
pub fn pids(procs: &[&Proc]) -> String {
    procs
        .iter()
        .map(|p| p.pid().to_string())
        .collect::<Vec<_>>()
        .join(",")
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
        let mut c = Command::new(cmd);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        place(&mut c, cg, ns);
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", cmd.display()));
        let stdin = child.stdin.take();
        let lines = line_channel(child.stdout.take().expect("stdout"));
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// Starts the `pnm-peer` helper (the typed way: [`crate::Peer`]).
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

    /// One step of a target that waits for a line before each part of its work (`pnm-peer …
    /// wait`, a [`crate::Script`]): sends "go", then waits for `then` (e.g. "done").
    pub fn go(&mut self, then: &str) {
        self.send_line("go");
        self.expect_line(then);
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
