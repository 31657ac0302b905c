//! The seed's CLI and output contract against real traffic (-t/-c, -a, -o, units, exited
//! rows, a closed pipe), and every bad input: one line, the right exit status, nothing left
//! behind.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use procnetmon2_integration::{
    Cgroup, Monitor, Netns, Proc, Veth, bin, bpftool_cgroup_tree, cgroup2_root, current,
    leftover_cgroups, num, run_monitor, skip_unless_root, udp4_bytes, until_counting,
};

fn udp_pair(subnet: u8) -> (Netns, Netns, String, Proc) {
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", subnet);
    let addr = format!("{}:7{subnet:03}", v.ip_b);
    let sink = Proc::peer(&["udp-recv", &addr, "1000000"], None, Some(&b));
    sink.expect_line("ready");
    (a, b, addr, sink)
}

/// `-t D -c`: a report every interval, then the window's final report whose bytes are the
/// window's totals and whose rates are its averages; `-a` sums processes; peaks are the peak of
/// the summed per-interval rate; `-o FILE` gets the reports.
#[test]
fn window_continuous_aggregate_and_output_file() {
    if skip_unless_root() {
        return;
    }
    let (a, _b, addr, _sink) = udp_pair(51);
    let cg = Cgroup::new();
    let mut s1 = Proc::peer(
        &["udp-send", &addr, "300", "700", "connected", "wait", "hold"],
        Some(&cg),
        Some(&a),
    );
    let mut s2 = Proc::peer(
        &[
            "udp-send",
            &addr,
            "200",
            "100",
            "unconnected",
            "wait",
            "hold",
        ],
        Some(&cg),
        Some(&a),
    );
    s1.expect_line("bound");
    s2.expect_line("bound");
    let out = std::env::temp_dir().join(procnetmon2_integration::unique("pnm-out-"));
    let pids = format!("{},{}", s1.pid(), s2.pid());
    let mon = Monitor::start(&[
        "-p",
        &pids,
        "-t",
        "3s",
        "-c",
        "-a",
        "--json",
        "--interval",
        "500ms",
        "-o",
        out.to_str().expect("utf8"),
    ]);
    s1.send_line("go");
    s2.send_line("go");
    s1.expect_line("done");
    s2.expect_line("done");
    let (status, stdout_reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    assert!(stdout_reports.is_empty(), "-o: nothing on stdout");
    let text = std::fs::read_to_string(&out).expect("output file");
    let _ = std::fs::remove_file(&out);
    let reports: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert!(
        reports.len() >= 5,
        "interval reports and a final one: {}",
        reports.len()
    );
    let last = reports.last().expect("final");
    let (b1, b2) = (300 * udp4_bytes(700), 200 * udp4_bytes(100));
    assert_eq!(num(current(last, s1.pid()), "bytes_out"), b1);
    assert_eq!(num(current(last, s2.pid()), "bytes_out"), b2);
    let agg = &last["aggregated"];
    assert_eq!(num(agg, "bytes_out"), b1 + b2);
    assert_eq!(num(agg, "packets_out"), 500);
    // Average rate over the 3 s window (stretched by PNM_TIME_SCALE, as Monitor::start
    // stretches -t), in bits per second.
    let avg = num(agg, "rate_out") as f64;
    let expect = (b1 + b2) as f64 * 8.0 / (3 * procnetmon2_integration::time_scale()) as f64;
    assert!(
        (avg - expect).abs() / expect < 0.1,
        "average {avg} vs {expect}"
    );
    // The aggregate's peak is the peak of the summed per-interval rate: at least the average,
    // at most the sum of the two peaks (each rounded to an integer in JSON: allow 2).
    let (p1, p2) = (
        num(current(last, s1.pid()), "peak_rate_out"),
        num(current(last, s2.pid()), "peak_rate_out"),
    );
    let pa = num(agg, "peak_rate_out");
    assert!(
        pa as f64 >= avg && pa <= p1 + p2 + 2,
        "peak {pa}, parts {p1} {p2}"
    );
    for r in &reports {
        assert!(r["timestamp"].as_str().is_some_and(chrono_like), "{r}");
        assert_eq!(r["processes"][s1.pid().to_string()]["pid"], s1.pid());
        assert!(
            r["processes"][s1.pid().to_string()]["runtime"]
                .as_str()
                .is_some_and(|t| t.ends_with('s'))
        );
    }
    s1.close_stdin();
    s2.close_stdin();
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
    if skip_unless_root() {
        return;
    }
    let (a, _b, addr, _sink) = udp_pair(52);
    let cg = Cgroup::new();
    let mut s = Proc::peer(
        &["udp-send", &addr, "100", "1000", "connected", "wait"],
        Some(&cg),
        Some(&a),
    );
    s.expect_line("bound");
    let mut mon = Command::new(bin("procnetmon2"))
        .args(["-p", &s.pid().to_string(), "--interval", "300ms"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    until_counting(&mut mon);
    // A few intervals before the target sends and exits.
    std::thread::sleep(std::time::Duration::from_millis(700));
    s.send_line("go");
    s.expect_line("done");
    s.wait();
    let out = mon.wait_with_output().expect("wait");
    mon = Command::new("true").spawn().expect("true");
    let _ = mon.wait();
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
        .rfind(|l| l.starts_with(&s.pid().to_string()))
        .expect("row");
    assert!(
        last_row.contains("(exited)") && last_row.contains("KiB"),
        "{last_row}"
    );
}

/// `procnetmon2 --json … | head -1` ends quietly: exit 0, nothing on stderr, nothing left.
#[test]
fn closed_stdout_is_a_quiet_exit() {
    if skip_unless_root() {
        return;
    }
    let ns = Netns::new(false);
    let cg = Cgroup::new();
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
    assert!(serde_json::from_str::<serde_json::Value>(&first).is_ok());
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

/// Every bad input: one line on stderr naming the fix, exit 2 (usage) or 1 (runtime) or
/// 127 (command not found), no panic, and nothing left behind.
#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    if skip_unless_root() {
        return;
    }
    // A zombie: a child of ours that exited and was not reaped.
    let zombie = Command::new("true").spawn().expect("true");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let z = zombie.id().to_string();
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("n");
    let above = (pid_max + 1).to_string();
    let me = std::process::id().to_string();
    // Issue 26's hostile inputs: a 10 GB (sparse) classes file, /dev/zero, a directory that
    // only looks like /proc.
    let tmp = std::env::temp_dir().join(format!("pnm-hostile-{me}"));
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
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec![], 2, "-p"),
        (vec!["-p", "999999999"], 2, "pid_max"),
        (vec!["-p", "4000000"], 2, ""),
        (vec!["-p", "0"], 2, "positive"),
        (vec!["-p", "-5"], 2, "positive"),
        (vec!["-p", &above], 2, "pid_max"),
        (vec!["-p", "abc"], 2, "not a process ID"),
        (vec!["-p", "1,,2"], 2, "empty entry"),
        (vec!["-p", "1,"], 2, "empty entry"),
        (vec!["-p", "2"], 2, "kernel thread"),
        (vec!["-p", &z], 2, "zombie"),
        (vec!["-p", &me, "-t", "soon"], 2, "duration"),
        (vec!["-p", &me, "-t", "0s"], 2, "greater than zero"),
        (vec!["-p", &me, "-t", "-3s"], 2, "duration"),
        (vec!["-p", &me, "-i", "averyveryverylongname"], 2, "15"),
        (vec!["-p", &me, "-i", "nosuchif0"], 2, "nosuchif0"),
        (vec!["-p", &me, "--bogus"], 2, "--bogus"),
        (vec!["-p", &me, "--class", "nocidr"], 2, "NAME=CIDR"),
        (vec!["-p", &me, "--class", "x=10.1.2.3/8"], 2, "10.0.0.0/8"),
        (
            vec!["-p", &me, "--classes", "/no/such/classes.yaml"],
            2,
            "--classes",
        ),
        (
            vec!["-p", &me, "--destinations-max", "0"],
            2,
            "at least one",
        ),
        (
            vec!["-p", &me, "--classes", "/dev/zero"],
            2,
            "larger than 1024 KiB",
        ),
        (
            vec!["-p", &me, "--classes", &huge],
            2,
            "larger than 1024 KiB",
        ),
        (vec!["-p", &me, "--max-series", "0"], 2, "--max-series 0"),
        (
            vec!["-p", &me, "--host-proc", &fakeproc],
            2,
            "not a proc filesystem",
        ),
        (vec!["--", "/no/such/command"], 127, "/no/such/command"),
    ];
    for (args, code, needle) in &cases {
        let (status, reports, err) = run_monitor(args);
        assert_eq!(status.code(), Some(*code), "{args:?}: {err}");
        assert!(reports.is_empty(), "{args:?}");
        let err = err.trim();
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&tmp).expect("clean up");
    // Duplicates are dropped quietly.
    let (status, reports, err) =
        run_monitor(&["-p", &format!("{me},{me}"), "--json", "-t", "300ms"]);
    assert!(status.success(), "{err}");
    assert_eq!(
        reports[0]["processes"]
            .as_object()
            .expect("processes")
            .len(),
        1
    );
    // Unprivileged: says which privileges are missing.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(bin("procnetmon2"))
        .args(["-p", &me, "-t", "1s"])
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
    let mut zombie = zombie;
    let _ = zombie.wait();
    // Nothing left behind: no procnetmon2 program attached to any cgroup or loaded at all.
    // (The kernel frees the programs of a closed process after a grace period, and earlier
    // tests' runs may still be on their way out: allow it a few seconds.)
    let settled = (0..100).any(|_| {
        let ok = !bpftool_cgroup_tree().contains("pnm_")
            && procnetmon2_integration::sh("bpftool", &["prog", "list"])
                .matches("pnm_")
                .count()
                == 0;
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        ok
    });
    assert!(
        settled,
        "programs or links left behind:\n{}",
        bpftool_cgroup_tree()
    );
    assert!(leftover_cgroups(&cgroup2_root()).is_empty());
    // No record of a finished run (records of other live runs may exist).
    let stale: Vec<String> = std::fs::read_dir("/run/procnetmon2")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.split('.')
                .next()
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .collect();
    assert!(stale.is_empty(), "records left: {stale:?}");
}

/// A target that exits keeps its row (marked exited, totals kept) while -t runs on; a reused
/// PID is never taken for it (start times differ).
#[test]
fn exited_target_keeps_its_row_during_a_window() {
    if skip_unless_root() {
        return;
    }
    let (a, _b, addr, _sink) = udp_pair(53);
    let cg = Cgroup::new();
    let mut s = Proc::peer(
        &["udp-send", &addr, "50", "100", "connected", "wait"],
        Some(&cg),
        Some(&a),
    );
    s.expect_line("bound");
    let mon = Monitor::start(&[
        "-p",
        &s.pid().to_string(),
        "--json",
        "-t",
        "2s",
        "-c",
        "--interval",
        "300ms",
    ]);
    s.send_line("go");
    s.expect_line("done");
    s.wait();
    let (status, reports, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let last = reports.last().expect("final");
    let p = &last["processes"][s.pid().to_string()];
    assert_eq!(p["exited"], true);
    assert_eq!(num(&p["current"], "bytes_out"), 50 * udp4_bytes(100));
    assert_eq!(
        num(&p["current"], "tcp_connections") + num(&p["current"], "udp_connections"),
        0
    );
}
