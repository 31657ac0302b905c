//! What a run changes on the host, and how it is always undone: dedicated cgroups (`--isolate`,
//! spawn mode), processes moved into them, and a record of both under `/run/procnetmon2/`.
//!
//! The record is written before each change and held with an exclusive lock while the run
//! lives. Dropping [`RunState`] undoes everything (success, error, signal, unwinding); a run
//! killed with SIGKILL leaves its record unlocked, and the next run (or `--cleanup`) undoes it.
//! Records of live runs are locked and never touched. Only paths under the cgroup v2 mount
//! whose last component carries our prefix are ever written or removed.

use std::{
    fs::{self, File, OpenOptions},
    io::Write as _,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::host::{cgroup::Cgroup2Mount, procs::ProcIdentity};

/// Where run records live.
pub const STATE_DIR: &str = "/run/procnetmon2";
pub use super::cgroup::CGROUP_PREFIX;

/// A process moved into a dedicated cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Moved {
    /// The target's PID.
    pub pid: u32,
    /// Its start time (ticks), so a reused PID is never moved.
    pub start_ticks: u64,
    /// The cgroup it came from (absolute directory).
    pub from: PathBuf,
    /// The dedicated cgroup it was moved to.
    pub to: PathBuf,
}

/// Everything one run changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    /// PID of the run.
    pub agent_pid: u32,
    /// The cgroup v2 mount point the paths below belong to.
    pub mount: PathBuf,
    /// Dedicated cgroups created (removed at the end; processes still in a spawn cgroup are
    /// killed, those in an isolation cgroup moved back).
    pub created: Vec<PathBuf>,
    /// Processes moved.
    pub moved: Vec<Moved>,
}

/// True when `path` is a cgroup this tool may write: under `mount`, no `..`, and its last
/// component carries [`CGROUP_PREFIX`].
pub fn is_ours(mount: &Path, path: &Path) -> bool {
    path.starts_with(mount)
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(CGROUP_PREFIX))
}

/// The live record of this run, locked. Undoes everything on drop.
pub struct RunState {
    lock: File,
    lock_path: PathBuf,
    json_path: PathBuf,
    record: RunRecord,
}

fn flock(f: &File, nonblock: bool) -> bool {
    let op = libc::LOCK_EX | if nonblock { libc::LOCK_NB } else { 0 };
    // SAFETY: plain syscall on an open descriptor.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

fn write_pid(procs_file: &Path, pid: u32) -> std::io::Result<()> {
    fs::write(procs_file, pid.to_string())
}

fn procs_in(cg: &Path) -> Vec<u32> {
    fs::read_to_string(cg.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes a (now empty) cgroup directory, retrying while the last processes are reaped.
fn remove_cgroup(cg: &Path) {
    for _ in 0..100 {
        match fs::remove_dir(cg) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    log::warn!("could not remove cgroup {}", cg.display());
}

/// Undoes `rec`: moves processes back, ends what is left in spawn cgroups, removes the cgroups.
fn undo(rec: &RunRecord) {
    for m in &rec.moved {
        if !is_ours(&rec.mount, &m.to) || !m.from.starts_with(&rec.mount) {
            log::warn!(
                "refusing to restore from {}: not a procnetmon2 cgroup",
                m.to.display()
            );
            continue;
        }
        // Every process in the dedicated cgroup (the target and any children) goes back.
        for pid in procs_in(&m.to) {
            if let Err(e) = write_pid(&m.from.join("cgroup.procs"), pid) {
                log::warn!(
                    "could not move process {pid} back to {}: {e}",
                    m.from.display()
                );
            }
        }
    }
    for cg in rec.created.iter().rev() {
        if !is_ours(&rec.mount, cg) {
            continue;
        }
        if !procs_in(cg).is_empty() {
            // A spawn cgroup still holding processes (a killed run's command): end them.
            let _ = fs::write(cg.join("cgroup.kill"), "1");
        }
        remove_cgroup(cg);
    }
}

impl RunState {
    /// Creates and locks this run's record.
    pub fn create(mount: &Cgroup2Mount) -> anyhow::Result<Self> {
        fs::create_dir_all(STATE_DIR).with_context(|| format!("create {STATE_DIR}"))?;
        let pid = std::process::id();
        let lock_path = Path::new(STATE_DIR).join(format!("{pid}.lock"));
        let json_path = Path::new(STATE_DIR).join(format!("{pid}.json"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("open {}", lock_path.display()))?;
        if !flock(&lock, true) {
            bail!("{} is locked by another run", lock_path.display());
        }
        let s = Self {
            lock,
            lock_path,
            json_path,
            record: RunRecord {
                agent_pid: pid,
                mount: mount.mount_point.clone(),
                ..RunRecord::default()
            },
        };
        s.save()?;
        Ok(s)
    }

    fn save(&self) -> anyhow::Result<()> {
        let tmp = self.json_path.with_extension("json.tmp");
        let mut f = File::create(&tmp).with_context(|| format!("write {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec(&self.record)?)?;
        f.sync_all()?;
        fs::rename(&tmp, &self.json_path)
            .with_context(|| format!("write {}", self.json_path.display()))
    }

    /// Creates dedicated cgroup `dir` (recorded before it exists, so a crash in between still
    /// gets it removed).
    pub fn create_cgroup(&mut self, dir: &Path) -> anyhow::Result<()> {
        if !is_ours(&self.record.mount, dir) {
            bail!(
                "internal: {} is not a procnetmon2 cgroup path",
                dir.display()
            );
        }
        self.record.created.push(dir.to_path_buf());
        self.save()?;
        fs::create_dir(dir).with_context(|| format!("create cgroup {}", dir.display()))
    }

    /// `--isolate`: moves `t` (all its threads) into a dedicated child of its cgroup `from`, so
    /// the limits of `from` keep applying. Refuses a process another run already isolated.
    pub fn isolate(&mut self, t: &ProcIdentity, from: &Path) -> anyhow::Result<PathBuf> {
        if from
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(CGROUP_PREFIX))
        {
            bail!(
                "process {} is already in a procnetmon2 cgroup ({}): another run isolated it; watch it without --isolate",
                t.pid,
                from.display()
            );
        }
        let to = from.join(format!("{CGROUP_PREFIX}{}", t.pid));
        if to.exists() {
            bail!(
                "process {} is already isolated by another procnetmon2 run ({}); watch it without --isolate",
                t.pid,
                to.display()
            );
        }
        self.create_cgroup(&to).map_err(|e| {
            e.context(format!("cannot make a dedicated cgroup for process {} under {}; watch it without --isolate", t.pid, from.display()))
        })?;
        self.record.moved.push(Moved {
            pid: t.pid,
            start_ticks: t.start_ticks,
            from: from.to_path_buf(),
            to: to.clone(),
        });
        self.save()?;
        if let Err(e) = write_pid(&to.join("cgroup.procs"), t.pid) {
            bail!(
                "cannot move process {} into {}: {e}; watch it without --isolate",
                t.pid,
                to.display()
            );
        }
        Ok(to)
    }

    /// Ends every process in spawn cgroup `cg`: SIGTERM, a grace period, then cgroup.kill.
    pub fn stop_cgroup(&self, cg: &Path, grace: Duration) {
        if !is_ours(&self.record.mount, cg) {
            return;
        }
        for pid in procs_in(cg) {
            // SAFETY: plain syscall; these processes are the command we started and its children.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline && !procs_in(cg).is_empty() {
            thread::sleep(Duration::from_millis(20));
        }
        if !procs_in(cg).is_empty() {
            let _ = fs::write(cg.join("cgroup.kill"), "1");
        }
    }
}

impl Drop for RunState {
    fn drop(&mut self) {
        undo(&self.record);
        let _ = fs::remove_file(&self.json_path);
        let _ = fs::remove_file(&self.lock_path);
        // The lock is released when `self.lock` closes.
        let _ = &self.lock;
    }
}

/// Rewrites `rec`'s paths from the mount point it was written under to `mount` (the run that
/// wrote it may have used a private cgroup2 mount elsewhere).
fn rebase(mut rec: RunRecord, mount: &Path) -> RunRecord {
    let old = rec.mount.clone();
    let fix = |p: &PathBuf| {
        p.strip_prefix(&old)
            .map_or_else(|_| p.clone(), |rel| mount.join(rel))
    };
    rec.created = rec.created.iter().map(fix).collect();
    for m in &mut rec.moved {
        m.from = fix(&m.from);
        m.to = fix(&m.to);
    }
    rec.mount = mount.to_path_buf();
    rec
}

/// Undoes the records of runs that died without cleaning up (their lock is free). Returns
/// one line per record handled. Records of live runs are locked and left alone.
pub fn cleanup_stale(mount: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let Ok(entries) = fs::read_dir(STATE_DIR) else {
        return Ok(done);
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("lock") {
            continue;
        }
        let Ok(lock) = OpenOptions::new().write(true).open(&path) else {
            continue;
        };
        if !flock(&lock, true) {
            continue; // a live run
        }
        let json = path.with_extension("json");
        if let Ok(text) = fs::read_to_string(&json)
            && let Ok(rec) = serde_json::from_str::<RunRecord>(&text)
        {
            let rec = rebase(rec, mount);
            undo(&rec);
            done.push(format!(
                "cleaned up after run {}: {} process(es) moved back, {} cgroup(s) removed",
                rec.agent_pid,
                rec.moved.len(),
                rec.created.len()
            ));
        }
        let _ = fs::remove_file(&json);
        let _ = fs::remove_file(&path);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_cgroups_are_writable() {
        let m = Path::new("/sys/fs/cgroup");
        assert!(is_ours(
            m,
            Path::new("/sys/fs/cgroup/system.slice/procnetmon2-42")
        ));
        assert!(!is_ours(m, Path::new("/sys/fs/cgroup/system.slice")));
        assert!(!is_ours(m, Path::new("/etc/procnetmon2-42")));
        assert!(!is_ours(
            m,
            Path::new("/sys/fs/cgroup/../../etc/procnetmon2-1")
        ));
    }

    #[test]
    fn records_are_rebased_to_this_mount() {
        let r = RunRecord {
            agent_pid: 1,
            mount: "/sys/fs/cgroup".into(),
            created: vec!["/sys/fs/cgroup/a/procnetmon2-5".into()],
            moved: vec![Moved {
                pid: 5,
                start_ticks: 9,
                from: "/sys/fs/cgroup/a".into(),
                to: "/sys/fs/cgroup/a/procnetmon2-5".into(),
            }],
        };
        let r = rebase(r, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            r.created[0],
            PathBuf::from("/sys/fs/cgroup/unified/a/procnetmon2-5")
        );
        assert_eq!(r.moved[0].from, PathBuf::from("/sys/fs/cgroup/unified/a"));
        assert!(is_ours(&r.mount, &r.moved[0].to));
    }

    #[test]
    fn records_round_trip() {
        let r = RunRecord {
            agent_pid: 1,
            mount: "/cg".into(),
            created: vec!["/cg/a/procnetmon2-5".into()],
            moved: vec![Moved {
                pid: 5,
                start_ticks: 9,
                from: "/cg/a".into(),
                to: "/cg/a/procnetmon2-5".into(),
            }],
        };
        let back: RunRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
