//! The set-up of a test, built in one place: `Scenario` makes the namespaces, veth links and
//! cgroups a test asks for, keeps the background processes it starts (sinks, servers), and
//! removes it all in a safe order when it goes out of scope: the processes first, then the
//! cgroups, the namespaces last. Tests hold `Rc` handles to what they use; nothing is removed
//! while the scenario lives.
//!
//! ```text
//! let Some(s) = Scenario::new() else { return };   // not root: a pnm-skip line
//! let link = s.link(3);                            // namespaces a and b, eth0 ↔ eth0
//! s.background(Peer::udp_sink(&link.addr_b(6003)).in_netns(&link.b));
//! let cg = s.cgroup();
//! let mut t = Peer::udp_send(&link.addr_b(6003), 300, 512).on_go().hold()
//!     .in_cgroup(&cg).in_netns(&link.a).start();
//! ```

use std::{cell::RefCell, rc::Rc};

use crate::{Cgroup, LinkStats, Netns, Peer, Proc, Veth, skip::skip_unless_root};

/// Everything one test set up (see the module doc).
pub struct Scenario {
    // Dropped in this order: the processes, the cgroups (the last made first, so children
    // go before their parents), the namespaces.
    background: RefCell<Vec<Proc>>,
    cgroups: RefCell<Vec<Rc<Cgroup>>>,
    namespaces: RefCell<Vec<Rc<Netns>>>,
}

impl Drop for Scenario {
    fn drop(&mut self) {
        self.background.get_mut().clear();
        let cgroups = self.cgroups.get_mut();
        while let Some(cg) = cgroups.pop() {
            drop(cg);
        }
    }
}

impl Scenario {
    /// An empty scenario, or `None` (after the skip line) when the test cannot run: not root.
    pub fn new() -> Option<Self> {
        if skip_unless_root() {
            return None;
        }
        Some(Self {
            background: RefCell::new(Vec::new()),
            cgroups: RefCell::new(Vec::new()),
            namespaces: RefCell::new(Vec::new()),
        })
    }

    /// A network namespace with `lo` up and IPv6 off.
    pub fn netns(&self) -> Rc<Netns> {
        self.keep_netns(Netns::new(false))
    }

    /// A network namespace with `lo` up and IPv6 on.
    pub fn netns_v6(&self) -> Rc<Netns> {
        self.keep_netns(Netns::new(true))
    }

    fn keep_netns(&self, ns: Netns) -> Rc<Netns> {
        let ns = Rc::new(ns);
        self.namespaces.borrow_mut().push(Rc::clone(&ns));
        ns
    }

    /// A child cgroup of the cgroup v2 root.
    pub fn cgroup(&self) -> Rc<Cgroup> {
        self.keep_cgroup(Cgroup::new())
    }

    /// A cgroup made elsewhere (e.g. a pod's, at a path of its own: [`Cgroup::make`]),
    /// removed with the rest, before the cgroups made earlier.
    pub fn keep_cgroup(&self, cg: Cgroup) -> Rc<Cgroup> {
        let cg = Rc::new(cg);
        self.cgroups.borrow_mut().push(Rc::clone(&cg));
        cg
    }

    /// Two new namespaces joined by a veth pair, `eth0` on both sides, on `subnet`
    /// (`10.X.subnet.1` on side a, `.2` on side b).
    pub fn link(&self, subnet: u8) -> Link {
        let a = self.netns();
        self.link_from(&a, "eth0", subnet)
    }

    /// A new namespace b joined to `a` by a veth pair: `dev` on a's side, `eth0` on b's.
    pub fn link_from(&self, a: &Rc<Netns>, dev: &str, subnet: u8) -> Link {
        let b = self.netns();
        let veth = Veth::new(a, dev, &b, "eth0", subnet);
        Link {
            a: Rc::clone(a),
            b,
            veth,
        }
    }

    /// Starts `peer` (waiting until it is ready) and keeps it running until the scenario
    /// ends: a sink or a server the test never talks to again.
    pub fn background(&self, peer: Peer<'_>) {
        self.keep(peer.start());
    }

    /// Keeps `p` running until the scenario ends.
    pub fn keep(&self, p: Proc) {
        self.background.borrow_mut().push(p);
    }
}

/// Two namespaces joined by a veth pair: side a (usually the target's) and side b (the peer).
pub struct Link {
    /// Side a's namespace.
    pub a: Rc<Netns>,
    /// Side b's namespace.
    pub b: Rc<Netns>,
    /// The pair: device names and addresses.
    pub veth: Veth,
}

impl Link {
    /// `IP:port` of side a.
    pub fn addr_a(&self, port: u16) -> String {
        format!("{}:{port}", self.veth.ip_a)
    }

    /// `IP:port` of side b.
    pub fn addr_b(&self, port: u16) -> String {
        format!("{}:{port}", self.veth.ip_b)
    }

    /// Side a's interface counters now.
    pub fn stats(&self) -> LinkStats {
        self.a.link_stats(&self.veth.a)
    }

    /// What side a's interface carried since `before` (a [`Link::stats`]).
    pub fn since(&self, before: &LinkStats) -> LinkStats {
        self.stats().since(before)
    }
}
