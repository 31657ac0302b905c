//! `--record DIR` in live runs against real traffic: replaying the recording gives the bytes,
//! packets and peaks the live run printed (and the ground truth of the payloads sent); a
//! second run cannot record into the same DIR; a spawned command is recorded to its end.
//! The recorder's format, faults and hostile directories are unit tests (agent/src/record).

use std::process::Command;

use procnetmon2_integration::{
    Monitor, Netns, Proc, Veth, bin, current, num, run_monitor, skip_unless_root, udp4_bytes,
    unique,
};

fn udp_pair(subnet: u8) -> (Netns, Netns, String, Proc) {
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", subnet);
    let addr = format!("{}:7{subnet:03}", v.ip_b);
    let sink = Proc::peer(&["udp-recv", &addr, "1000000"], None, Some(&b));
    sink.expect_line("ready");
    (a, b, addr, sink)
}

/// A fresh directory path (not created: the recorder creates it) removed on drop.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(unique("pnm-rec-")))
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `procnetmon2 replay DIR --json`: the one report.
fn replay_json(dir: &Dir) -> serde_json::Value {
    let out = Command::new(bin("procnetmon2"))
        .args(["replay", dir.arg(), "--json"])
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let report = serde_json::from_str(lines.next().expect("a report")).expect("JSON");
    assert!(lines.next().is_none(), "one report: {text}");
    report
}

const FIGURES: [&str; 6] = [
    "bytes_in",
    "bytes_out",
    "packets_in",
    "packets_out",
    "peak_rate_in",
    "peak_rate_out",
];

/// `-t 10s --json --record DIR`: the recording replays to the live window's figures; a
/// second run is refused the directory while the first records into it.
#[test]
fn a_live_window_replays_to_the_same_figures() {
    if skip_unless_root() {
        return;
    }
    let (a, _b, addr, _sink) = udp_pair(91);
    let mut sender = Proc::peer(
        &["udp-send", &addr, "400", "900", "connected", "wait", "hold"],
        None,
        Some(&a),
    );
    sender.expect_line("bound");
    let dir = Dir::new();
    let pid = sender.pid().to_string();
    let mon = Monitor::start(&["-p", &pid, "-t", "10s", "--json", "--record", dir.arg()]);
    // A second run recording into the same directory is refused before it sets anything up.
    let (status, reports, err) = run_monitor(&["-p", &pid, "-t", "1s", "--record", dir.arg()]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(reports.is_empty());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("is recording there"), "{err}");
    sender.send_line("go");
    sender.expect_line("done");
    let (status, live, err) = mon.finish();
    assert!(status.success(), "{err:?}");
    let live = live.last().expect("the window's report");
    let replayed = replay_json(&dir);
    let (l, r) = (
        current(live, sender.pid()),
        current(&replayed, sender.pid()),
    );
    for k in FIGURES {
        assert_eq!(num(r, k), num(l, k), "{k}: live {l} replayed {r}");
    }
    // Both are the ground truth: 400 datagrams of 900 bytes.
    assert_eq!(num(r, "bytes_out"), 400 * udp4_bytes(900));
    assert_eq!(num(r, "packets_out"), 400);
}

/// `-- CMD --record DIR` (reports every interval, the last at the command's exit): the
/// recording holds the run to the command's end.
#[test]
fn a_spawned_command_is_recorded_to_its_end() {
    if skip_unless_root() {
        return;
    }
    let (a, _b, addr, _sink) = udp_pair(92);
    let dir = Dir::new();
    let ns_name = a.name.as_str();
    let peer = bin("pnm-peer");
    // The command's own stdout is the run's: its "done" must not mix with the JSON reports.
    let cmd = format!(
        "exec ip netns exec {ns_name} {} udp-send {addr} 250 600 unconnected >/dev/null",
        peer.display()
    );
    let (status, live, err) = run_monitor(&[
        "--json",
        "--interval",
        "200ms",
        "--record",
        dir.arg(),
        "--",
        "sh",
        "-c",
        &cmd,
    ]);
    assert!(status.success(), "{err}");
    let last = live.last().expect("reports");
    let replayed = replay_json(&dir);
    let procs = |r: &serde_json::Value| r["processes"].as_object().expect("processes").clone();
    let (l, r) = (procs(last), procs(&replayed));
    assert_eq!(l.keys().collect::<Vec<_>>(), r.keys().collect::<Vec<_>>());
    let (l, r) = (
        &l.values().next().expect("the command")["current"],
        &r.values().next().expect("the command")["current"],
    );
    for k in FIGURES {
        assert_eq!(num(r, k), num(l, k), "{k}: live {l} replayed {r}");
    }
    assert_eq!(num(r, "bytes_out"), 250 * udp4_bytes(600));
}
