//! The seed's CLI and output contract against real traffic (-t/-c, -a, -o, units, exited
//! rows, a closed pipe), and every bad input: one line, the right exit status, nothing left
//! behind.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use procnetmon2_integration::{
    Cgroup, Counts, Link, Monitor, Peer, Proc, Scenario, bin, bpftool_cgroup_tree_under, current,
    leftover_cgroups, num, pids, pnm_programs, run_monitor_in, time_scale, unique, until_counting,
};
use serde_json::Value;

/// A link whose side b has a UDP sink on port `7SUBNET`; its address.
fn udp_link(s: &Scenario, subnet: u8) -> (Link, String) {
    let link = s.link(subnet);
    let addr = link.addr_b(7000 + u16::from(subnet));
    s.background(Peer::udp_sink(&addr).in_netns(&link.b));
    (link, addr)
}

/// A UDP sender in `cg` and side a of `link`, its socket bound before any monitor starts,
/// sending on "go" ([`Peer::udp_send`]: `connected` or not).
fn sender(send: Peer<'_>, cg: &Cgroup, link: &Link) -> Proc {
    send.on_go().in_cgroup(cg).in_netns(&link.a).start()
}

/// `-t D -c`: a report every interval, then the window's final report whose bytes are the
/// window's totals and whose rates are its averages; `-a` sums processes; peaks are the peak of
/// the summed per-interval rate; `-o FILE` gets the reports.
#[test]
fn window_continuous_aggregate_and_output_file() {
    let Some(s) = Scenario::new() else { return };
    let ((link, addr), cg) = (udp_link(&s, 51), s.cgroup());
    let mut s1 = sender(
        Peer::udp_send(&addr, 300, 700).connected().hold(),
        &cg,
        &link,
    );
    let mut s2 = sender(Peer::udp_send(&addr, 200, 100).hold(), &cg, &link);
    let out = OutFile(std::env::temp_dir().join(unique("pnm-out-")));
    let mon = Monitor::start(&[
        "-p",
        &pids(&[&s1, &s2]),
        "-t",
        "3s",
        "-c",
        "-a",
        "--json",
        "--interval",
        "500ms",
        "-o",
        out.0.to_str().expect("utf8"),
    ]);
    s1.go("done");
    s2.go("done");
    let run = mon.finish_ok();
    assert!(run.reports.is_empty(), "-o: nothing on stdout");
    let reports = out.reports();
    assert!(
        reports.len() >= 5,
        "interval reports and a final one: {}",
        reports.len()
    );
    let last = reports.last().expect("final");
    let (c1, c2) = (Counts::udp4_out(300, 700), Counts::udp4_out(200, 100));
    assert_eq!(Counts::of(current(last, s1.pid())), c1);
    assert_eq!(Counts::of(current(last, s2.pid())), c2);
    let agg = &last["aggregated"];
    assert_eq!(Counts::of(agg), c1.plus(c2), "{agg}");
    window_rates(last, &[s1.pid(), s2.pid()], c1.bytes_out + c2.bytes_out);
    for r in &reports {
        assert!(r["timestamp"].as_str().is_some_and(chrono_like), "{r}");
        let p = &r["processes"][s1.pid().to_string()];
        assert_eq!(p["pid"], s1.pid());
        assert!(
            p["runtime"].as_str().is_some_and(|t| t.ends_with('s')),
            "{p}"
        );
    }
}

/// A file `-o` writes, removed on drop.
struct OutFile(std::path::PathBuf);

impl OutFile {
    /// Its reports: one JSON object per line, every line.
    fn reports(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.0).expect("output file");
        text.lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The final report's rates over a 3 s window with `sent` bytes from the processes `pids`:
/// the aggregate's average is the window's (stretched by PNM_TIME_SCALE, as Monitor::start
/// stretches -t), in bits per second; its peak is the peak of the summed per-interval rate.
fn window_rates(last: &Value, pids: &[u32], sent: u64) {
    let agg = &last["aggregated"];
    let avg = num(agg, "rate_out") as f64;
    let expect = sent as f64 * 8.0 / (3 * time_scale()) as f64;
    assert!(
        (avg - expect).abs() / expect < 0.1,
        "average {avg} vs {expect}"
    );
    // At least the average, at most the sum of the parts' peaks (each rounded to an integer
    // in JSON: allow one each).
    let parts: u64 = pids
        .iter()
        .map(|p| num(current(last, *p), "peak_rate_out"))
        .sum();
    let pa = num(agg, "peak_rate_out");
    assert!(
        pa as f64 >= avg && pa <= parts + pids.len() as u64,
        "peak {pa}, parts {parts}"
    );
}

/// RFC 3339 with an offset, seconds precision: 2025-02-18T17:48:42+01:00.
fn chrono_like(t: &str) -> bool {
    t.len() == 25
        && t.as_bytes()[10] == b'T'
        && (t.as_bytes()[19] == b'+' || t.as_bytes()[19] == b'-')
}

/// Without -t: a report every interval; when every target has exited, a last report with the
/// rows marked exited, and the run ends by itself. Piped table output has no terminal codes.
#[test]
fn continuous_table_until_targets_exit() {
    let Some(s) = Scenario::new() else { return };
    let ((link, addr), cg) = (udp_link(&s, 52), s.cgroup());
    let mut t = sender(Peer::udp_send(&addr, 100, 1000).connected(), &cg, &link);
    let mut mon = Command::new(bin("procnetmon2"))
        .args(["-p", &t.pid().to_string(), "--interval", "300ms"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    until_counting(&mut mon);
    // A few intervals before the target sends and exits.
    std::thread::sleep(std::time::Duration::from_millis(700));
    t.go("done");
    t.wait();
    let out = mon.wait_with_output().expect("wait");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains('\x1b'), "no terminal codes when piped");
    let header = text.lines().find(|l| l.starts_with("PID")).expect("header");
    for col in [
        "Name",
        "Rate In",
        "Rate Out",
        "Peak In",
        "Peak Out",
        "Total In",
        "Total Out",
        "TCP",
        "UDP",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        text.lines().filter(|l| l.starts_with("PID")).count() >= 2,
        "a report per interval"
    );
    let last_row = text
        .lines()
        .rfind(|l| l.starts_with(&t.pid().to_string()))
        .expect("row");
    assert!(
        last_row.contains("(exited)") && last_row.contains("KiB"),
        "{last_row}"
    );
}

/// `procnetmon2 --json … | head -1` ends quietly: exit 0, nothing on stderr, nothing left.
#[test]
fn closed_stdout_is_a_quiet_exit() {
    let Some(s) = Scenario::new() else { return };
    let (ns, cg) = (s.netns(), s.cgroup());
    let t = Proc::spawn(Path::new("sleep"), &["30"], Some(&cg), Some(&ns));
    let mut mon = Command::new(bin("procnetmon2"))
        .args([
            "-p",
            &t.pid().to_string(),
            "--json",
            "--interval",
            "200ms",
            "--isolate",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    BufReader::new(mon.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a line");
    // The reader is gone now (dropped): the next write hits a closed pipe.
    let out = mon.wait_with_output().expect("wait");
    assert!(serde_json::from_str::<Value>(&first).is_ok());
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).trim().is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        leftover_cgroups(&cg.dir).is_empty(),
        "the isolated process went back"
    );
}

/// The pid_max of this kernel.
fn pid_max() -> u64 {
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("n")
}

/// Every bad input: (arguments, exit status, a word the one line must contain). `me` is a
/// live PID, `zombie` one that exited unreaped.
fn bad_inputs<'a>(
    me: &'a str,
    zombie: &'a str,
    above: &'a str,
) -> Vec<(Vec<&'a str>, i32, &'a str)> {
    vec![
        (vec![], 2, "-p"),
        (vec!["-p", "999999999"], 2, "pid_max"),
        (vec!["-p", "4000000"], 2, ""),
        (vec!["-p", "0"], 2, "positive"),
        (vec!["-p", "-5"], 2, "positive"),
        (vec!["-p", above], 2, "pid_max"),
        (vec!["-p", "abc"], 2, "not a process ID"),
        (vec!["-p", "1,,2"], 2, "empty entry"),
        (vec!["-p", "1,"], 2, "empty entry"),
        (vec!["-p", "2"], 2, "kernel thread"),
        (vec!["-p", zombie], 2, "zombie"),
        (vec!["-p", me, "-t", "soon"], 2, "duration"),
        (vec!["-p", me, "-t", "0s"], 2, "greater than zero"),
        (vec!["-p", me, "-t", "-3s"], 2, "duration"),
        (vec!["-p", me, "-i", "averyveryverylongname"], 2, "15"),
        (vec!["-p", me, "-i", "nosuchif0"], 2, "nosuchif0"),
        (vec!["-p", me, "--bogus"], 2, "--bogus"),
        (vec!["-p", me, "--class", "nocidr"], 2, "NAME=CIDR"),
        (vec!["-p", me, "--class", "x=10.1.2.3/8"], 2, "10.0.0.0/8"),
        (
            vec!["-p", me, "--classes", "/no/such/classes.yaml"],
            2,
            "--classes",
        ),
        (vec!["-p", me, "--destinations-max", "0"], 2, "at least one"),
        (vec!["--", "/no/such/command"], 127, "/no/such/command"),
    ]
}

/// Unprivileged (user nobody, no capabilities): one line naming every privilege it lacks.
fn unprivileged_says_what_is_missing(me: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin("procnetmon2"))
        .args(["-p", me, "-t", "1s"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for cap in [
        "root",
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_SYS_ADMIN",
        "CAP_SYS_PTRACE",
    ] {
        assert!(err.contains(cap), "{err}");
    }
}

/// Records of runs in /run/procnetmon2 whose run is gone.
fn dead_records() -> BTreeSet<String> {
    std::fs::read_dir("/run/procnetmon2")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.split('.')
                .next()
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect()
}

/// Nothing of the runs made since `programs` and `records` were taken is left: no program
/// attached under `home` (where they ran and what they watched), no procnetmon2 cgroup there,
/// no program loaded since then that is not another run's (attached elsewhere), no record of
/// a finished run. The machine is shared: other runs' programs, cgroups and records are not
/// ours to judge. The kernel frees the programs of a closed process after a grace period: a
/// few seconds are allowed.
fn nothing_left_behind(
    home: &Cgroup,
    programs: &BTreeMap<u64, Vec<String>>,
    records: &BTreeSet<String>,
) {
    let ours =
        |at: &Vec<String>| at.is_empty() || at.iter().any(|c| Path::new(c).starts_with(&home.dir));
    let left = || -> Vec<u64> {
        pnm_programs()
            .into_iter()
            .filter(|(id, at)| !programs.contains_key(id) && ours(at))
            .map(|(id, _)| id)
            .collect()
    };
    let settled = (0..100).any(|_| {
        let ok = left().is_empty() && !bpftool_cgroup_tree_under(&home.dir).contains("pnm_");
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ok
    });
    assert!(
        settled,
        "programs left behind: {:?}\n{}",
        left(),
        bpftool_cgroup_tree_under(&home.dir)
    );
    assert!(leftover_cgroups(&home.dir).is_empty());
    let stale: Vec<String> = dead_records().difference(records).cloned().collect();
    assert!(stale.is_empty(), "records left: {stale:?}");
}

/// Every bad input: one line on stderr naming the fix, exit 2 (usage) or 1 (runtime) or
/// 127 (command not found), no panic, and nothing left behind.
#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    let Some(s) = Scenario::new() else { return };
    let (programs, records) = (pnm_programs(), dead_records());
    // The runs are made from a cgroup of the test's, and a live target sits in another.
    let (home, cg) = (s.cgroup(), s.cgroup());
    let target = Proc::spawn(Path::new("sleep"), &["60"], Some(&cg), None);
    // A zombie: a child of ours that exited and was not reaped.
    let mut zombie = Command::new("true").spawn().expect("true");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (z, me, above) = (
        zombie.id().to_string(),
        target.pid().to_string(),
        (pid_max() + 1).to_string(),
    );
    // Issue 26's hostile inputs: a 10 GB (sparse) classes file, /dev/zero, a directory that
    // only looks like /proc.
    let tmp = std::env::temp_dir().join(unique("pnm-hostile-"));
    std::fs::create_dir_all(tmp.join("fakeproc/self")).expect("mkdir");
    let huge = tmp.join("huge.yaml");
    std::fs::File::create(&huge)
        .expect("create")
        .set_len(10_000_000_000)
        .expect("sparse 10 GB");
    let (huge, fakeproc) = (
        huge.to_str().expect("utf8").to_owned(),
        tmp.join("fakeproc").to_str().expect("utf8").to_owned(),
    );
    let mut cases = bad_inputs(&me, &z, &above);
    cases.extend([
        (
            vec!["-p", me.as_str(), "--classes", "/dev/zero"],
            2,
            "larger than 1024 KiB",
        ),
        (
            vec!["-p", me.as_str(), "--classes", &huge],
            2,
            "larger than 1024 KiB",
        ),
        (
            vec!["-p", me.as_str(), "--max-series", "0"],
            2,
            "--max-series 0",
        ),
        (
            vec!["-p", me.as_str(), "--host-proc", &fakeproc],
            2,
            "not a proc filesystem",
        ),
    ]);
    for (args, code, needle) in &cases {
        let (status, reports, err) = run_monitor_in(&home, args);
        assert_eq!(status.code(), Some(*code), "{args:?}: {err}");
        assert!(reports.is_empty(), "{args:?}");
        let err = err.trim();
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Duplicates are dropped quietly.
    let (status, reports, err) = run_monitor_in(
        &home,
        &["-p", &format!("{me},{me}"), "--json", "-t", "300ms"],
    );
    assert!(status.success(), "{err}");
    assert_eq!(reports.len(), 1, "{err}");
    let procs = reports[0]["processes"].as_object().expect("processes");
    assert_eq!(procs.len(), 1);
    std::fs::remove_dir_all(&tmp).expect("clean up");
    unprivileged_says_what_is_missing(&me);
    let _ = zombie.wait();
    nothing_left_behind(&cg, &programs, &records);
    nothing_left_behind(&home, &programs, &records);
}

/// A target that exits keeps its row (marked exited, totals kept) while -t runs on; a reused
/// PID is never taken for it (start times differ).
#[test]
fn exited_target_keeps_its_row_during_a_window() {
    let Some(s) = Scenario::new() else { return };
    let ((link, addr), cg) = (udp_link(&s, 53), s.cgroup());
    let mut t = sender(Peer::udp_send(&addr, 50, 100).connected(), &cg, &link);
    let pid = t.pid().to_string();
    let mon = Monitor::start(&[
        "-p",
        &pid,
        "--json",
        "-t",
        "2s",
        "-c",
        "--interval",
        "300ms",
    ]);
    t.go("done");
    t.wait();
    let run = mon.finish_ok();
    let p = &run.last()["processes"][&pid];
    assert_eq!(p["exited"], true);
    assert_eq!(Counts::of(&p["current"]), Counts::udp4_out(50, 100));
    assert_eq!(
        num(&p["current"], "tcp_connections") + num(&p["current"], "udp_connections"),
        0
    );
}
