//! `--all -i`: the interface filter for every workload on the node. Each `-i` name is resolved
//! in EACH network namespace a process lives in (a pod's `eth0` is its own), and the kernel's
//! filter learns every interface of every namespace resolved: chosen ones are counted, the
//! others are skipped. A (namespace, ifindex) the filter does not know yet (a pod started
//! mid-run, or CNI added its `eth0` after the namespace was made) is charged to `untracked` by
//! the kernel, never dropped silently, and reported back (`Kernel::new_ifaces`); the next tick
//! resolves that namespace, so such bytes are untracked for at most one interval.
//!
//! A name that exists in no namespace at the start is a usage error; one that exists in some
//! namespaces only counts nothing in the others, said once. Namespaces that are gone, and
//! interfaces renamed in place, are noticed by a full re-read every [`REFRESH_TICKS`] ticks;
//! every map here is bounded by the live namespaces.

use std::collections::{HashMap, HashSet};

use super::HostView;
use crate::{
    host::netns::{Netns, NetnsLinks},
    kernel::{IfaceKey, Kernel},
};

/// Every this many ticks, every namespace is listed and re-read (gone ones forgotten).
pub const REFRESH_TICKS: u64 = 60;
/// A namespace reported by the kernel that no process is found in (e.g. only the kernel's own
/// sockets live there) is looked for again after this many ticks, not on every one.
pub const RETRY_TICKS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Space {
    inode: u64,
    pid: u32,
    /// Every interface: counted (a chosen name) or skipped.
    keys: HashMap<IfaceKey, bool>,
}

/// The node-wide interface filter and what it was built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIfaces {
    names: Vec<String>,
    /// By namespace cookie.
    spaces: HashMap<u64, Space>,
    /// Namespace inode → cookie.
    by_inode: HashMap<u64, u64>,
    /// Cookies the kernel reported that no process was found in → the tick of the last look.
    tried: HashMap<u64, u64>,
    ticks: u64,
}

impl NodeIfaces {
    /// The filter for `names` over the namespaces `found` at the start (checked with
    /// `host::netns::check_node_names` when the run was planned).
    pub fn new(names: &[String], found: Vec<Netns>) -> Self {
        let mut out = Self {
            names: names.to_vec(),
            spaces: HashMap::new(),
            by_inode: HashMap::new(),
            tried: HashMap::new(),
            ticks: 0,
        };
        for s in found {
            out.remember(s);
        }
        out
    }

    /// Namespaces resolved so far.
    pub fn namespaces(&self) -> usize {
        self.spaces.len()
    }

    /// Puts every resolved interface into the kernel's filter (set-up).
    pub fn install(&self, kernel: &mut dyn Kernel) -> anyhow::Result<()> {
        for s in self.spaces.values() {
            for (k, count) in &s.keys {
                put(kernel, *k, *count)?;
            }
        }
        Ok(())
    }

    /// One interval: resolves the namespaces of interfaces the kernel saw before the filter
    /// knew them, and every [`REFRESH_TICKS`] re-reads every namespace.
    pub fn tick(&mut self, kernel: &mut dyn Kernel, host: &dyn HostView) {
        self.ticks += 1;
        let new = kernel.new_ifaces();
        let refresh = self.ticks.is_multiple_of(REFRESH_TICKS);
        if new.is_empty() && !refresh {
            return;
        }
        let ticks = self.ticks;
        let cookies: HashSet<u64> = new.iter().map(|k| k.netns_cookie).collect();
        let unknown: Vec<u64> = cookies
            .iter()
            .copied()
            .filter(|c| !self.spaces.contains_key(c))
            .filter(|c| {
                self.tried
                    .get(c)
                    .is_none_or(|t| ticks.saturating_sub(*t) >= RETRY_TICKS)
            })
            .collect();
        let mut reread: HashSet<u64> = cookies
            .iter()
            .copied()
            .filter(|c| self.spaces.contains_key(c))
            .collect();
        if refresh || !unknown.is_empty() {
            let listed = host.namespaces();
            for &(inode, pid) in &listed {
                if self.by_inode.contains_key(&inode) {
                    continue;
                }
                if let Some(links) = host.links(pid) {
                    self.arrive(Netns { inode, pid, links }, kernel);
                }
            }
            for c in unknown {
                if !self.spaces.contains_key(&c) {
                    log::debug!(
                        "-i: traffic in network namespace {c:#x}, where no process was found; counted as untracked"
                    );
                    self.tried.insert(c, ticks);
                }
            }
            if refresh {
                let live: HashSet<u64> = listed.iter().map(|(i, _)| *i).collect();
                let gone: Vec<u64> = self
                    .spaces
                    .iter()
                    .filter(|(_, s)| !live.contains(&s.inode))
                    .map(|(c, _)| *c)
                    .collect();
                for c in gone {
                    self.forget(c, kernel);
                }
                reread.extend(self.spaces.keys().copied());
                self.tried
                    .retain(|_, t| ticks.saturating_sub(*t) < REFRESH_TICKS);
            }
        }
        for c in reread {
            self.reread(c, kernel, host);
        }
    }

    fn keys_in(&self, links: &NetnsLinks) -> HashMap<IfaceKey, bool> {
        links
            .links
            .iter()
            .map(|(name, ifindex)| {
                (
                    IfaceKey {
                        netns_cookie: links.cookie,
                        ifindex: *ifindex,
                    },
                    self.names.contains(name),
                )
            })
            .collect()
    }

    fn remember(&mut self, s: Netns) {
        let keys = self.keys_in(&s.links);
        self.by_inode.insert(s.inode, s.links.cookie);
        self.tried.remove(&s.links.cookie);
        self.spaces.insert(
            s.links.cookie,
            Space {
                inode: s.inode,
                pid: s.pid,
                keys,
            },
        );
    }

    /// A namespace found mid-run: into the filter.
    fn arrive(&mut self, s: Netns, kernel: &mut dyn Kernel) {
        let counted: Vec<&str> = self
            .names
            .iter()
            .filter(|n| s.links.index_of(n).is_some())
            .map(String::as_str)
            .collect();
        log::info!(
            "-i: new network namespace (process {}): {}",
            s.pid,
            if counted.is_empty() {
                "none of the chosen interfaces there, nothing counted".to_string()
            } else {
                format!("counting {}", counted.join(", "))
            }
        );
        let cookie = s.links.cookie;
        self.remember(s);
        for (k, count) in &self.spaces[&cookie].keys {
            if let Err(e) = put(kernel, *k, *count) {
                log::warn!("{e:#}: its traffic is counted as untracked");
            }
        }
    }

    /// Re-reads a known namespace: interfaces added, removed or renamed since.
    fn reread(&mut self, cookie: u64, kernel: &mut dyn Kernel, host: &dyn HostView) {
        let Some(pid) = self.spaces.get(&cookie).map(|s| s.pid) else {
            return;
        };
        // Its process may have left (or died): found again by the next full listing.
        let Some(links) = host.links(pid).filter(|l| l.cookie == cookie) else {
            return;
        };
        let now = self.keys_in(&links);
        let Some(space) = self.spaces.get_mut(&cookie) else {
            return;
        };
        for k in space.keys.keys().filter(|k| !now.contains_key(k)) {
            kernel.deny_iface(*k);
        }
        for (k, count) in &now {
            if space.keys.get(k) == Some(count) {
                continue;
            }
            if *count {
                log::warn!(
                    "-i: a chosen interface appeared in the network namespace of process {pid} (ifindex {}); counting it",
                    k.ifindex
                );
            }
            if let Err(e) = put(kernel, *k, *count) {
                log::warn!("{e:#}: its traffic is counted as untracked");
            }
        }
        space.keys = now;
    }

    fn forget(&mut self, cookie: u64, kernel: &mut dyn Kernel) {
        if let Some(s) = self.spaces.remove(&cookie) {
            self.by_inode.remove(&s.inode);
            for k in s.keys.keys() {
                kernel.deny_iface(*k);
            }
        }
    }
}

fn put(kernel: &mut dyn Kernel, key: IfaceKey, count: bool) -> anyhow::Result<()> {
    if count {
        kernel.allow_iface(key)
    } else {
        kernel.skip_iface(key)
    }
}
