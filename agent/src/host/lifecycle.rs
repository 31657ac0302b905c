//! What a run changes on the host, and how it is undone without ever harming a process it did
//! not start: dedicated cgroups (`--isolate`, spawn mode), processes moved into them, and a
//! record of both under `/run/procnetmon2/`.
//!
//! A dedicated cgroup is claimed with `mkdir`: only the run whose own `mkdir` succeeded owns it
//! and records it, so two runs racing for one target never undo each other. Undoing empties
//! each dedicated cgroup back into the original one ([`moveback`]: forks and exits of a live
//! target do not race it); a process that cannot go back (its original cgroup refuses it, e.g.
//! because a controller was enabled there meanwhile) stays alive where it is, its cgroup is
//! kept, and the record says so, for `--cleanup` (or the next run) to retry. Only the
//! spawn-mode cgroup, whose processes the run started itself, is ever signalled or
//! `cgroup.kill`ed. A stale record whose every cgroup is gone has nothing left to undo and is
//! retired with one info line.
//!
//! The record directory is root's and `0700`; records are opened under its descriptor without
//! following symlinks, written through `O_EXCL` temporary files, accepted only when root owns
//! them and nobody else may write them, and validated before use: canonical paths under the
//! cgroup v2 mount, and only `procnetmon2-*` cgroups the record itself created. Every write to a
//! cgroup file checks that the file is on cgroup2, so v1 hierarchies are never written.

use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    os::fd::{AsFd, OwnedFd},
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    dir::Dir,
    errno::Errno,
    fcntl::{Flock, FlockArg, OFlag, openat, renameat},
    sys::{
        signal::{Signal, kill},
        stat::{Mode, SFlag, fchmod, fstat},
    },
    unistd::{Pid, UnlinkatFlags, geteuid, unlinkat},
};
use serde::{Deserialize, Serialize};

use crate::host::{
    cgroup::{Cgroup2Mount, procs_in, write_pid},
    moveback::{self, EXIT_BOUND, Kept},
    procs::ProcIdentity,
};

/// Where run records live.
pub const STATE_DIR: &str = "/run/procnetmon2";
pub use super::cgroup::CGROUP_PREFIX;
/// Prefix of the spawn-mode cgroup (followed by the run's PID).
const SPAWN_PREFIX: &str = "procnetmon2-spawn-";
/// A record is a few hundred bytes; anything much larger is not ours.
const MAX_RECORD_BYTES: u64 = 1 << 20;

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
    /// Why processes are still in `to`: they could not be moved back (set when a run or a
    /// cleanup had to leave them there; the next cleanup retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stuck: Option<String>,
}

/// Everything one run changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RunRecord {
    /// PID of the run.
    pub agent_pid: u32,
    /// The cgroup v2 mount point the paths below belong to.
    pub mount: PathBuf,
    /// Dedicated cgroups this run's own `mkdir` created (removed at the end).
    pub created: Vec<PathBuf>,
    /// The spawn-mode cgroup, one of `created`: its processes are the run's command and its
    /// children, the only processes ever ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn: Option<PathBuf>,
    /// Processes moved.
    pub moved: Vec<Moved>,
}

impl RunRecord {
    /// True when nothing is left to undo.
    fn is_empty(&self) -> bool {
        self.created.is_empty() && self.moved.is_empty()
    }
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

/// `path` is `mount` followed by plain names only: no `.`, `..`, repeated or trailing `/`.
fn canonical_under(mount: &Path, path: &Path) -> Result<(), String> {
    let rel = path.strip_prefix(mount).map_err(|_| {
        format!(
            "{} is outside the cgroup v2 mount {}",
            path.display(),
            mount.display()
        )
    })?;
    let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
    let rebuilt = rel
        .components()
        .fold(mount.to_path_buf(), |p, c| p.join(c.as_os_str()));
    if !plain || rebuilt.as_os_str() != path.as_os_str() || !mount.is_absolute() {
        return Err(format!("{} is not a canonical path", path.display()));
    }
    Ok(())
}

/// Checks a record against `mount` (the cgroup v2 mount it is about to be applied to): every
/// path canonical and under the mount, every created cgroup named by this record's rules
/// (`procnetmon2-<moved pid>` under the moved process's original cgroup, or
/// `procnetmon2-spawn-<agent pid>`), every move between a cgroup and its own dedicated child.
fn validate(rec: &RunRecord, mount: &Path) -> Result<(), String> {
    let paths = rec
        .created
        .iter()
        .chain(rec.spawn.iter())
        .chain(rec.moved.iter().flat_map(|m| [&m.from, &m.to]));
    for p in paths {
        canonical_under(mount, p)?;
    }
    if let Some(spawn) = &rec.spawn {
        let want = format!("{SPAWN_PREFIX}{}", rec.agent_pid);
        if spawn.file_name().and_then(|n| n.to_str()) != Some(want.as_str()) {
            return Err(format!(
                "spawn cgroup {} is not this run's {want}",
                spawn.display()
            ));
        }
        if !rec.created.contains(spawn) {
            return Err(format!(
                "spawn cgroup {} was not created by this run",
                spawn.display()
            ));
        }
    }
    for m in &rec.moved {
        let want = format!("{CGROUP_PREFIX}{}", m.pid);
        if m.to.file_name().and_then(|n| n.to_str()) != Some(want.as_str())
            || m.to.parent() != Some(m.from.as_path())
            || !rec.created.contains(&m.to)
        {
            return Err(format!(
                "move of process {} to {} is not into a {want} this run created under {}",
                m.pid,
                m.to.display(),
                m.from.display()
            ));
        }
        if m.from
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(CGROUP_PREFIX))
        {
            return Err(format!(
                "{} is a procnetmon2 cgroup, not an original one",
                m.from.display()
            ));
        }
    }
    for c in &rec.created {
        let is_spawn = rec.spawn.as_ref() == Some(c);
        if !is_spawn && !rec.moved.iter().any(|m| &m.to == c) {
            return Err(format!(
                "cgroup {} is not one this record's run created",
                c.display()
            ));
        }
    }
    // Paths that exist must resolve to themselves (no symlinked component).
    for p in rec.moved.iter().map(|m| &m.from).chain(&rec.created) {
        if let Ok(real) = fs::canonicalize(p)
            && &real != p
        {
            return Err(format!(
                "{} resolves to {}: not canonical",
                p.display(),
                real.display()
            ));
        }
    }
    Ok(())
}

/// Rewrites `rec`'s paths from the mount point it was written under to `mount` (the run that
/// wrote it may have used a private cgroup2 mount elsewhere). Paths must be under the record's
/// own mount point first.
fn rebase(mut rec: RunRecord, mount: &Path) -> Result<RunRecord, String> {
    let old = rec.mount.clone();
    let fix = |p: &PathBuf| -> Result<PathBuf, String> {
        canonical_under(&old, p)?;
        let rel = p.strip_prefix(&old).map_err(|e| e.to_string())?;
        Ok(if rel.as_os_str().is_empty() {
            mount.to_path_buf()
        } else {
            mount.join(rel)
        })
    };
    rec.created = rec.created.iter().map(fix).collect::<Result<_, _>>()?;
    rec.spawn = rec.spawn.as_ref().map(fix).transpose()?;
    for m in &mut rec.moved {
        m.from = fix(&m.from)?;
        m.to = fix(&m.to)?;
    }
    rec.mount = mount.to_path_buf();
    Ok(rec)
}

/// Why a file's owner and mode make it unacceptable as state, if they do: it must be a
/// regular file (or, for the directory, a directory) of root's (or of the user running this),
/// and nobody else may write it.
fn check_owner_mode(
    uid: u32,
    mode: u32,
    want: SFlag,
    euid: u32,
    what: &Path,
) -> Result<(), String> {
    if SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) != want {
        return Err(format!("{} has the wrong file type", what.display()));
    }
    if uid != 0 && uid != euid {
        return Err(format!(
            "{} is owned by uid {uid}, not root",
            what.display()
        ));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {:o})",
            what.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// The record directory, open without following symlinks, root's and `0700`.
struct StateDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl StateDir {
    /// Opens `path`, creating it `0700` if missing. A directory of another user is refused; one
    /// of root's with a wider mode is narrowed to `0700` through its descriptor.
    fn create(path: &Path) -> anyhow::Result<Self> {
        match nix::unistd::mkdir(path, Mode::S_IRWXU) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).with_context(|| format!("create {}", path.display())),
        }
        Self::open(path)?.with_context(|| format!("{} vanished", path.display()))
    }

    /// Opens an existing `path`; `None` if it does not exist.
    fn open(path: &Path) -> anyhow::Result<Option<Self>> {
        let fd = match nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => bail!(
                "{} is not a directory ({e}; a symlink?): remove it (rm {0}) and start again",
                path.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
        };
        let st = fstat(&fd).with_context(|| format!("stat {}", path.display()))?;
        let euid = geteuid().as_raw();
        if st.st_uid != 0 && st.st_uid != euid {
            bail!(
                "{} is owned by uid {}, not root: its records cannot be trusted; remove it (rm -r {0}) and start again",
                path.display(),
                st.st_uid
            );
        }
        if st.st_mode & 0o7777 != 0o700 {
            fchmod(&fd, Mode::S_IRWXU).with_context(|| format!("chmod 0700 {}", path.display()))?;
            log::warn!(
                "{} had mode {:o}: set to 0700 (records in it are checked one by one)",
                path.display(),
                st.st_mode & 0o7777
            );
        }
        Ok(Some(Self {
            fd,
            path: path.to_path_buf(),
        }))
    }

    fn open_at(&self, name: &str, flags: OFlag) -> nix::Result<File> {
        openat(
            &self.fd,
            name,
            flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map(File::from)
    }

    /// Opens `name` for reading and checks it is a root-owned regular file nobody else writes.
    fn open_checked(&self, name: &str, flags: OFlag) -> Result<File, String> {
        let path = self.path.join(name);
        // O_NONBLOCK: a planted FIFO must not hang the run.
        let f = self
            .open_at(name, flags | OFlag::O_NONBLOCK)
            .map_err(|e| format!("{}: {e} (a symlink?)", path.display()))?;
        let st = fstat(f.as_fd()).map_err(|e| format!("{}: {e}", path.display()))?;
        check_owner_mode(
            st.st_uid,
            st.st_mode,
            SFlag::S_IFREG,
            geteuid().as_raw(),
            &path,
        )?;
        Ok(f)
    }

    /// Reads record `<stem>.json`; `Ok(None)` if there is none.
    fn read_record(&self, stem: &str) -> Result<Option<RunRecord>, String> {
        let name = format!("{stem}.json");
        let f = match self.open_checked(&name, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(_)
                if matches!(
                    nix::sys::stat::fstatat(
                        &self.fd,
                        name.as_str(),
                        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW
                    ),
                    Err(Errno::ENOENT)
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut buf = Vec::new();
        f.take(MAX_RECORD_BYTES)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{}: {e}", self.path.join(&name).display()))?;
        let rec: RunRecord = serde_json::from_slice(&buf)
            .map_err(|e| format!("{}: not a run record: {e}", self.path.join(&name).display()))?;
        Ok(Some(rec))
    }

    /// Writes `<stem>.json` atomically: a fresh `O_EXCL` temporary file under the directory
    /// descriptor, then `renameat`.
    fn write_record(&self, stem: &str, rec: &RunRecord) -> anyhow::Result<()> {
        let tmp = format!("{stem}.json.tmp");
        let json = format!("{stem}.json");
        match unlinkat(&self.fd, tmp.as_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e).context(format!("remove {}", self.path.join(&tmp).display())),
        }
        let mut f = self
            .open_at(&tmp, OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY)
            .with_context(|| format!("create {}", self.path.join(&tmp).display()))?;
        fchmod(f.as_fd(), Mode::S_IRUSR | Mode::S_IWUSR)?;
        f.write_all(&serde_json::to_vec(rec)?)?;
        f.sync_all()?;
        renameat(&self.fd, tmp.as_str(), &self.fd, json.as_str())
            .with_context(|| format!("write {}", self.path.join(&json).display()))
    }

    fn remove(&self, name: &str) {
        let _ = unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
    }

    /// Names of the lock files in the directory.
    fn lock_stems(&self) -> Vec<String> {
        let Ok(dup) = self.fd.try_clone() else {
            return Vec::new();
        };
        let Ok(mut dir) = Dir::from_fd(dup) else {
            return Vec::new();
        };
        dir.iter()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .ok()
                    .and_then(|n| n.strip_suffix(".lock"))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// Ends every process in spawn cgroup `cg` (the run's own command and its children):
/// SIGTERM, up to `grace` for them to leave (a wait on `cgroup.events`), then `cgroup.kill`.
/// Only ever called for the spawn cgroup this run created (`RunState::create_spawn_cgroup`),
/// whose processes it started itself.
pub fn stop_spawned(cg: &Path, grace: Duration) {
    for pid in procs_in(cg).unwrap_or_default() {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let mut io = moveback::Live::default();
    let until = Instant::now() + grace;
    if !moveback::wait_unpopulated(&mut io, cg, until) {
        moveback::kill_all(cg);
    }
}

/// What undoing a record did: what is left (a record of it), and why.
struct Undone {
    /// The part of the record still to undo (empty when everything was).
    left: RunRecord,
    /// Each cgroup kept, with what stays in it.
    kept: Vec<Kept>,
}

/// Undoes a validated `rec`: empties every dedicated cgroup back into its original one,
/// ends what is left in the spawn cgroup, removes the emptied cgroups. What is left is
/// consistent: a kept move's cgroup is kept too, and a removed cgroup is in no move.
fn undo(rec: &RunRecord) -> Undone {
    let mut io = moveback::Live::default();
    let mut left = RunRecord {
        agent_pid: rec.agent_pid,
        mount: rec.mount.clone(),
        ..RunRecord::default()
    };
    let mut kept = Vec::new();
    // Last made, first removed.
    for cg in rec.created.iter().rev() {
        let moves: Vec<&Moved> = rec.moved.iter().filter(|m| &m.to == cg).collect();
        let (from, stay) = if rec.spawn.as_ref() == Some(cg) {
            // The run's own command (a killed run's): it ends with its run.
            stop_spawned(cg, Duration::ZERO);
            (None, moveback::remove_when_empty(&mut io, cg, EXIT_BOUND))
        } else if let Some(m) = moves.first() {
            // Every process in it goes back: the target and whatever it forked.
            let stay = moveback::move_back(&mut io, &m.from, cg, EXIT_BOUND);
            (Some(m.from.clone()), stay)
        } else {
            // validate() allows no such cgroup; never touch processes of one.
            continue;
        };
        if stay.is_empty() {
            continue;
        }
        let k = Kept {
            from,
            cgroup: cg.clone(),
            stay,
        };
        let why = k.why();
        left.created.push(cg.clone());
        left.moved.extend(moves.into_iter().map(|m| Moved {
            stuck: Some(why.clone()),
            ..m.clone()
        }));
        if rec.spawn.as_ref() == Some(cg) {
            left.spawn = Some(cg.clone());
        }
        kept.push(k);
    }
    left.created.reverse();
    kept.reverse();
    Undone { left, kept }
}

/// The live record of this run, locked. Undoes everything on [`RunState::finish`] or drop.
pub struct RunState {
    dir: StateDir,
    stem: String,
    /// Held for the whole run: a locked record belongs to a live run and is never touched.
    _lock: Flock<File>,
    record: RunRecord,
    finished: bool,
}

impl RunState {
    /// Creates and locks this run's record (in [`STATE_DIR`], created `0700` if missing).
    pub fn create(mount: &Cgroup2Mount) -> anyhow::Result<Self> {
        Self::create_in(Path::new(STATE_DIR), &mount.mount_point)
    }

    fn create_in(state_dir: &Path, mount: &Path) -> anyhow::Result<Self> {
        let dir = StateDir::create(state_dir)?;
        let pid = std::process::id();
        // A kept record of an earlier process with this PID keeps its name: take the next one.
        let mut found = None;
        for n in 0..100 {
            let stem = if n == 0 {
                pid.to_string()
            } else {
                format!("{pid}-{n}")
            };
            match dir.open_at(
                &format!("{stem}.lock"),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR,
            ) {
                Ok(f) => {
                    found = Some((stem, f));
                    break;
                }
                Err(Errno::EEXIST) => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("create a lock file in {}", state_dir.display()));
                }
            }
        }
        let (stem, lock) =
            found.with_context(|| format!("{}: no free record name", state_dir.display()))?;
        fchmod(lock.as_fd(), Mode::S_IRUSR | Mode::S_IWUSR)?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .with_context(|| format!("lock {}/{stem}.lock", state_dir.display()))?;
        let s = Self {
            dir,
            stem,
            _lock: lock,
            record: RunRecord {
                agent_pid: pid,
                mount: mount.to_path_buf(),
                ..RunRecord::default()
            },
            finished: false,
        };
        s.save()?;
        Ok(s)
    }

    fn save(&self) -> anyhow::Result<()> {
        self.dir.write_record(&self.stem, &self.record)
    }

    /// Path of this run's record.
    pub fn record_path(&self) -> PathBuf {
        self.dir.path.join(format!("{}.json", self.stem))
    }

    /// Claims dedicated cgroup `dir`: creates it, and records it only if this `mkdir` created it.
    fn claim(&mut self, dir: &Path) -> Result<(), std::io::Error> {
        fs::create_dir(dir)?;
        self.record.created.push(dir.to_path_buf());
        if let Err(e) = self.save() {
            // Unrecorded, it must not outlive us: it is ours and empty.
            self.record.created.pop();
            let _ = fs::remove_dir(dir);
            return Err(std::io::Error::other(format!("{e:#}")));
        }
        Ok(())
    }

    /// Creates the spawn-mode cgroup `dir` (`…/procnetmon2-spawn-<this PID>`).
    pub fn create_spawn_cgroup(&mut self, dir: &Path) -> anyhow::Result<()> {
        let want = format!("{SPAWN_PREFIX}{}", self.record.agent_pid);
        if !is_ours(&self.record.mount, dir)
            || dir.file_name().and_then(|n| n.to_str()) != Some(want.as_str())
        {
            bail!("internal: {} is not this run's spawn cgroup", dir.display());
        }
        self.claim(dir)
            .with_context(|| format!("create cgroup {}", dir.display()))?;
        self.record.spawn = Some(dir.to_path_buf());
        self.save()
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
        if !is_ours(&self.record.mount, &to) {
            bail!(
                "internal: {} is not a procnetmon2 cgroup path",
                to.display()
            );
        }
        match self.claim(&to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
                "process {} is already isolated by another procnetmon2 run ({}); watch it without --isolate (if no run holds it, run procnetmon2 --cleanup, or rmdir {1} once it is empty)",
                t.pid,
                to.display()
            ),
            Err(e) => bail!(
                "cannot make a dedicated cgroup for process {} under {}: {e}; watch it without --isolate",
                t.pid,
                from.display()
            ),
        }
        self.record.moved.push(Moved {
            pid: t.pid,
            start_ticks: t.start_ticks,
            from: from.to_path_buf(),
            to: to.clone(),
            stuck: None,
        });
        self.save()?;
        if let Err(e) = write_pid(&to, t.pid) {
            bail!(
                "cannot move process {} into {}: {e}; watch it without --isolate",
                t.pid,
                to.display()
            );
        }
        Ok(to)
    }

    /// Ends every process in the spawn cgroup `cg`: SIGTERM, a grace period, then
    /// `cgroup.kill`. Does nothing for any other cgroup.
    pub fn stop_cgroup(&self, cg: &Path, grace: Duration) {
        if self.record.spawn.as_deref() == Some(cg) {
            stop_spawned(cg, grace);
        }
    }

    /// Undoes everything. What cannot be undone (a process its original cgroup refuses, one
    /// still exiting after [`EXIT_BOUND`]) is kept, alive, recorded for `--cleanup`, and
    /// named in the error with the kernel's reason.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        if std::mem::replace(&mut self.finished, true) {
            return Ok(());
        }
        let Undone { left, kept } = undo(&self.record);
        if left.is_empty() {
            self.dir.remove(&format!("{}.json", self.stem));
            self.dir.remove(&format!("{}.lock", self.stem));
            return Ok(());
        }
        // The record now says what is left; its lock is released when this run ends, so the
        // next run or `--cleanup` retries.
        self.record = left;
        let saved = self.save();
        let msg = moveback::describe(&kept, &self.record_path());
        match saved {
            Ok(()) => bail!(msg),
            Err(e) => bail!("{msg} (but the record could not be updated: {e:#})"),
        }
    }
}

impl Drop for RunState {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            log::error!("{e:#}");
        }
    }
}

/// What the clean-up of one stale record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleaned {
    /// One line saying so.
    pub line: String,
    /// False when something stays behind (kept for a later `--cleanup`).
    pub complete: bool,
    /// True when there was nothing left to undo: the record was only removed.
    pub retired: bool,
}

/// What to do with a stale record that passed the ownership checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Every cgroup it names is gone: nothing is left to undo, the record goes.
    Retire(RunRecord),
    /// Undo what it says.
    Undo(RunRecord),
    /// Not a record a procnetmon2 run wrote: refused, left untouched.
    Refuse(String),
}

/// Decides what becomes of `rec` on this `mount`; `exists` says whether a path exists.
/// A record is retired only when it names nothing but `procnetmon2-*` cgroups by this
/// tool's rules (the checks of [`validate`]) and none of them exists any more.
fn judge(rec: RunRecord, mount: &Path, exists: impl Fn(&Path) -> bool) -> Verdict {
    let rec = match rebase(rec, mount) {
        Ok(r) => r,
        Err(why) => return Verdict::Refuse(why),
    };
    // Runs before issue #31 could keep a move whose dedicated cgroup they had removed: it
    // names that cgroup all the same, checked by the same rules.
    let mut named = rec.clone();
    for m in &rec.moved {
        if !named.created.contains(&m.to) {
            named.created.push(m.to.clone());
        }
    }
    if named.created.iter().all(|c| !exists(c)) && validate(&named, mount).is_ok() {
        return Verdict::Retire(rec);
    }
    match validate(&rec, mount) {
        Ok(()) => Verdict::Undo(rec),
        Err(why) => Verdict::Refuse(why),
    }
}

/// Undoes the records of runs that died without cleaning up (their lock is free). Returns
/// one entry per record handled. Records of live runs are locked and left alone; records that
/// fail the checks are refused with a warning and left untouched; records with nothing left
/// to undo are retired.
pub fn cleanup_stale(mount: &Path) -> anyhow::Result<Vec<Cleaned>> {
    cleanup_stale_in(Path::new(STATE_DIR), mount)
}

fn cleanup_stale_in(state_dir: &Path, mount: &Path) -> anyhow::Result<Vec<Cleaned>> {
    let Some(dir) = StateDir::open(state_dir)? else {
        return Ok(Vec::new());
    };
    let refuse = |why: String| {
        log::warn!(
            "ignoring run record: {why}; remove it if no procnetmon2 run wrote it (nothing was changed)"
        );
    };
    let mut done = Vec::new();
    for stem in dir.lock_stems() {
        let lock = match dir.open_checked(&format!("{stem}.lock"), OFlag::O_RDWR) {
            Ok(f) => f,
            Err(why) => {
                refuse(why);
                continue;
            }
        };
        let Ok(lock) = Flock::lock(lock, FlockArg::LockExclusiveNonblock) else {
            continue; // a live run
        };
        let json = state_dir.join(format!("{stem}.json"));
        let rec = match dir.read_record(&stem) {
            Ok(Some(rec)) => rec,
            Ok(None) => {
                dir.remove(&format!("{stem}.lock"));
                continue;
            }
            Err(why) => {
                refuse(why);
                continue;
            }
        };
        match judge(rec, mount, |p| fs::symlink_metadata(p).is_ok()) {
            Verdict::Refuse(why) => refuse(format!("{}: {why}", json.display())),
            Verdict::Retire(rec) => {
                dir.remove(&format!("{stem}.json"));
                dir.remove(&format!("{stem}.lock"));
                done.push(Cleaned {
                    line: format!(
                        "retired run record {} of run {}: the cgroups it names are gone, nothing was left to undo",
                        json.display(),
                        rec.agent_pid
                    ),
                    complete: true,
                    retired: true,
                });
            }
            Verdict::Undo(rec) => done.push(clean_up(&dir, &stem, &json, &rec)),
        }
        drop(lock);
    }
    Ok(done)
}

/// Undoes stale record `rec` (`<stem>.json`, locked by the caller): removes it when
/// everything was undone, else rewrites it with what is left.
fn clean_up(dir: &StateDir, stem: &str, json: &Path, rec: &RunRecord) -> Cleaned {
    let Undone { left, kept } = undo(rec);
    if left.is_empty() {
        dir.remove(&format!("{stem}.json"));
        dir.remove(&format!("{stem}.lock"));
        return Cleaned {
            line: format!(
                "cleaned up after run {}: {} process(es) moved back, {} cgroup(s) removed",
                rec.agent_pid,
                rec.moved.len(),
                rec.created.len()
            ),
            complete: true,
            retired: false,
        };
    }
    let saved = dir.write_record(stem, &left);
    Cleaned {
        line: format!(
            "could not clean up after run {}: {}{}",
            rec.agent_pid,
            moveback::describe(&kept, json),
            saved
                .err()
                .map_or_else(String::new, |e| format!(" (record not updated: {e:#})"))
        ),
        complete: false,
        retired: false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn rec(mount: &str) -> RunRecord {
        RunRecord {
            agent_pid: 1,
            mount: mount.into(),
            created: vec![format!("{mount}/a/procnetmon2-5").into()],
            spawn: None,
            moved: vec![Moved {
                pid: 5,
                start_ticks: 9,
                from: format!("{mount}/a").into(),
                to: format!("{mount}/a/procnetmon2-5").into(),
                stuck: None,
            }],
        }
    }

    /// A scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "pnm-unit-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

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
        let r = rebase(rec("/sys/fs/cgroup"), Path::new("/sys/fs/cgroup/unified")).unwrap();
        assert_eq!(
            r.created[0],
            PathBuf::from("/sys/fs/cgroup/unified/a/procnetmon2-5")
        );
        assert_eq!(r.moved[0].from, PathBuf::from("/sys/fs/cgroup/unified/a"));
        assert!(is_ours(&r.mount, &r.moved[0].to));
        assert_eq!(validate(&r, Path::new("/sys/fs/cgroup/unified")), Ok(()));
    }

    #[test]
    fn records_round_trip() {
        let mut r = rec("/cg");
        r.moved[0].stuck = Some("EBUSY".into());
        let back: RunRecord = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // Records of the previous format (no spawn, no stuck) still parse.
        let old = r#"{"agent_pid":1,"mount":"/cg","created":[],"moved":[]}"#;
        assert!(serde_json::from_str::<RunRecord>(old).unwrap().is_empty());
    }

    #[test]
    fn records_with_dot_dot_or_v1_paths_are_refused() {
        let m = Path::new("/sys/fs/cgroup/unified");
        let mut r = rec("/sys/fs/cgroup/unified");
        r.moved[0].from = "/sys/fs/cgroup/unified/a/../../cpu".into();
        assert!(validate(&r, m).unwrap_err().contains("canonical"));
        // A v1 hierarchy next to the v2 mount.
        let mut r = rec("/sys/fs/cgroup/unified");
        r.moved[0].from = "/sys/fs/cgroup/cpu/a".into();
        r.moved[0].to = "/sys/fs/cgroup/cpu/a/procnetmon2-5".into();
        r.created = vec![r.moved[0].to.clone()];
        assert!(validate(&r, m).unwrap_err().contains("outside"));
        // ... and rebasing refuses paths outside the record's own mount.
        assert!(rebase(r, m).unwrap_err().contains("outside"));
        let mut r = rec("/sys/fs/cgroup/unified");
        r.created[0] = "/sys/fs/cgroup/unified/a//procnetmon2-5".into();
        assert!(validate(&r, m).is_err());
    }

    #[test]
    fn records_naming_foreign_cgroups_are_refused() {
        let m = Path::new("/cg");
        // A cgroup that is not procnetmon2-<moved pid>.
        let mut r = rec("/cg");
        r.created.push("/cg/b/procnetmon2-7".into());
        assert!(validate(&r, m).unwrap_err().contains("not one this record"));
        let mut r = rec("/cg");
        r.moved[0].to = "/cg/a/kubepods".into();
        r.created = vec!["/cg/a/kubepods".into()];
        assert!(validate(&r, m).is_err());
        // Another run's dedicated cgroup: not the moved process's.
        let mut r = rec("/cg");
        r.moved[0].pid = 6;
        assert!(validate(&r, m).is_err());
        // A move whose original is not the dedicated cgroup's parent.
        let mut r = rec("/cg");
        r.moved[0].from = "/cg/b".into();
        assert!(validate(&r, m).is_err());
        // A spawn cgroup of another run.
        let mut r = rec("/cg");
        r.created.push("/cg/procnetmon2-spawn-2".into());
        r.spawn = Some("/cg/procnetmon2-spawn-2".into());
        assert!(validate(&r, m).unwrap_err().contains("spawn"));
        let mut r = rec("/cg");
        r.created.push("/cg/procnetmon2-spawn-1".into());
        r.spawn = Some("/cg/procnetmon2-spawn-1".into());
        assert_eq!(validate(&r, m), Ok(()));
    }

    /// Records whose every cgroup is gone are retired; records a run did not write are still
    /// refused; the rest are undone.
    #[test]
    fn stale_records_are_retired_undone_or_refused() {
        let m = Path::new("/cg");
        let spawn = |mut r: RunRecord| {
            r.created.push("/cg/procnetmon2-spawn-1".into());
            r.spawn = Some("/cg/procnetmon2-spawn-1".into());
            r
        };
        // What an older run kept after removing the cgroup: a move with no created cgroup.
        let orphan_move = |mut r: RunRecord| {
            r.created.clear();
            r
        };
        let foreign = |mut r: RunRecord| {
            r.moved[0].to = "/cg/a/kubepods".into();
            r.created = vec!["/cg/a/kubepods".into()];
            r
        };
        let outside = |mut r: RunRecord| {
            r.moved[0].from = "/etc".into();
            r
        };
        let empty = RunRecord {
            agent_pid: 1,
            mount: "/cg".into(),
            ..RunRecord::default()
        };
        // (case, record, existing paths, verdict: 'R'etire, 'U'ndo, 'X' refuse)
        let cases: Vec<(&str, RunRecord, Vec<&str>, char)> = vec![
            ("every cgroup gone", rec("/cg"), vec!["/cg/a"], 'R'),
            (
                "its cgroup still there",
                rec("/cg"),
                vec!["/cg/a/procnetmon2-5"],
                'U',
            ),
            ("a killed run with nothing made yet", empty, vec![], 'R'),
            ("spawn and dedicated gone", spawn(rec("/cg")), vec![], 'R'),
            (
                "the spawn cgroup still there",
                spawn(rec("/cg")),
                vec!["/cg/procnetmon2-spawn-1"],
                'U',
            ),
            (
                "an older run's move without its cgroup, gone",
                orphan_move(rec("/cg")),
                vec![],
                'R',
            ),
            (
                "... whose cgroup exists again: refused as before",
                orphan_move(rec("/cg")),
                vec!["/cg/a/procnetmon2-5"],
                'X',
            ),
            (
                "foreign cgroup names, gone: refused",
                foreign(rec("/cg")),
                vec![],
                'X',
            ),
            (
                "foreign cgroup names, there: refused",
                foreign(rec("/cg")),
                vec!["/cg/a/kubepods"],
                'X',
            ),
            (
                "a path outside the mount: refused",
                outside(rec("/cg")),
                vec![],
                'X',
            ),
        ];
        for (name, r, existing, want) in cases {
            let exists = |p: &Path| existing.iter().any(|e| Path::new(e) == p);
            let got = match judge(r.clone(), m, exists) {
                Verdict::Retire(back) => {
                    assert_eq!(back, r, "{name}: the record as read");
                    'R'
                }
                Verdict::Undo(_) => 'U',
                Verdict::Refuse(_) => 'X',
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_record_with_nothing_left_is_retired_in_one_line() {
        let s = Scratch::new("retire");
        let state = s.0.join("state");
        let dir = StateDir::create(&state).unwrap();
        // A mount point that does not exist: none of the record's cgroups does either.
        let mount = s.0.join("no-cgroup2");
        let mut r = rec(mount.to_str().unwrap());
        r.agent_pid = 31;
        dir.write_record("31", &r).unwrap();
        fs::write(state.join("31.lock"), "").unwrap();
        let done = cleanup_stale_in(&state, &mount).unwrap();
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(done[0].retired && done[0].complete, "{done:?}");
        assert!(
            done[0].line.contains("retired run record") && done[0].line.contains("of run 31"),
            "{}",
            done[0].line
        );
        assert!(!state.join("31.json").exists() && !state.join("31.lock").exists());
        // The next clean-up finds nothing.
        assert!(cleanup_stale_in(&state, &mount).unwrap().is_empty());
    }

    #[test]
    fn owner_and_mode_checks() {
        let p = Path::new("/run/procnetmon2/1.json");
        let reg = SFlag::S_IFREG;
        assert_eq!(check_owner_mode(0, 0o100600, reg, 0, p), Ok(()));
        assert_eq!(check_owner_mode(0, 0o100644, reg, 0, p), Ok(()));
        assert!(
            check_owner_mode(1000, 0o100600, reg, 0, p)
                .unwrap_err()
                .contains("uid 1000")
        );
        assert!(
            check_owner_mode(0, 0o100620, reg, 0, p)
                .unwrap_err()
                .contains("group")
        );
        assert!(check_owner_mode(0, 0o100602, reg, 0, p).is_err());
        // A FIFO or directory in a record's place.
        assert!(check_owner_mode(0, 0o010600, reg, 0, p).is_err());
        assert!(check_owner_mode(0, 0o040700, reg, 0, p).is_err());
    }

    #[test]
    fn planted_symlinks_are_not_followed() {
        let s = Scratch::new("symlink");
        let victim = s.0.join("victim");
        fs::write(&victim, "precious").unwrap();
        let state = s.0.join("state");
        let dir = StateDir::create(&state).unwrap();
        // A record that is a symlink to another file: refused, never read.
        std::os::unix::fs::symlink(&victim, state.join("7.json")).unwrap();
        assert!(dir.read_record("7").unwrap_err().contains("symlink"));
        // A temporary name planted as a symlink: the write replaces the link, never the target.
        std::os::unix::fs::symlink(&victim, state.join("8.json.tmp")).unwrap();
        dir.write_record("8", &rec("/cg")).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(dir.read_record("8").unwrap(), Some(rec("/cg")));
        // Cleanup refuses the planted record and leaves everything as it was.
        fs::write(state.join("7.lock"), "").unwrap();
        let lines = cleanup_stale_in(&state, Path::new("/cg")).unwrap();
        assert!(lines.is_empty(), "{lines:?}");
        assert!(
            fs::symlink_metadata(state.join("7.json"))
                .unwrap()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        // The state directory itself as a symlink: refused.
        let link = s.0.join("link");
        std::os::unix::fs::symlink(&state, &link).unwrap();
        assert!(
            StateDir::open(&link)
                .err()
                .unwrap()
                .to_string()
                .contains("not a directory")
        );
    }

    #[test]
    fn state_dir_is_0700_whatever_the_mode_it_had() {
        let s = Scratch::new("mode");
        let state = s.0.join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        let _dir = StateDir::create(&state).unwrap();
        let mode = fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
    }

    #[test]
    fn group_writable_records_are_refused() {
        let s = Scratch::new("gw");
        let state = s.0.join("state");
        let dir = StateDir::create(&state).unwrap();
        dir.write_record("9", &rec("/cg")).unwrap();
        let json = state.join("9.json");
        fs::set_permissions(&json, fs::Permissions::from_mode(0o664)).unwrap();
        assert!(dir.read_record("9").unwrap_err().contains("writable"));
        fs::set_permissions(&json, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(dir.read_record("9").unwrap().is_some());
        assert_eq!(dir.read_record("10"), Ok(None));
    }
}
