//! cgroup v2: find the unified hierarchy, find a process's cgroup in it, pick attach points.
//!
//! Only the cgroup v2 hierarchy is ever used; v1 hierarchies (this machine mounts several,
//! the "hybrid" layout) are never written. /proc is read through `procfs`; what is decided
//! from it takes parsed values, so it is testable without a system. `cgroup.procs` is read in
//! one place ([`procs_in`]).

use std::{
    fs::File,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Prefix of every cgroup this tool creates (dedicated `--isolate` cgroups, spawn cgroups).
pub const CGROUP_PREFIX: &str = "procnetmon2-";

/// A cgroup2 mount found in mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2Mount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup` or `/sys/fs/cgroup/unified`.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless mounted from inside a cgroup namespace).
    pub root: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                // Three octal digits fit in a byte only up to \377.
                let v = u32::from(oct[0] - b'0') * 64
                    + u32::from(oct[1] - b'0') * 8
                    + u32::from(oct[2] - b'0');
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first cgroup2 mount of a mount table (`/proc/self/mountinfo`, parsed by procfs,
/// which leaves the octal escapes of paths in place).
pub fn first_cgroup2(
    mounts: impl IntoIterator<Item = procfs::process::MountInfo>,
) -> Option<Cgroup2Mount> {
    mounts.into_iter().find_map(|m| {
        if m.fs_type != "cgroup2" {
            return None;
        }
        let mount_point = PathBuf::from(unescape(&m.mount_point.to_string_lossy()));
        mount_point.is_absolute().then(|| Cgroup2Mount {
            mount_point,
            root: unescape(&m.root),
        })
    })
}

/// Finds the cgroup v2 mount visible to this process.
pub fn find_cgroup2() -> anyhow::Result<Cgroup2Mount> {
    let mounts = procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .context("read /proc/self/mountinfo")?;
    first_cgroup2(mounts).context(
        "no cgroup v2 hierarchy is mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) \
         or boot with systemd.unified_cgroup_hierarchy=1",
    )
}

/// Finds the cgroup v2 mount, or, where none is visible (`ip netns exec` remounts /sys and
/// hides it), mounts one at /sys/fs/cgroup in a private mount namespace of this process, so
/// nothing changes for anyone else. Must run while the process is single-threaded
/// (`unshare(CLONE_NEWNS)` refuses a process whose threads share its filesystem context).
/// On a host with cgroup v1 only, a clear error.
pub fn find_or_mount_cgroup2() -> anyhow::Result<Cgroup2Mount> {
    if let Ok(m) = find_cgroup2() {
        return Ok(m);
    }
    // procfs has no reader for /proc/filesystems: one line per filesystem, the name last.
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.split_whitespace().last() == Some("cgroup2"))
    {
        bail!(
            "this kernel has no cgroup v2 (only v1 hierarchies): procnetmon2 needs the unified hierarchy (Linux >= 4.5, e.g. boot with systemd.unified_cgroup_hierarchy=1)"
        );
    }
    use nix::mount::{MsFlags, mount};
    let target = Path::new("/sys/fs/cgroup");
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context(
        "no cgroup v2 mount is visible, and unshare(CLONE_NEWNS) to mount a private one failed",
    )?;
    // Keep our mounts from propagating back to the host.
    mount(
        Some("none"),
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make the private mount namespace private")?;
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    mount(
        Some("cgroup2"),
        target,
        Some("cgroup2"),
        MsFlags::empty(),
        None::<&str>,
    )
    .context("mount a private cgroup2 at /sys/fs/cgroup")?;
    log::info!("no cgroup v2 mount was visible: mounted a private one at /sys/fs/cgroup");
    find_cgroup2()
}

impl Cgroup2Mount {
    /// The directory of cgroup `path` (as written in /proc/PID/cgroup) under this mount.
    /// Rejects paths that would leave the mount (`..` components).
    pub fn dir_of(&self, path: &str) -> anyhow::Result<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            path.strip_prefix(self.root.as_str()).unwrap_or(path)
        };
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == ".." || c == ".") {
            bail!("cgroup path {path} is outside this cgroup mount (another cgroup namespace?)");
        }
        Ok(if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        })
    }

    /// The cgroup v2 directory of process `pid`.
    pub fn dir_of_pid(&self, proc: &super::procs::ProcFs, pid: u32) -> anyhow::Result<PathBuf> {
        self.dir_of(&proc.cgroup_path(pid)?)
    }
}

/// Every cgroup under (and including) `dir`: (cgroup id = inode of its directory, directory).
pub fn walk(dir: &Path) -> Vec<(u64, PathBuf)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(md) = std::fs::metadata(&d) {
            out.push((md.ino(), d.clone()));
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    out
}

/// The cgroup id (kernfs inode) of cgroup directory `dir`.
pub fn cgroup_id(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(dir)
        .with_context(|| format!("stat cgroup {}", dir.display()))?
        .ino())
}

/// Every process in `dir` and its descendants.
pub fn procs_in_subtree(dir: &Path) -> Vec<u32> {
    walk(dir)
        .into_iter()
        .flat_map(|(_, d)| procs_of(&d))
        .collect()
}

/// The processes directly in cgroup `dir` (none when its `cgroup.procs` cannot be read).
pub fn procs_of(dir: &Path) -> Vec<u32> {
    procs_in(dir).unwrap_or_default()
}

impl Cgroup2Mount {
    /// `dir` as a cgroup path (`/kubepods.slice/…`), relative to the mount.
    pub fn rel_path(&self, dir: &Path) -> String {
        match dir.strip_prefix(&self.mount_point) {
            Ok(rel) if rel.as_os_str().is_empty() => "/".into(),
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => dir.display().to_string(),
        }
    }

    /// Resolves `--cgroup PATH`: a path relative to the hierarchy (`/kubepods.slice/…`) or
    /// an absolute directory under the mount. Must exist and stay inside the mount.
    pub fn resolve_target(&self, path: &str) -> anyhow::Result<PathBuf> {
        let p = Path::new(path);
        let dir = if p.starts_with(&self.mount_point) {
            p.to_path_buf()
        } else {
            self.dir_of(path)?
        };
        if dir
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
            || !dir.is_dir()
        {
            bail!(
                "--cgroup {path}: no such cgroup under {}; give a path like /kubepods.slice/… (see /proc/PID/cgroup)",
                self.mount_point.display()
            );
        }
        Ok(dir)
    }

    /// Resolves `--container ID`: the cgroup of the container whose id starts with `prefix`.
    pub fn find_container(&self, prefix: &str) -> anyhow::Result<PathBuf> {
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "--container {prefix}: give a container id or a unique prefix of one (hex digits)"
            );
        }
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for (_, dir) in walk(&self.mount_point) {
            if let Some(id) =
                crate::host::identity::parse_cgroup_path(&self.rel_path(&dir)).map(|i| i.id)
                && id.starts_with(&prefix.to_ascii_lowercase())
            {
                // The container's own cgroup: the shallowest directory with this id.
                if !found
                    .iter()
                    .any(|(fid, fdir)| *fid == id && dir.starts_with(fdir))
                {
                    found.retain(|(fid, fdir)| !(*fid == id && fdir.starts_with(&dir)));
                    found.push((id, dir));
                }
            }
        }
        match found.len() {
            1 => Ok(found.remove(0).1),
            0 => bail!(
                "--container {prefix}: no container with that id on this host (see crictl ps / docker ps)"
            ),
            n => {
                let ids: Vec<&str> = found
                    .iter()
                    .map(|(id, _)| &id[..id.len().min(16)])
                    .collect();
                bail!(
                    "--container {prefix}: {n} containers match ({}); give a longer prefix",
                    ids.join(", ")
                )
            }
        }
    }
}

/// Opens cgroup file `file` for writing (never creating, never through a symlink) and checks
/// that it is on cgroup2: v1 hierarchies and ordinary files are never written.
pub fn open_cgroup_file(file: &Path) -> std::io::Result<File> {
    use std::os::{fd::AsFd as _, unix::fs::OpenOptionsExt as _};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(file)?;
    let fs_type = nix::sys::statfs::fstatfs(f.as_fd())
        .map_err(std::io::Error::from)?
        .filesystem_type();
    if fs_type != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
        return Err(std::io::Error::other(format!(
            "{} is not on a cgroup v2 hierarchy",
            file.display()
        )));
    }
    Ok(f)
}

/// Moves process `pid` (its whole thread group) into cgroup directory `cg`.
pub fn write_pid(cg: &Path, pid: u32) -> std::io::Result<()> {
    use std::io::Write as _;
    open_cgroup_file(&cg.join("cgroup.procs"))?.write_all(pid.to_string().as_bytes())
}

/// The PIDs listed in `cg`'s `cgroup.procs`: the one reader of that file.
pub fn procs_in(cg: &Path) -> std::io::Result<Vec<u32>> {
    Ok(std::fs::read_to_string(cg.join("cgroup.procs"))?
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect())
}

/// The `populated` value of a `cgroup.events` text: true while the cgroup or a descendant
/// holds a live process.
pub fn parse_populated(events: &str) -> Option<bool> {
    events.lines().find_map(|l| match l.split_once(' ')? {
        ("populated", v) => Some(v.trim() == "1"),
        _ => None,
    })
}

/// Opens a cgroup directory for attaching programs.
pub fn open_dir(dir: &Path) -> anyhow::Result<File> {
    File::open(dir).with_context(|| format!("open cgroup {}", dir.display()))
}

/// Where to attach for a process whose cgroup is `dir`: a process isolated by another run
/// sits in `<original>/procnetmon2-<pid>`, while the sockets it made before the move stay in
/// the original cgroup; attaching at the original covers both.
pub fn attach_dir_for(dir: &Path) -> PathBuf {
    let isolated = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(CGROUP_PREFIX));
    match dir.parent() {
        Some(parent) if isolated => parent.to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

/// Reduces `dirs` to the ones with no ancestor in the set. Programs attached to a cgroup run
/// for all its descendants, so attaching at both a cgroup and its child would count the
/// child's packets twice. Order is kept; duplicates are removed.
pub fn attach_points(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let covered = dirs.iter().any(|o| o != d && d.starts_with(o));
        if !covered && !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
25 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";

    /// A mount table as procfs parses it (lines it cannot parse are skipped).
    fn table(text: &str) -> Vec<procfs::process::MountInfo> {
        text.lines()
            .filter_map(|l| procfs::process::MountInfo::from_line(l).ok())
            .collect()
    }

    #[test]
    fn finds_cgroup2_in_both_layouts() {
        let m = first_cgroup2(table(HYBRID)).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        let m = first_cgroup2(table(UNIFIED)).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m.root, "/");
        assert!(first_cgroup2(table("40 31 0:37 / /x rw - cgroup cgroup rw\n")).is_none());
        assert!(first_cgroup2(table("garbage\n\n - \n")).is_none());
    }

    #[test]
    fn unescapes_mount_points() {
        let m = first_cgroup2(table("9 1 0:1 / /mnt/a\\040b rw - cgroup2 none rw\n")).unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/mnt/a b"));
        assert_eq!(unescape("a\\1"), "a\\1");
        assert_eq!(unescape("\\"), "\\");
    }

    #[test]
    fn dirs_and_attach_points() {
        let m = Cgroup2Mount {
            mount_point: "/cg".into(),
            root: "/".into(),
        };
        assert_eq!(m.dir_of("/").unwrap(), PathBuf::from("/cg"));
        assert_eq!(m.dir_of("/a/b").unwrap(), PathBuf::from("/cg/a/b"));
        assert!(m.dir_of("/../..").is_err());
        let pts = attach_points(&[
            "/cg/a/b".into(),
            "/cg/a".into(),
            "/cg/c".into(),
            "/cg/a".into(),
        ]);
        assert_eq!(pts, vec![PathBuf::from("/cg/a"), PathBuf::from("/cg/c")]);
        // A sibling whose name merely starts with another's is not a descendant.
        let pts = attach_points(&["/cg/ab".into(), "/cg/a".into()]);
        assert_eq!(pts.len(), 2);
    }
}
