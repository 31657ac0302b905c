//! The `procnetmon2` binary under test: started and waited for (`Monitor`), or run to its end
//! (`run_monitor`), and what its JSON reports say.

use std::{
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    Cgroup,
    process::{bin, line_channel, place},
    skip::time_scale,
};

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

/// Every line of a `--json` run's stdout as a report: a line that is not a JSON object fails
/// the test (none is ever dropped).
fn parse_reports(lines: impl IntoIterator<Item = impl AsRef<str>>) -> Vec<Value> {
    lines
        .into_iter()
        .filter(|l| !l.as_ref().is_empty())
        .map(|l| {
            let l = l.as_ref();
            match serde_json::from_str::<Value>(l) {
                Ok(v) if v.is_object() => v,
                Ok(_) => panic!("a report is not a JSON object: {l}"),
                Err(e) => panic!("not JSON ({e}): {l}"),
            }
        })
        .collect()
}

/// A monitor that ran to its end: its exit status, every report it printed (in order) and
/// every line of its log.
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Its JSON reports.
    pub reports: Vec<Value>,
    /// Its stderr lines.
    pub err: Vec<String>,
}

impl Finished {
    /// The last report (the window's, or the one written on the way out).
    pub fn last(&self) -> &Value {
        self.reports
            .last()
            .unwrap_or_else(|| panic!("no report; stderr: {:?}", self.err))
    }

    /// `current` of process `pid` in the last report.
    pub fn current(&self, pid: u32) -> &Value {
        current(self.last(), pid)
    }

    /// Whether a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.err.iter().any(|l| l.contains(needle))
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
        let stdout = line_channel(child.stdout.take().expect("stdout"));
        let stderr = line_channel(child.stderr.take().expect("stderr"));
        let mut m = Self {
            child,
            stdout,
            stderr,
            stderr_all: Vec::new(),
            window: window_arg(args),
        };
        if !m.wait_log("counting", Duration::from_secs(30 * time_scale())) {
            let _ = m.child.kill();
            panic!("procnetmon2 did not start: {:?}", m.stderr_all);
        }
        m
    }

    /// Reads log lines until one contains `needle` (true) or `timeout` passes (false).
    fn wait_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(l) = self.stderr.recv_timeout(left) else {
                return false;
            };
            let done = l.contains(needle);
            self.stderr_all.push(l);
            if done {
                return true;
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
    pub fn finish(self) -> (ExitStatus, Vec<Value>, Vec<String>) {
        let f = self.finish_any();
        (f.status, f.reports, f.err)
    }

    /// [`Monitor::finish`], asserting that it exited 0.
    pub fn finish_ok(self) -> Finished {
        let f = self.finish_any();
        assert!(f.status.success(), "procnetmon2 {}: {:?}", f.status, f.err);
        f
    }

    fn finish_any(mut self) -> Finished {
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
        let reports = parse_reports(drain(&self.stdout));
        self.stderr_all.extend(drain(&self.stderr));
        Finished {
            status,
            reports,
            err: std::mem::take(&mut self.stderr_all),
        }
    }

    /// Waits (30 s, stretched by `PNM_TIME_SCALE`) for a log line containing `needle`: an
    /// event the agent reports (e.g. a namespace it found mid-run), instead of a fixed sleep.
    pub fn expect_log(&mut self, needle: &str) {
        if !self.wait_log(needle, Duration::from_secs(30 * time_scale())) {
            panic!("no log line with '{needle}': {:?}", self.stderr_all);
        }
    }

    /// The next JSON report (continuous mode), within 30 s.
    pub fn next_report(&mut self) -> Value {
        let l = self
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("a report from procnetmon2");
        parse_reports([l]).remove(0)
    }

    /// The reports already printed and not read yet (none is waited for).
    pub fn reports_so_far(&mut self) -> Vec<Value> {
        parse_reports(self.stdout.try_iter().collect::<Vec<_>>())
    }

    /// Reads reports until `done` holds for one, and returns it. Every report before it must
    /// pass `meanwhile`: what a report may show while the awaited change is on its way (the
    /// old value, or one between the old and the new: see [`between`]). A report that shows
    /// anything else fails the test at once, so no wrong value is skipped over unseen. At
    /// most 20 reports, times `PNM_TIME_SCALE` (under emulation a change takes more
    /// intervals).
    pub fn report_until(
        &mut self,
        meanwhile: impl Fn(&Value) -> bool,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..20 * time_scale() {
            last = self.next_report();
            if done(&last) {
                return last;
            }
            assert!(
                meanwhile(&last),
                "a report on the way shows a wrong value: {last}"
            );
        }
        panic!("no report matched; last: {last}");
    }

    /// Skips reports until `pred` holds for one (at most 20 reports, times `PNM_TIME_SCALE`),
    /// and returns it. The reports skipped are not checked: prefer [`Monitor::report_until`],
    /// which says what they may show.
    pub fn report_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        self.report_until(|_| true, pred)
    }

    /// Stops a continuous monitor with SIGTERM and waits for it.
    pub fn stop(self) -> (ExitStatus, Vec<Value>, Vec<String>) {
        self.signal(libc::SIGTERM);
        self.finish()
    }

    /// [`Monitor::stop`], asserting that it exited 0.
    pub fn stop_ok(self) -> Finished {
        self.signal(libc::SIGTERM);
        self.finish_ok()
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

/// Whether every number `value` has lies between the matching ones of `from` and `to`
/// (either way round, both included): a gauge or a total on its way from one to the other.
pub fn between<const N: usize>(value: [u64; N], from: [u64; N], to: [u64; N]) -> bool {
    (0..N).all(|i| (from[i].min(to[i])..=from[i].max(to[i])).contains(&value[i]))
}

/// Runs `procnetmon2 ARGS` to completion (at most 120 s); returns (status, JSON reports,
/// stderr). Every stdout line must be a JSON report (a table run that prints one fails).
pub fn run_monitor(args: &[&str]) -> (ExitStatus, Vec<Value>, String) {
    run_monitor_with(&bin("procnetmon2"), args)
}

/// `run_monitor` with another procnetmon2 binary (e.g. the one a package installed).
pub fn run_monitor_with(binary: &Path, args: &[&str]) -> (ExitStatus, Vec<Value>, String) {
    run_placed(binary, None, args)
}

/// `run_monitor` with the agent itself in cgroup `cg`: what it makes next to itself (spawn
/// mode's `procnetmon2-spawn-PID`) is then under `cg`, where a test can check it without
/// seeing other runs on the machine.
pub fn run_monitor_in(cg: &Cgroup, args: &[&str]) -> (ExitStatus, Vec<Value>, String) {
    run_placed(&bin("procnetmon2"), Some(cg), args)
}

fn run_placed(
    binary: &Path,
    cg: Option<&Cgroup>,
    args: &[&str],
) -> (ExitStatus, Vec<Value>, String) {
    let mut c = Command::new(binary);
    c.args(scaled_window_args(args)).stdin(Stdio::null());
    place(&mut c, cg, None);
    let out = c.output().expect("run procnetmon2");
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status,
        parse_reports(stdout.lines()),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits (at most 30 s, scaled under emulation) until a `procnetmon2` started with
/// `RUST_LOG=info` and piped stderr says it is counting; the rest of its stderr is drained in
/// the background. Traffic that must be counted starts after this, never after a fixed sleep.
pub fn until_counting(child: &mut Child) {
    let lines = line_channel(child.stderr.take().expect("stderr piped"));
    let deadline = Instant::now() + Duration::from_secs(30 * time_scale());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .expect("procnetmon2 did not start counting");
        if line.contains("counting") {
            // The rest is read (and dropped) so the child never blocks on a full pipe.
            thread::spawn(move || lines.iter().for_each(drop));
            return;
        }
    }
}

/// The one process of a report (spawn mode's command, or a single `-p` target).
pub fn only_process(report: &Value) -> &Value {
    let procs = report["processes"].as_object().expect("processes");
    assert_eq!(procs.len(), 1, "one process: {report}");
    procs.values().next().expect("a process")
}

/// `current` object of process `pid` in a report.
pub fn current(report: &Value, pid: u32) -> &Value {
    let c = &report["processes"][pid.to_string()]["current"];
    assert!(c.is_object(), "no process {pid} in {report}");
    c
}

/// The workload of cgroup `rel` (as `--cgroup` names it) in a report, if there.
pub fn workload<'r>(report: &'r Value, rel: &str) -> Option<&'r Value> {
    workload_where(report, |w| w["cgroup"] == rel)
}

/// The first workload of a report for which `pred` holds.
pub fn workload_where(report: &Value, pred: impl Fn(&Value) -> bool) -> Option<&Value> {
    report["workloads"].as_object()?.values().find(|w| pred(w))
}

/// A number field of a JSON object.
pub fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}
