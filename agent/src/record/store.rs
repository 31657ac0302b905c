//! The recording directory: what may be in it, who may own it, one writer at a time, and
//! the file operations the writer uses ([`Storage`], with [`DirStorage`] on the real
//! directory). Every file is opened relative to the directory's descriptor with
//! `O_NOFOLLOW`, so a symbolic link planted in DIR is never followed; new files are created
//! exclusively (`O_EXCL`), so nothing that is there is overwritten.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, Flock, FlockArg, OFlag, openat},
    sys::stat::{FileStat, Mode, SFlag, fstat, fstatat},
    unistd::{UnlinkatFlags, unlinkat},
};

use super::segment::MAGIC;
use crate::error::UsageError;

/// The lock file: held (flock) by the run recording into the directory; holds its PID.
pub const LOCK: &str = "lock";
/// Segment files: `20260105T030000Z.pnmrec` (UTC time of their first frame).
pub const SEGMENT_EXT: &str = ".pnmrec";
/// Journals: the frames of a segment's block in progress, `<segment stem>.pnmjnl`.
pub const JOURNAL_EXT: &str = ".pnmjnl";

/// One entry of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its size, bytes.
    pub size: u64,
    /// Last modification, seconds since the epoch.
    pub mtime: i64,
}

/// The file operations the writer needs; faults are `io::Error`s (disk full, read-only).
pub trait Storage {
    /// The segment and journal files, by name.
    fn list(&self) -> io::Result<Vec<Entry>>;
    /// Creates `name`, which must not exist.
    fn create(&mut self, name: &str) -> io::Result<()>;
    /// Appends `data` to `name` (all of it, or an error).
    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()>;
    /// Cuts `name` to `len` bytes.
    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&mut self, name: &str) -> io::Result<()>;
    /// Reads all of `name`.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Forgets open handles (after a fault, every file is opened afresh).
    fn reset(&mut self) {}
}

/// A directory opened for recording: its descriptor, the lock, open files.
#[derive(Debug)]
pub struct DirStorage {
    path: PathBuf,
    dir: OwnedFd,
    _lock: Flock<File>,
    open: HashMap<String, File>,
}

/// What a name in the directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The lock file.
    Lock,
    /// A segment.
    Segment,
    /// A journal.
    Journal,
}

/// The role of `name`, if it is one of the recorder's.
pub fn role(name: &str) -> Option<Role> {
    if name == LOCK {
        return Some(Role::Lock);
    }
    let stem_ok = |stem: &str| {
        stem.len() >= 16
            && stem
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'T' || b == b'Z' || b == b'-')
    };
    if let Some(stem) = name.strip_suffix(SEGMENT_EXT) {
        return stem_ok(stem).then_some(Role::Segment);
    }
    name.strip_suffix(JOURNAL_EXT)
        .filter(|s| stem_ok(s))
        .map(|_| Role::Journal)
}

fn usage(path: &Path, what: impl std::fmt::Display) -> anyhow::Error {
    UsageError::new(format!("--record {}: {what}", path.display())).into()
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

impl DirStorage {
    /// Opens `path` for recording (creating it, mode 0700, if missing), after checking it is
    /// safe to write: a real directory owned by this user and not writable by everyone,
    /// holding nothing but a recording (regular files of this user, no symbolic links); and
    /// takes its lock, so that a second run cannot record into it.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                use std::os::unix::fs::DirBuilderExt as _;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(path)
                    .map_err(|e| usage(path, format_args!("cannot create it ({e})")))?;
            }
            Err(e) => return Err(usage(path, format_args!("cannot read it ({e})"))),
            Ok(_) => {}
        }
        let dir = open_dir(path)?;
        check_dir(path, &fstat(dir.as_fd())?)?;
        // Checked before the lock is created: a refused directory is left as it was.
        check_entries(path, &dir)?;
        let lock = take_lock(path, &dir)?;
        Ok(Self {
            path: path.to_path_buf(),
            dir,
            _lock: lock,
            open: HashMap::new(),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn file(&mut self, name: &str) -> io::Result<&mut File> {
        if !self.open.contains_key(name) {
            let fd = openat(
                self.dir.as_fd(),
                name,
                OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            self.open.insert(name.to_string(), File::from(fd));
        }
        self.open
            .get_mut(name)
            .ok_or_else(|| io::Error::other("file not open"))
    }
}

/// Refuses anything in the directory that is not the recorder's own.
fn check_entries(path: &Path, dir: &OwnedFd) -> anyhow::Result<()> {
    for name in names(dir)? {
        let st = match fstatat(dir.as_fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(usage(path, format_args!("cannot read {name} ({e})"))),
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            return Err(usage(
                path,
                format_args!(
                    "{name} is a symbolic link, which a recording never holds; remove it or record elsewhere"
                ),
            ));
        }
        if name == "lost+found" && kind == SFlag::S_IFDIR {
            continue;
        }
        let Some(role) = role(&name).filter(|_| kind == SFlag::S_IFREG) else {
            return Err(usage(
                path,
                format_args!(
                    "holds {name}, which is not part of a recording; record into an empty directory or one procnetmon2 recorded into"
                ),
            ));
        };
        if st.st_uid != euid() {
            return Err(usage(
                path,
                format_args!(
                    "{name} is owned by uid {}, not by this user (uid {}); record elsewhere",
                    st.st_uid,
                    euid()
                ),
            ));
        }
        if role == Role::Segment && !has_magic(dir, &name)? {
            return Err(usage(
                path,
                format_args!(
                    "{name} is not a procnetmon2 recording; record into an empty directory or one procnetmon2 recorded into"
                ),
            ));
        }
    }
    Ok(())
}

/// True when `name` starts as a segment does (or is empty: a run created it and could not
/// write to it, a full disk).
fn has_magic(dir: &OwnedFd, name: &str) -> anyhow::Result<bool> {
    let mut head = [0_u8; 8];
    let mut f = File::from(openat(
        dir.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::empty(),
    )?);
    let n = f.read(&mut head)?;
    Ok(n == 0 || head == MAGIC)
}

/// Opens a directory without following a final symbolic link.
pub fn open_dir(path: &Path) -> anyhow::Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            usage(path, "is a symbolic link; give the directory it points to")
        }
        Errno::ENOTDIR => usage(path, "is not a directory"),
        e => usage(path, format_args!("cannot open it ({e})")),
    })
}

/// The directory must be this user's and not writable by everyone.
fn check_dir(path: &Path, st: &FileStat) -> anyhow::Result<()> {
    if st.st_uid != euid() {
        return Err(usage(
            path,
            format_args!(
                "is owned by uid {}, not by this user (uid {}); record into a directory you own",
                st.st_uid,
                euid()
            ),
        ));
    }
    if st.st_mode & 0o002 != 0 {
        return Err(usage(
            path,
            "is writable by every user; record into a directory only you can write (chmod o-w)",
        ));
    }
    Ok(())
}

/// Takes the directory's lock (never blocking), and writes this run's PID into it.
fn take_lock(path: &Path, dir: &OwnedFd) -> anyhow::Result<Flock<File>> {
    let fd = openat(
        dir.as_fd(),
        LOCK,
        OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| match e {
        Errno::ELOOP => usage(
            path,
            "lock is a symbolic link, which a recording never holds; remove it",
        ),
        e => usage(path, format_args!("cannot open its lock ({e})")),
    })?;
    let mut lock = match Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut f, Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = f.read_to_string(&mut pid);
            let pid = pid.trim();
            let who = if pid.is_empty() {
                "another procnetmon2".to_string()
            } else {
                format!("another procnetmon2 (PID {pid})")
            };
            return Err(usage(
                path,
                format_args!("{who} is recording there; stop it, or give another --record DIR"),
            ));
        }
        Err((_, e)) => return Err(usage(path, format_args!("cannot lock it ({e})"))),
    };
    lock.set_len(0)?;
    writeln!(&mut *lock, "{}", std::process::id())?;
    Ok(lock)
}

/// The names in a directory (not `.` and `..`).
pub fn names(dir: &OwnedFd) -> anyhow::Result<Vec<String>> {
    let mut d = nix::dir::Dir::openat(
        dir.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

impl Storage for DirStorage {
    fn list(&self) -> io::Result<Vec<Entry>> {
        let names = names(&self.dir).map_err(io::Error::other)?;
        let mut out = Vec::new();
        for name in names {
            if !matches!(role(&name), Some(Role::Segment | Role::Journal)) {
                continue;
            }
            match fstatat(
                self.dir.as_fd(),
                name.as_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => out.push(Entry {
                    name,
                    size: u64::try_from(st.st_size).unwrap_or(0),
                    mtime: st.st_mtime,
                }),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    fn create(&mut self, name: &str) -> io::Result<()> {
        let fd = openat(
            self.dir.as_fd(),
            name,
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_EXCL
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        self.open.insert(name.to_string(), File::from(fd));
        Ok(())
    }

    fn append(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let f = self.file(name)?;
        let r = f.write_all(data);
        if r.is_err() {
            self.open.remove(name);
        }
        r
    }

    fn truncate(&mut self, name: &str, len: u64) -> io::Result<()> {
        self.file(name)?.set_len(len)
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        unlinkat(self.dir.as_fd(), name, UnlinkatFlags::NoRemoveDir)?;
        Ok(())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let fd = openat(
            self.dir.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut out = Vec::new();
        File::from(fd).read_to_end(&mut out)?;
        Ok(out)
    }

    fn reset(&mut self) {
        self.open.clear();
    }
}
