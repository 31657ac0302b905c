//! `--record` when the disk fills mid-run, in a live run: one warning, counting and the JSON
//! reports go on, recording resumes once there is room, and the replay shows the gap while
//! its totals stay exact. The recording directory is on a small tmpfs of the test's own.
//! Host-only (scripts/test-kernels): a full tmpfs behaves the same on every kernel.

use std::process::Command;

use procnetmon2_integration::{
    Monitor, Netns, Proc, Veth, bin, current, num, sh, skip_unless_root, udp4_bytes, unique,
};

/// A tmpfs of `size` mounted on a fresh directory, unmounted and removed on drop.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = std::env::temp_dir().join(unique("pnm-full-"));
        std::fs::create_dir(&dir).expect("mkdir");
        let opts = format!("size={size},mode=0700");
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &opts,
                "pnm-test",
                dir.to_str().expect("utf-8"),
            ],
        );
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_full_disk_pauses_recording_and_counting_goes_on() {
    if skip_unless_root() {
        return;
    }
    let (a, b) = (Netns::new(false), Netns::new(false));
    let v = Veth::new(&a, "eth0", &b, "eth0", 93);
    let addr = format!("{}:7093", v.ip_b);
    let sink = Proc::peer(&["udp-recv", &addr, "1000000"], None, Some(&b));
    sink.expect_line("ready");
    let mut sender = Proc::peer(
        &["udp-send", &addr, "300", "700", "connected", "wait", "hold"],
        None,
        Some(&a),
    );
    sender.expect_line("bound");
    let fs = Tmpfs::new("1m");
    let dir = fs.0.join("rec");
    let pid = sender.pid().to_string();
    let mut mon = Monitor::start(&[
        "-p",
        &pid,
        "--json",
        // Frames cost a few bytes each (docs/recording.md): at 10 ms the segment needs a new
        // page of the full tmpfs within seconds.
        "--interval",
        "10ms",
        "--record",
        dir.to_str().expect("utf-8"),
    ]);
    mon.next_report();
    // Fill the filesystem beside the recording.
    let filler = fs.0.join("filler");
    let _ = std::fs::write(&filler, vec![0_u8; 2 << 20]);
    mon.expect_log("paused");
    // Counting and the reports go on while recording is paused.
    sender.send_line("go");
    sender.expect_line("done");
    let want = 300 * udp4_bytes(700);
    // Reports queued since the start come first: read on until the traffic shows.
    let r = (0..100_000)
        .map(|_| mon.next_report())
        .find(|r| num(current(r, sender.pid()), "bytes_out") == want)
        .expect("the traffic counted");
    assert_eq!(num(current(&r, sender.pid()), "packets_out"), 300);
    // Room again: recording resumes, and says so.
    std::fs::remove_file(&filler).expect("free");
    mon.expect_log("resumed");
    mon.next_report();
    let (status, _, err) = mon.stop();
    assert!(status.success(), "{err:?}");
    assert_eq!(
        err.iter().filter(|l| l.contains("paused")).count(),
        1,
        "one warning: {err:?}"
    );
    // The replay has the totals (cumulative counters), and a gap in its frames.
    let out = Command::new(bin("procnetmon2"))
        .args(["replay", dir.to_str().expect("utf-8"), "--json"])
        .output()
        .expect("replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(num(current(&replayed, sender.pid()), "bytes_out"), want);
    let csv = Command::new(bin("procnetmon2"))
        .args(["replay", dir.to_str().expect("utf-8"), "--format", "csv"])
        .output()
        .expect("replay csv");
    // Times as RFC 3339 with milliseconds (…T18:31:51.072Z): compare as seconds of the day.
    let secs = |t: &str| -> Option<f64> {
        let clock = t.split('T').nth(1)?.trim_end_matches('Z');
        let mut p = clock.split(':');
        let (h, m, s): (f64, f64, f64) = (
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
            p.next()?.parse().ok()?,
        );
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let times: Vec<f64> = String::from_utf8_lossy(&csv.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| secs(l.split(',').next()?))
        .collect();
    let widest = times
        .windows(2)
        .map(|w| ((w[1] - w[0]) * 1000.0) as i64)
        .max()
        .expect("frames");
    assert!(
        widest > 1000,
        "a gap of more than the retry's seconds: widest step {widest} ms"
    );
}
