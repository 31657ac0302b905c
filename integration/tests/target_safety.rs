//! The target is never harmed and state cannot be planted: a target whose original cgroup
//! refuses it back stays alive in its kept cgroup until `--cleanup` can move it; a target
//! that forks all the time is put back whole, children and all; two runs racing to isolate
//! one PID leave it alone; the state directory is `0700` under umask 000; a planted
//! temporary-file symlink or a record of another user's changes nothing.
//!
//! Every run here sees its own `/run`: a test-owned directory bind-mounted over `/run` in a
//! mount namespace of the run's own, so these records never meet those of other runs on the
//! machine (and planted ones never reach them).

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use procnetmon2_integration::{
    Cgroup, Monitor, Proc, Scenario, bin, cgroup_of, cgroup2_root, leftover_cgroups, skip,
    skip_unless_root, unique,
};

/// A private `/run` for procnetmon2 runs, removed on drop.
struct PrivateRun {
    root: PathBuf,
}

impl PrivateRun {
    fn new() -> Self {
        let root = std::env::temp_dir().join(unique("pnm-test-run-"));
        fs::create_dir(&root).expect("mkdir private run");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod");
        Self { root }
    }

    /// The state directory as the runs see it at /run/procnetmon2.
    fn state(&self) -> PathBuf {
        self.root.join("procnetmon2")
    }

    /// `unshare -m sh -c 'umask 000; mount --bind ROOT /run; PRE; exec "$@"' ROOT`, to be
    /// followed by `procnetmon2 ARGS`: the shell execs procnetmon2, so `$$` in `pre` is the
    /// run's PID.
    fn wrapper(&self, pre: &str) -> Vec<String> {
        let script = format!("umask 000 && mount --bind \"$0\" /run && {pre} exec \"$@\"");
        let mut v: Vec<String> = ["unshare", "-m", "--propagation", "private", "sh", "-c"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        v.push(script);
        v.push(self.root.display().to_string());
        v
    }

    /// The whole command line of a run.
    fn argv(&self, pre: &str, args: &[&str]) -> Vec<String> {
        let mut v = self.wrapper(pre);
        v.push(bin("procnetmon2").display().to_string());
        v.extend(args.iter().map(|s| (*s).to_owned()));
        v
    }

    fn command(&self, pre: &str, args: &[&str]) -> Command {
        let argv = self.argv(pre, args);
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    }

    /// Runs to completion; (exit code, stderr).
    fn run(&self, pre: &str, args: &[&str]) -> (Option<i32>, String) {
        let out = self
            .command(pre, args)
            .stdin(Stdio::null())
            .output()
            .expect("run procnetmon2");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for PrivateRun {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A dedicated cgroup a test may leave behind when it fails: its processes (the test's own
/// `sleep`) end and it is removed, before its parent's guard runs.
struct Dedicated(PathBuf);

impl Drop for Dedicated {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = fs::write(self.0.join("cgroup.kill"), "1");
            for _ in 0..250 {
                if fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `hugetlb` enabled in the cgroup2 root's subtree_control for the test (the only controller
/// this hybrid layout leaves to v2), so a test cgroup can enable it and refuse processes.
/// Disabled again on drop if the test enabled it.
struct RootHugetlb {
    enabled_here: bool,
}

impl RootHugetlb {
    fn new() -> Option<Self> {
        let root = cgroup2_root();
        let available = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        if !available.split_whitespace().any(|c| c == "hugetlb") {
            return None;
        }
        let on = |s: &str| s.split_whitespace().any(|c| c == "hugetlb");
        let before = fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
        if on(&before) {
            return Some(Self {
                enabled_here: false,
            });
        }
        fs::write(root.join("cgroup.subtree_control"), "+hugetlb").ok()?;
        Some(Self { enabled_here: true })
    }
}

impl Drop for RootHugetlb {
    fn drop(&mut self) {
        if self.enabled_here {
            let _ = fs::write(cgroup2_root().join("cgroup.subtree_control"), "-hugetlb");
        }
    }
}

/// True while `pid` runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// The cgroup v2 path of `dir` (relative to the mount), as /proc/PID/cgroup writes it.
fn rel(dir: &Path) -> String {
    format!(
        "/{}",
        dir.strip_prefix(cgroup2_root())
            .expect("under the cgroup2 mount")
            .display()
    )
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// What every test here needs: a private `/run`, and a target (`sleep`) in a cgroup of its
/// own, with the dedicated cgroup `--isolate` would make for it (removed if left behind).
/// Fields drop in order: the target first.
struct Setup {
    target: Proc,
    dedicated: Dedicated,
    cg: std::rc::Rc<Cgroup>,
    run: PrivateRun,
}

impl Setup {
    fn new(s: &Scenario) -> Self {
        let run = PrivateRun::new();
        let cg = s.cgroup();
        let target = Proc::spawn(Path::new("sleep"), &["600"], Some(&cg), None);
        let dedicated = Dedicated(cg.dir.join(format!("procnetmon2-{}", target.pid())));
        Self {
            target,
            dedicated,
            cg,
            run,
        }
    }

    fn pid(&self) -> u32 {
        self.target.pid()
    }

    /// `-p TARGET --isolate --json -t WINDOW`.
    fn isolate_args(&self, window: &str) -> Vec<String> {
        [
            "-p",
            &self.pid().to_string(),
            "--isolate",
            "--json",
            "-t",
            window,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The target's cgroup now, against the two it may be in.
    fn in_original(&self) -> bool {
        cgroup_of(self.pid()) == rel(&self.cg.dir)
    }

    fn in_dedicated(&self) -> bool {
        cgroup_of(self.pid()) == rel(&self.dedicated.0)
    }

    /// The run records in the state directory.
    fn records(&self) -> Vec<String> {
        fs::read_dir(self.run.state())
            .expect("state dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .map(|e| fs::read_to_string(e.path()).expect("record"))
            .collect()
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The run that isolated the target cannot put it back (its original cgroup refuses it):
/// it says so, exits 1, records the target as stuck and leaves it alive where it is.
fn isolate_and_block_the_way_back(t: &Setup) {
    let mon = t
        .run
        .command("", &strs(&t.isolate_args("3s")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn procnetmon2");
    wait_for("the target to be isolated", || t.in_dedicated());
    // The original cgroup now holds no process: enabling a controller in it is allowed, and
    // from then on it refuses processes (EBUSY), so the move back fails.
    fs::write(t.cg.dir.join("cgroup.subtree_control"), "+hugetlb").expect("enable hugetlb");
    let (code, err) = mon.wait_with_output_checked();
    assert!(alive(t.pid()), "the target was harmed: {err}");
    assert_eq!(
        code,
        Some(1),
        "the run reports what it could not undo: {err}"
    );
    assert!(t.in_dedicated(), "it stays in the kept cgroup");
    let line = err
        .lines()
        .find(|l| l.contains("could not be moved back"))
        .unwrap_or_else(|| panic!("no error naming the process: {err}"));
    assert!(
        line.contains(&format!("process {}", t.pid()))
            && line.contains(&t.dedicated.0.display().to_string())
            && line.contains("--cleanup"),
        "{line}"
    );
    let records = t.records();
    assert!(
        records.iter().any(|r| r.contains("\"stuck\"")),
        "the record says so: {records:?}"
    );
}

#[test]
fn a_target_that_cannot_go_back_stays_alive_until_cleanup_can_move_it() {
    let Some(s) = Scenario::new() else { return };
    let Some(_hugetlb) = RootHugetlb::new() else {
        skip("no controller available to cgroup v2 to make a cgroup refuse processes");
        return;
    };
    let t = Setup::new(&s);
    isolate_and_block_the_way_back(&t);

    // A cleanup while the cgroup still refuses: nothing harmed, still recorded.
    let (code, err) = t.run.run("", &["--cleanup"]);
    assert_eq!(code, Some(1), "something stays behind: {err}");
    assert!(err.contains("could not clean up"), "{err}");
    assert!(alive(t.pid()));
    assert!(t.in_dedicated());

    // Once the original cgroup accepts processes again, --cleanup puts it back.
    fs::write(t.cg.dir.join("cgroup.subtree_control"), "-hugetlb").expect("disable hugetlb");
    let (code, err) = t.run.run("", &["--cleanup"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("cleaned up after run"), "{err}");
    assert!(alive(t.pid()));
    assert!(t.in_original(), "moved back");
    assert!(!t.dedicated.0.exists(), "dedicated cgroup removed");
    assert!(t.records().is_empty(), "records left");
}

/// A round count from environment variable `var` (default `default`).
fn rounds(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Lines of a run's stderr that warn about run records (a stale or refused one, or one the
/// run could not clean up after).
fn record_warnings(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| {
            l.contains("ignoring run record")
                || l.contains("could not")
                || ((l.contains("WARN") || l.contains("ERROR")) && l.contains("record"))
        })
        .collect()
}

/// After a round: the target and every process of its cgroup are back in `cg` itself, and no
/// cgroup is left under it (no `procnetmon2-*` one, nothing else).
fn put_back_whole(cg: &Cgroup, pid: u32, round: &str) {
    assert_eq!(cgroup_of(pid), rel(&cg.dir), "{round}: the target is back");
    assert!(
        leftover_cgroups(&cg.dir).is_empty(),
        "{round}: {:?}",
        leftover_cgroups(&cg.dir)
    );
    let children: Vec<_> = fs::read_dir(&cg.dir)
        .expect("test cgroup")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    assert!(
        children.is_empty(),
        "{round}: every child is in {} itself: {children:?}",
        cg.dir.display()
    );
}

/// Issue #31, as an operator saw it: `--isolate` on a shell that forks short-lived children
/// all the time (a build, a CGI server, a cron-like loop). Children exit between the listing
/// and the move (ESRCH) and new ones are forked meanwhile; the run used to exit 1, keep the
/// dedicated cgroup and blame the original cgroup. SIGKILL + `--cleanup` rounds, then
/// SIGTERM rounds (the normal exit path), each once the target has forked inside its
/// dedicated cgroup. Every round: exit 0, the target and its children back in their cgroup,
/// no `procnetmon2-*` cgroup left, no warning about records.
/// `PNM_ISOLATE_KILL_ROUNDS` (default 20) and `PNM_ISOLATE_TERM_ROUNDS` (default 5) set the
/// rounds: the emulated VMs of scripts/test-kernels run 4 and 2 (docs/kernels.md).
#[test]
fn a_forking_target_is_put_back_whole_after_sigkill_and_sigterm() {
    if skip_unless_root() {
        return;
    }
    let run = PrivateRun::new();
    let cg = Cgroup::new();
    let target = Proc::spawn(
        Path::new("sh"),
        &["-c", "while :; do (sleep 0.01) & sleep 0.003; done"],
        Some(&cg),
        None,
    );
    let pid = target.pid();
    let dedicated = Dedicated(cg.dir.join(format!("procnetmon2-{pid}")));
    let wrapper = run.wrapper("");
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let pid_arg = pid.to_string();
    let args = ["-p", pid_arg.as_str(), "--isolate", "--json"];
    let forked_inside = || {
        wait_for("the target to fork in its dedicated cgroup", || {
            fs::read_to_string(dedicated.0.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.trim() != pid_arg)
        });
    };
    for n in 1..=rounds("PNM_ISOLATE_KILL_ROUNDS", 20) {
        let round = format!("SIGKILL round {n}");
        let mon = Monitor::start_under(&wrapper, &args);
        forked_inside();
        mon.signal(libc::SIGKILL);
        let (_, _, err) = mon.finish();
        assert!(record_warnings(&err).is_empty(), "{round}: {err:?}");
        assert_eq!(cgroup_of(pid), rel(&dedicated.0), "{round}: left isolated");
        let (code, err) = run.run("", &["--cleanup"]);
        assert_eq!(code, Some(0), "{round}: {err}");
        let lines: Vec<String> = err.lines().map(str::to_owned).collect();
        assert!(
            lines.len() == 1 && lines[0].contains("cleaned up after run"),
            "{round}: {err}"
        );
        assert!(record_warnings(&lines).is_empty(), "{round}: {err}");
        put_back_whole(&cg, pid, &round);
    }
    for n in 1..=rounds("PNM_ISOLATE_TERM_ROUNDS", 5) {
        let round = format!("SIGTERM round {n}");
        let mon = Monitor::start_under(&wrapper, &args);
        forked_inside();
        let (status, _, err) = mon.stop();
        assert!(status.success(), "{round}: {err:?}");
        assert!(record_warnings(&err).is_empty(), "{round}: {err:?}");
        put_back_whole(&cg, pid, &round);
    }
    let records: Vec<_> = fs::read_dir(run.state())
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(records.is_empty(), "records left: {records:?}");
}

/// `Child::wait_with_output` with a deadline: (exit code, stderr).
trait WaitChecked {
    fn wait_with_output_checked(self) -> (Option<i32>, String);
}

impl WaitChecked for std::process::Child {
    fn wait_with_output_checked(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while matches!(self.try_wait(), Ok(None)) {
            assert!(Instant::now() < deadline, "procnetmon2 did not exit");
            thread::sleep(Duration::from_millis(20));
        }
        let out = self.wait_with_output().expect("output");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The syscall number task `pid` is stopped in, if it is in a ptrace stop.
fn stopped_in_syscall(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    if state != 't' {
        return None;
    }
    fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The second run of the race, under strace: its mkdir of the dedicated cgroup held back
/// (a fault-injection delay on exactly that path) until it is let go. Its PID once it is
/// stopped in that mkdir, and the strace child.
fn second_run_held_at_its_mkdir(t: &Setup, err_file: &Path) -> (u32, std::process::Child) {
    let argv = t.run.argv("", &strs(&t.isolate_args("1s")));
    let dedicated = t.dedicated.0.display().to_string();
    let strace = Command::new("strace")
        .args(["-I1", "-f", "-qq", "-o", "/dev/null", "-P", &dedicated])
        .args([
            "-e",
            "trace=mkdir,mkdirat",
            "-e",
            "inject=mkdir,mkdirat:delay_enter=300s",
        ])
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(err_file).expect("stderr file"))
        .spawn()
        .expect("spawn strace");
    let strace_pid = strace.id();
    let mut second = 0;
    wait_for("the second run to reach its mkdir", || {
        second = fs::read_to_string(format!("/proc/{strace_pid}/task/{strace_pid}/children"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(0);
        // mkdir (83) or mkdirat (258) on x86_64, aarch64's mkdirat (34).
        second != 0 && matches!(stopped_in_syscall(second), Some(83 | 258 | 34))
    });
    (second, strace)
}

/// Waits for `pid` (a process this test reaps as subreaper) to end; its wait status.
fn reap(pid: u32) -> i32 {
    let mut status = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // SAFETY: waitpid on a process this test reaps as subreaper.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 {
            return status;
        }
        assert!(r == 0 && Instant::now() < deadline, "{pid} did not end");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn two_runs_racing_to_isolate_one_pid_leave_the_target_alone() {
    let Some(s) = Scenario::new() else { return };
    if Command::new("strace").arg("-V").output().is_err() {
        skip("strace is not installed (scripts/setup installs it)");
        return;
    }
    let t = Setup::new(&s);
    // The orphaned second run (once strace is gone) is reaped here, so its status is ours.
    // SAFETY: plain prctl on this process.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
    // The race, every time: the second run waits at its mkdir until the first has claimed
    // the dedicated cgroup.
    let err_file = t.run.root.join("second.stderr");
    let (second, mut strace) = second_run_held_at_its_mkdir(&t, &err_file);
    let wrapper = t.run.wrapper("");
    let first = Monitor::start_under(&strs(&wrapper), &strs(&t.isolate_args("4s")));
    assert!(t.in_dedicated(), "the first run isolated it");
    // Let the second run's mkdir go: strace detaches and ends.
    // SAFETY: plain syscall on our own child.
    unsafe { libc::kill(strace.id() as i32, libc::SIGTERM) };
    let _ = strace.wait();
    let status = reap(second);
    let err = fs::read_to_string(&err_file).unwrap_or_default();
    assert!(alive(t.pid()), "the target was killed: {err}");
    assert!(libc::WIFEXITED(status), "second run: {err}");
    assert_eq!(libc::WEXITSTATUS(status), 1, "{err}");
    assert!(err.contains("already isolated"), "{err}");
    assert!(t.in_dedicated(), "the first run still holds it");
    first.finish_ok();
    assert!(alive(t.pid()));
    assert!(t.in_original(), "put back by the first run");
    assert!(!t.dedicated.0.exists());
}

#[test]
fn state_dir_is_0700_under_umask_000() {
    let Some(s) = Scenario::new() else { return };
    let t = Setup::new(&s);
    // umask 000 (every run here): the directory is still root's and 0700.
    let (code, err) = t.run.run("", &strs(&t.isolate_args("1s")));
    assert_eq!(code, Some(0), "{err}");
    let md = fs::metadata(t.run.state()).expect("state dir");
    assert_eq!(md.permissions().mode() & 0o7777, 0o700);
    assert_eq!(md.uid(), 0);
    assert!(t.in_original());
}

#[test]
fn planted_state_changes_nothing() {
    let Some(s) = Scenario::new() else { return };
    let t = Setup::new(&s);
    let (run, pid) = (&t.run, t.pid().to_string());
    fs::create_dir(run.state()).expect("state dir");
    fs::set_permissions(run.state(), fs::Permissions::from_mode(0o700)).expect("chmod");

    // A temporary file planted as a symlink under the run's own PID: written through, it
    // would overwrite the file it points to.
    let victim = run.root.join("victim");
    fs::write(&victim, "precious").expect("victim");
    let plant = format!(
        "ln -s {} /run/procnetmon2/$$.json.tmp && ",
        victim.display()
    );
    let (code, err) = run.run(&plant, &strs(&t.isolate_args("1s")));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(fs::read_to_string(&victim).expect("victim"), "precious");
    assert!(t.in_original());

    // A record of another user's, saying the target was moved by a dead run: the next run
    // must not act on it (here it would move the process out of its current cgroup).
    fs::create_dir(&t.dedicated.0).expect("mkdir");
    fs::write(t.dedicated.0.join("cgroup.procs"), &pid).expect("move");
    let record = serde_json::json!({
        "agent_pid": 4242,
        "mount": cgroup2_root(),
        "created": [t.dedicated.0],
        "moved": [{"pid": t.pid(), "start_ticks": 0, "from": t.cg.dir, "to": t.dedicated.0}],
    });
    let json = run.state().join("4242.json");
    let lock = run.state().join("4242.lock");
    fs::write(&json, record.to_string()).expect("plant record");
    fs::write(&lock, "").expect("plant lock");
    for f in [&json, &lock] {
        std::os::unix::fs::chown(f, Some(65534), Some(65534)).expect("chown");
    }
    let (code, err) = run.run("", &["--cleanup"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("ignoring run record") && err.contains("uid 65534"),
        "refused with a warning: {err}"
    );
    assert!(t.in_dedicated(), "nothing moved");
    assert!(json.exists() && lock.exists(), "nothing removed");
    fs::write(t.cg.dir.join("cgroup.procs"), &pid).expect("move back");
}
