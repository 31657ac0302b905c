//! Interfaces as a target sees them: names resolved in the target's own network namespace
//! (`/proc/PID/ns/net`), on a short-lived thread of their own (setns changes only the calling
//! thread; it never runs on an async worker).

use std::fs::File;

use anyhow::{Context as _, anyhow};

use crate::error::UsageError;

/// `SO_NETNS_COOKIE` (Linux 5.14): a namespace identity unique for the boot.
const SO_NETNS_COOKIE: i32 = 71;

/// A namespace's interfaces: its cookie and (name, ifindex) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsLinks {
    /// `SO_NETNS_COOKIE` of the namespace, as `bpf_get_netns_cookie` reports it.
    pub cookie: u64,
    /// Every interface: (name, ifindex).
    pub links: Vec<(String, u32)>,
}

impl NetnsLinks {
    /// The index of interface `name`, if present.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.links.iter().find(|(n, _)| n == name).map(|(_, i)| *i)
    }

    /// Names, comma-separated, for error messages.
    pub fn names(&self) -> String {
        let v: Vec<&str> = self.links.iter().map(|(n, _)| n.as_str()).collect();
        v.join(", ")
    }
}

/// A network namespace as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    /// Its inode (`/proc/PID/ns/net`).
    pub inode: u64,
    /// A process living in it (where it is entered to read it).
    pub pid: u32,
    /// Its cookie and interfaces.
    pub links: NetnsLinks,
}

/// `--all -i`: checks `names` against every namespace `found` on the node. A name in none of
/// them is a usage error; a name missing from some is warned about once.
pub fn check_node_names(names: &[String], found: &[Netns]) -> Result<(), UsageError> {
    for n in names {
        let with: Vec<&Netns> = found
            .iter()
            .filter(|s| s.links.index_of(n).is_some())
            .collect();
        if with.is_empty() {
            // The lowest inode is the first namespace made: the host's own.
            let host = found.iter().min_by_key(|s| s.inode);
            return Err(UsageError::new(format!(
                "-i: no interface '{n}' in any of the {} network namespaces on this node (the host's has: {}); name one that exists",
                found.len(),
                host.map_or_else(String::new, |s| s.links.names())
            )));
        }
        if with.len() < found.len() {
            let without: Vec<String> = found
                .iter()
                .filter(|s| s.links.index_of(n).is_none())
                .take(5)
                .map(|s| s.pid.to_string())
                .collect();
            log::warn!(
                "-i {n}: present in {} of {} network namespaces; nothing is counted through it in the other {} (those of processes {}{})",
                with.len(),
                found.len(),
                found.len() - with.len(),
                without.join(", "),
                if found.len() - with.len() > without.len() {
                    ", …"
                } else {
                    ""
                }
            );
        }
    }
    Ok(())
}

/// `SO_NETNS_COOKIE` of the namespace a socket lives in.
pub fn netns_cookie_of(sock: &impl std::os::fd::AsRawFd) -> std::io::Result<u64> {
    super::procs::getsockopt_raw::<u64>(sock, libc::SOL_SOCKET, SO_NETNS_COOKIE)
}

/// Runs in the calling thread, after setns: reads the namespace cookie and interfaces.
fn read_here() -> anyhow::Result<NetnsLinks> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
        .context("socket in the target's namespace")?;
    let cookie = netns_cookie_of(&sock).context("getsockopt(SO_NETNS_COOKIE) (Linux >= 5.14)")?;
    let links = nix::net::if_::if_nameindex()
        .context("if_nameindex")?
        .iter()
        .map(|i| (i.name().to_string_lossy().into_owned(), i.index()))
        .collect();
    Ok(NetnsLinks { cookie, links })
}

/// The interfaces of process `pid`'s network namespace.
pub fn links_of(proc: &super::procs::ProcFs, pid: u32) -> anyhow::Result<NetnsLinks> {
    let path = proc.path(pid, "ns/net").display().to_string();
    let ns = File::open(&path).with_context(|| format!("open {path}"))?;
    std::thread::Builder::new()
        .name("pnm-netns".into())
        .spawn(move || {
            // On this fresh thread only; the thread ends right after.
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("setns into the target's network namespace")?;
            read_here()
        })
        .context("spawn netns thread")?
        .join()
        .map_err(|_| anyhow!("netns thread panicked"))?
}

/// Every network namespace a process lives in now: (the namespace's inode, one PID in it),
/// one entry per namespace. A `stat` per process, no `setns`: cheap enough to repeat.
pub fn namespaces(proc: &super::procs::ProcFs) -> Vec<(u64, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut seen = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir(proc.root()) else {
        return Vec::new();
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Gone meanwhile, or not ours to see: skipped (another process of it is found).
        if let Ok(m) = std::fs::metadata(proc.path(pid, "ns/net")) {
            seen.entry(m.ino()).or_insert(pid);
        }
    }
    let mut out: Vec<(u64, u32)> = seen.into_iter().collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_is_listed() {
        use std::os::unix::fs::MetadataExt as _;
        let proc = crate::host::procs::ProcFs::default();
        let own = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let all = namespaces(&proc);
        assert!(all.iter().any(|(ino, _)| *ino == own), "{all:?}");
        let mut inodes: Vec<u64> = all.iter().map(|(i, _)| *i).collect();
        inodes.dedup();
        assert_eq!(inodes.len(), all.len(), "one entry per namespace");
    }

    #[test]
    fn own_namespace_has_loopback() {
        let l = links_of(&crate::host::procs::ProcFs::default(), std::process::id()).unwrap();
        assert_eq!(l.index_of("lo"), Some(1));
        assert!(l.names().contains("lo"));
        assert_ne!(l.cookie, 0);
    }
}
