//! The writer and reader on real files: recordings made by the writer, then killed,
//! damaged, filled up or planted with things that are not a recording.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use super::{
    Options, Recorder,
    convert::{report_of, timestamp},
    reader::Recording,
    segment::RunMeta,
    store::{DirStorage, Entry, Storage},
    synth::{Scenario, Synth},
};
use crate::model::Report;

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pnm-rec-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p).expect("create temp dir");
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn meta() -> RunMeta {
    RunMeta {
        run: "00c0ffee".into(),
        started_ns: 1_767_225_600_000_000_000,
        interval_ns: 1_000_000_000,
        host: "node-1".into(),
        version: "test".into(),
        mode: "--all".into(),
        segment: 0,
    }
}

pub fn small() -> Scenario {
    Scenario {
        workloads: 6,
        busy: 2,
        hosts: 3,
        ..Scenario::bench(2)
    }
}

/// `n` reports of a small node starting at 2026-01-01T00:00:00Z plus `start_s` seconds.
pub fn reports(n: usize, start_s: i64) -> Vec<Report> {
    let mut s = Synth::new(
        small(),
        timestamp(1_767_225_600_000_000_000 + start_s * 1_000_000_000, 0),
    );
    (0..n).map(|_| s.next_report()).collect()
}

fn opts(block_frames: u32) -> Options {
    Options {
        block_frames,
        retain: None,
        retain_size: None,
        retry: Duration::ZERO,
        ..Options::default()
    }
}

fn recorder<S: Storage>(store: S, block_frames: u32) -> Recorder<S> {
    Recorder::new(
        store,
        "test".into(),
        meta(),
        opts(block_frames),
        HashMap::new(),
    )
}

/// Records `reports` into `dir` with blocks of `block_frames`; `close`: a clean stop, else
/// as if killed (no end record, the journal left).
fn record(dir: &Path, reports: &[Report], block_frames: u32, close: bool) {
    let mut r = recorder(DirStorage::open(dir).expect("open"), block_frames);
    for rep in reports {
        r.append(rep);
    }
    if close {
        r.close();
    } else {
        r.kill();
    }
}

fn read_all(dir: &Path) -> (Vec<Report>, Recording) {
    let rec = Recording::open(dir).expect("reads");
    let frames: Vec<Report> = rec.frames(None).map(|(_, f)| report_of(&f)).collect();
    (frames, rec)
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn a_clean_recording_reads_back_exactly() {
    let d = TempDir::new("clean");
    let rs = reports(50, 0);
    record(&d.0, &rs, 16, true);
    let (back, rec) = read_all(&d.0);
    assert_eq!(back, rs);
    assert!(rec.notices.is_empty(), "{:?}", rec.notices);
    // Closed: no journal left, one segment with 4 blocks and its end record.
    assert!(files(&d.0, ".pnmjnl").is_empty());
    assert_eq!(rec.segments.len(), 1);
    assert_eq!(rec.segments[0].index.blocks.len(), 4);
    assert!(rec.segments[0].index.end.is_some());
}

#[test]
fn killed_at_any_frame_loses_nothing_written_and_says_so() {
    for n in [1, 15, 16, 17, 40] {
        let d = TempDir::new("killed");
        let rs = reports(n, 0);
        record(&d.0, &rs, 16, false);
        let (back, rec) = read_all(&d.0);
        assert_eq!(back, rs, "killed after {n} frames");
        assert!(
            rec.notices
                .iter()
                .any(|n| n.contains("without a clean stop")),
            "{:?}",
            rec.notices
        );
    }
}

#[test]
fn a_frame_cut_short_is_the_only_loss() {
    let d = TempDir::new("torn");
    let rs = reports(20, 0);
    record(&d.0, &rs, 16, false);
    // The kill came in the middle of writing the last frame.
    let jnl = &files(&d.0, ".pnmjnl")[0];
    let len = std::fs::metadata(jnl).expect("journal").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(jnl)
        .and_then(|f| f.set_len(len - 5))
        .expect("cut");
    let (back, rec) = read_all(&d.0);
    assert_eq!(back, rs[..19]);
    assert!(
        rec.notices
            .iter()
            .any(|n| n.contains("cut short and is lost")),
        "{:?}",
        rec.notices
    );
}

#[test]
fn killed_between_a_block_and_its_journal_cut_reads_each_frame_once() {
    let d = TempDir::new("window");
    let rs = reports(16, 0);
    // Keep a copy of the journal as it was before the block was committed.
    let mut r = recorder(DirStorage::open(&d.0).expect("open"), 16);
    for rep in &rs[..15] {
        r.append(rep);
    }
    let jnl = files(&d.0, ".pnmjnl")[0].clone();
    let before = std::fs::read(&jnl).expect("journal");
    r.append(&rs[15]);
    r.kill();
    // The journal still holds the 15 frames now also in the block.
    std::fs::write(&jnl, before).expect("restore");
    let (back, _) = read_all(&d.0);
    assert_eq!(back, rs);
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).expect("read");
    b[at as usize] ^= 0x5a;
    std::fs::write(path, b).expect("write");
}

#[test]
fn a_damaged_block_is_skipped_and_the_rest_reads() {
    let d = TempDir::new("damaged");
    let rs = reports(64, 0);
    record(&d.0, &rs, 16, true);
    let seg = files(&d.0, ".pnmrec")[0].clone();
    let rec = Recording::open(&d.0).expect("open");
    let b1 = rec.segments[0].index.blocks[1];
    drop(rec);
    // A byte in the second block's payload.
    flip(&seg, b1.offset + 60);
    let (back, rec) = read_all(&d.0);
    assert!(rec.notices.is_empty());
    let mut want = rs[..16].to_vec();
    want.extend_from_slice(&rs[32..]);
    assert_eq!(back, want);
    // A byte in the third block's header: the reader finds the fourth by scanning.
    let rec = Recording::open(&d.0).expect("open");
    let b2 = rec.segments[0].index.blocks[2];
    drop(rec);
    flip(&seg, b2.offset + 10);
    let (back, rec) = read_all(&d.0);
    assert_eq!(rec.notices.len(), 1, "{:?}", rec.notices);
    assert!(rec.notices[0].contains("damaged"));
    let mut want = rs[..16].to_vec();
    want.extend_from_slice(&rs[48..]);
    assert_eq!(back, want);
}

#[test]
fn a_damaged_frame_in_a_journal_loses_it_and_what_follows_only() {
    let d = TempDir::new("jframe");
    let rs = reports(24, 0);
    record(&d.0, &rs, 16, false);
    let jnl = files(&d.0, ".pnmjnl")[0].clone();
    let len = std::fs::metadata(&jnl).expect("journal").len();
    flip(&jnl, len - 3);
    let (back, rec) = read_all(&d.0);
    assert_eq!(back, rs[..23]);
    assert!(rec.notices.iter().any(|n| n.contains("damaged frame")));
}

#[test]
fn a_newer_major_version_is_refused_in_one_line() {
    let d = TempDir::new("newer");
    record(&d.0, &reports(3, 0), 16, true);
    let seg = files(&d.0, ".pnmrec")[0].clone();
    let mut b = std::fs::read(&seg).expect("read");
    b[8] = 2;
    std::fs::write(&seg, b).expect("write");
    let e = Recording::open(&d.0).expect_err("refused").to_string();
    assert!(e.contains("format 2.0 is newer"), "{e}");
    assert!(!e.contains('\n'));
}

#[test]
fn hours_are_cut_into_segments() {
    let d = TempDir::new("hours");
    // 00:59:00 to 01:00:39.
    let rs = reports(100, 3540);
    record(&d.0, &rs, 16, true);
    let (back, rec) = read_all(&d.0);
    assert_eq!(back, rs);
    assert_eq!(rec.segments.len(), 2);
    let names: Vec<&str> = rec.segments.iter().map(|s| s.name.as_str()).collect();
    assert!(names[0].starts_with("20260101T0059"), "{names:?}");
    assert!(names[1].starts_with("20260101T01"), "{names:?}");
    assert_eq!(rec.segments[1].meta().segment, 1);
}

#[test]
fn seeking_finds_the_frame_at_or_before_a_time() {
    let d = TempDir::new("seek");
    let rs = reports(70, 0);
    record(&d.0, &rs, 16, true);
    let rec = Recording::open(&d.0).expect("open");
    for i in [0, 15, 16, 37, 69] {
        let t = rs[i].timestamp.timestamp_nanos_opt().expect("ns");
        let (pos, frame) = rec.locate(t + 1).expect("found");
        assert_eq!(report_of(&frame), rs[i], "frame {i}");
        assert_eq!(
            rec.frame_at(pos).map(|f| report_of(&f)).as_ref(),
            Some(&rs[i])
        );
    }
}

/// A storage that fails every write while `full` is set (a full disk).
struct Faulty {
    inner: DirStorage,
    full: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Storage for Faulty {
    fn list(&self) -> io::Result<Vec<Entry>> {
        self.inner.list()
    }
    fn create(&mut self, name: &str) -> io::Result<()> {
        self.inner.create(name)
    }
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        if self.full.get() {
            // Part of it got out before the disk filled.
            let _ = self.inner.append(name, &data[..data.len() / 2]);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.append(name, data)
    }
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.inner.truncate(name, len)
    }
    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.inner.remove(name)
    }
    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        self.inner.read(name)
    }
    fn reset(&mut self) {
        self.inner.reset();
    }
}

#[test]
fn a_full_disk_pauses_recording_and_the_gap_shows() {
    let d = TempDir::new("full");
    let full = std::rc::Rc::new(std::cell::Cell::new(false));
    let store = Faulty {
        inner: DirStorage::open(&d.0).expect("open"),
        full: full.clone(),
    };
    let mut r = recorder(store, 16);
    let rs = reports(60, 0);
    for (i, rep) in rs.iter().enumerate() {
        full.set((20..30).contains(&i));
        r.append(rep);
    }
    r.close();
    drop(r);
    let (back, rec) = read_all(&d.0);
    // Frames 0..20 (the block in progress got its frames in the journal), then 30.. again.
    let mut want = rs[..20].to_vec();
    want.extend_from_slice(&rs[30..]);
    assert_eq!(back, want);
    // Two segments of one run: the first ended by the fault (no end record), then resumed.
    assert_eq!(rec.segments.len(), 2);
    assert!(rec.segments[0].index.end.is_none());
    // The counters after the gap are the run's: cumulative, nothing lost for totals.
    assert_eq!(
        back[20].workloads[0].row.counters,
        rs[30].workloads[0].row.counters
    );
}

#[test]
fn a_second_run_is_refused_by_the_lock() {
    let d = TempDir::new("lock");
    let first = DirStorage::open(&d.0).expect("first");
    let e = DirStorage::open(&d.0).expect_err("second").to_string();
    assert!(e.contains(&format!("(PID {})", std::process::id())), "{e}");
    assert!(e.contains("is recording there"), "{e}");
    drop(first);
    DirStorage::open(&d.0).expect("free again");
}

#[test]
fn hostile_directories_are_refused_and_left_alone() {
    // Files that are not a recording.
    let d = TempDir::new("hostile");
    std::fs::write(d.0.join("notes.txt"), "keep me").expect("write");
    let e = DirStorage::open(&d.0).expect_err("refused").to_string();
    assert!(
        e.contains("notes.txt") && e.contains("not part of a recording"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(d.0.join("notes.txt"))
            .ok()
            .as_deref(),
        Some("keep me")
    );
    std::fs::remove_file(d.0.join("notes.txt")).expect("rm");
    // A file with a recording's name that is not one.
    std::fs::write(d.0.join("20260101T000000Z.pnmrec"), "not a recording").expect("write");
    let e = DirStorage::open(&d.0).expect_err("refused").to_string();
    assert!(e.contains("is not a procnetmon2 recording"), "{e}");
    std::fs::remove_file(d.0.join("20260101T000000Z.pnmrec")).expect("rm");
    // A planted symbolic link, as a segment or as the lock.
    let target = TempDir::new("target");
    std::fs::write(target.0.join("victim"), "keep me").expect("write");
    for name in ["20260101T000000Z.pnmjnl", "lock"] {
        std::os::unix::fs::symlink(target.0.join("victim"), d.0.join(name)).expect("symlink");
        let e = DirStorage::open(&d.0).expect_err("refused").to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(d.0.join(name)).expect("rm");
    }
    assert_eq!(
        std::fs::read_to_string(target.0.join("victim"))
            .ok()
            .as_deref(),
        Some("keep me")
    );
    // DIR itself a symbolic link.
    let link = TempDir::new("link");
    std::fs::remove_dir(&link.0).expect("rm");
    std::os::unix::fs::symlink(&d.0, &link.0).expect("symlink");
    let e = DirStorage::open(&link.0).expect_err("refused").to_string();
    assert!(e.contains("is a symbolic link"), "{e}");
    std::fs::remove_file(&link.0).expect("rm");
    std::fs::create_dir(&link.0).expect("recreate");
}

#[test]
fn a_directory_of_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        println!("pnm-skip: needs root to give a directory to another user");
        return;
    }
    let d = TempDir::new("owner");
    nix::unistd::chown(&d.0, Some(nix::unistd::Uid::from_raw(65534)), None).expect("chown");
    let e = DirStorage::open(&d.0).expect_err("refused").to_string();
    assert!(e.contains("is owned by uid 65534"), "{e}");
    // Owned, but writable by everyone.
    nix::unistd::chown(&d.0, Some(nix::unistd::geteuid()), None).expect("chown");
    std::fs::set_permissions(&d.0, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    let e = DirStorage::open(&d.0).expect_err("refused").to_string();
    assert!(e.contains("writable by every user"), "{e}");
}

#[test]
fn retention_removes_whole_old_segments() {
    let d = TempDir::new("retain");
    // Three hours, one segment each.
    let rs = reports(10, 0)
        .into_iter()
        .chain(reports(10, 3600))
        .chain(reports(10, 7200))
        .collect::<Vec<_>>();
    let mut r = Recorder::new(
        DirStorage::open(&d.0).expect("open"),
        "test".into(),
        meta(),
        Options {
            block_frames: 4,
            retain: None,
            retain_size: Some(1),
            ..Options::default()
        },
        HashMap::new(),
    );
    for rep in &rs {
        r.append(rep);
    }
    r.close();
    drop(r);
    // Each new segment removed every older one (1 byte allowed).
    let segs = files(&d.0, ".pnmrec");
    assert_eq!(segs.len(), 1, "{segs:?}");
    assert!(segs[0].to_string_lossy().contains("20260101T02"));
    // By age: a segment last written 8 days ago goes when the next one starts.
    let d = TempDir::new("age");
    record(&d.0, &reports(5, 0), 4, true);
    let old = files(&d.0, ".pnmrec")[0].clone();
    let eight_days_ago =
        nix::sys::time::TimeSpec::new(chrono::Utc::now().timestamp() - 8 * 86_400, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &old,
        &eight_days_ago,
        &eight_days_ago,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
    let mut r = Recorder::new(
        DirStorage::open(&d.0).expect("open"),
        "test".into(),
        meta(),
        Options::default(),
        HashMap::new(),
    );
    r.append(&reports(1, 7200)[0]);
    r.close();
    drop(r);
    assert!(!old.exists());
    assert_eq!(files(&d.0, ".pnmrec").len(), 1);
}

#[test]
fn a_window_report_is_the_difference_of_its_ends() {
    let d = TempDir::new("window");
    let rs = reports(80, 0);
    record(&d.0, &rs, 16, true);
    let rec = Recording::open(&d.0).expect("open");
    let ns = |r: &Report| r.timestamp.timestamp_nanos_opt().expect("ns");
    // The whole recording: the last report's totals and the run's own peaks.
    let whole = super::window::summarize(&rec, None, None).expect("report");
    assert!(whole.is_final);
    for (w, last) in whole.workloads.iter().zip(&rs[79].workloads) {
        assert_eq!(w.row.counters, last.row.counters);
        assert_eq!(w.row.health, last.row.health);
        assert_eq!(w.traffic, last.traffic);
        assert_eq!(w.row.peak_rate_out, last.row.peak_rate_out);
    }
    // A window inside the run: differences, and the highest interval rate inside it.
    let part =
        super::window::summarize(&rec, Some(ns(&rs[20])), Some(ns(&rs[60]))).expect("report");
    for (i, w) in part.workloads.iter().enumerate() {
        let (a, b) = (&rs[20].workloads[i], &rs[60].workloads[i]);
        assert_eq!(w.row.counters, b.row.counters.minus(a.row.counters));
        // TCP health: the histogram bucket by bucket, so percentiles are the window's own.
        assert_eq!(
            w.row.health,
            b.row.health.minus(&a.row.health),
            "{}",
            w.name
        );
        assert_eq!(
            w.row.health.rtt.quantile_us(0.99),
            b.row.health.minus(&a.row.health).rtt.quantile_us(0.99)
        );
        let peak = rs[21..=60]
            .iter()
            .map(|r| r.workloads[i].row.rate_out)
            .fold(0.0, f64::max);
        assert_eq!(w.row.peak_rate_out, peak, "{}", w.name);
        let d_out: u64 = w
            .destinations
            .iter()
            .flatten()
            .map(|d| d.counters.bytes_out)
            .sum();
        assert_eq!(d_out, w.row.counters.bytes_out);
    }
    // The busy workloads had RTT samples in the window (the comparison above was not of
    // empty histograms).
    assert!(
        part.workloads
            .iter()
            .any(|w| w.row.health.rtt.count() >= 40)
    );
    // A window after the recording has nothing.
    assert!(super::window::summarize(&rec, Some(ns(&rs[79]) + 1), None).is_none());
}

/// The replay view's moves over a recording with a gap (frames 20..30 not recorded).
#[test]
fn the_replay_view_steps_jumps_and_shows_gaps() {
    use super::view::{Move, Player, parse_jump};
    let d = TempDir::new("player");
    let rs = reports(40, 0);
    let kept: Vec<Report> = rs[..20].iter().chain(&rs[30..]).cloned().collect();
    record(&d.0, &kept, 16, true);
    let ns = |r: &Report| r.timestamp.timestamp_nanos_opt().expect("ns");
    let mut p = Player::new(Recording::open(&d.0).expect("open"), None).expect("a frame");
    // At the end.
    assert_eq!(p.frame().time_ns, ns(&rs[39]));
    assert!(p.status(None).contains("[end]"));
    assert!(!p.go(Move::Forward));
    // One interval back, across a block boundary too.
    for i in (30..39).rev() {
        assert!(p.go(Move::Back));
        assert_eq!(p.frame().time_ns, ns(&rs[i]));
    }
    assert!(
        p.status(None).contains("a gap of 11s"),
        "{}",
        p.status(None)
    );
    assert!(p.go(Move::Back));
    assert_eq!(p.frame().time_ns, ns(&rs[19]));
    assert!(!p.status(None).contains("gap"));
    // The sparklines get the minute before: here every frame before it.
    assert_eq!(p.reports().len(), 20);
    assert_eq!(p.reports().last(), Some(&rs[19]));
    // Start, end, a minute.
    assert!(p.go(Move::Start));
    assert_eq!(p.frame().time_ns, ns(&rs[0]));
    assert!(p.go(Move::By(60)));
    assert_eq!(p.frame().time_ns, ns(&rs[39]));
    // Jumps: a time of day, relative, RFC 3339.
    let now = chrono::Utc::now();
    let t = parse_jump("00:00:15", p.frame().time_ns, 0, now).expect("time of day");
    assert!(p.jump(t));
    assert_eq!(p.frame().time_ns, ns(&rs[13]));
    let t = parse_jump("+5s", p.frame().time_ns, 0, now).expect("relative");
    assert_eq!(t, ns(&rs[13]) + 5_000_000_000);
    p.jump(t);
    let want = kept
        .iter()
        .rposition(|r| ns(r) <= t)
        .expect("a frame before");
    assert_eq!(p.frame().time_ns, ns(&kept[want]));
    let t = parse_jump("2026-01-01T00:00:03Z", 0, 0, now).expect("rfc 3339");
    p.jump(t);
    assert_eq!(p.frame().time_ns, ns(&rs[1]));
    assert_eq!(parse_jump("soon", 0, 0, now), None);
}

#[test]
fn replay_keys() {
    use super::view::{Move, ReplayKey, replay_key};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let k = |c| KeyEvent::new(c, KeyModifiers::NONE);
    for (key, filtering, want) in [
        (k(KeyCode::Left), false, ReplayKey::Go(Move::Back)),
        (k(KeyCode::Char('.')), false, ReplayKey::Go(Move::Forward)),
        (k(KeyCode::Char(']')), false, ReplayKey::Go(Move::By(60))),
        (k(KeyCode::Char('<')), false, ReplayKey::Go(Move::Start)),
        (k(KeyCode::Char('J')), false, ReplayKey::Jump),
        // The live view's keys, and everything typed into its filter.
        (k(KeyCode::Char('s')), false, ReplayKey::View),
        (k(KeyCode::Char('q')), false, ReplayKey::View),
        (k(KeyCode::Left), true, ReplayKey::View),
    ] {
        assert_eq!(replay_key(key, filtering), want, "{key:?}");
    }
}

/// `replay --follow` reads frames as a run writes them (from the journal, before their
/// block is compressed), and stops at `--to`.
#[test]
fn follow_reads_a_recording_while_it_is_written() {
    use super::replay::{ReplayArgs, What};
    let d = TempDir::new("follow");
    let rs = reports(30, 0);
    let ns = |r: &Report| r.timestamp.timestamp_nanos_opt().expect("ns");
    let mut r = recorder(DirStorage::open(&d.0).expect("open"), 16);
    // The follower needs a frame to start from.
    r.append(&rs[0]);
    let out = d.0.with_extension("jsonl");
    let args = ReplayArgs {
        dir: d.0.clone(),
        what: What::Report { json: true },
        from: Some(ns(&rs[0])),
        to: Some(ns(&rs[29])),
        at: None,
        follow: true,
        output: Some(out.clone()),
    };
    let follower = std::thread::spawn(move || super::replay::run(&args).expect("follows"));
    for rep in &rs[1..] {
        std::thread::sleep(Duration::from_millis(15));
        r.append(rep);
    }
    assert_eq!(follower.join().expect("joins"), 0);
    r.close();
    let text = std::fs::read_to_string(&out).expect("output");
    let _ = std::fs::remove_file(&out);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    // Every frame once, in order: the first (at --from) and the 29 written while following.
    assert_eq!(lines.len(), 30, "{text}");
    for (l, rep) in lines.iter().zip(&rs) {
        assert_eq!(
            l["timestamp"],
            rep.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        );
    }
}
