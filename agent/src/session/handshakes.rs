//! Incoming handshakes that never completed (issue 29).
//!
//! A listener's SYN makes a request mini-socket, which takes no sock_ops callbacks: the
//! kernel records each request of a watched listener (`HANDSHAKES`, with its owner and start)
//! and the accepted socket's callback deletes the record when the handshake completes. A
//! request that dies — its SYN-ACK retries exhausted, reset by the client, its listener
//! closed — leaves its record behind with no callback to say so. Each tick, records older
//! than [`SETTLE`] are looked up among the TCP sockets of the listener's network namespace
//! (which list request mini-sockets, and the accepted socket under the same addresses once
//! it completes): one that is gone, and whose record is still there when deleted (so the
//! handshake did not complete meanwhile), failed. It is counted when found, at most a tick
//! and [`SETTLE`] after it died.

use std::{collections::HashMap, time::Duration};

use super::HostView;
use crate::{
    host::procs::TcpPairs,
    kernel::{HandshakeOwner, Kernel, PendingHandshake, Slot},
};

/// Age below which a recorded handshake is not looked up: most complete within a round trip,
/// and a lost SYN-ACK is first sent again after one second.
pub const SETTLE: Duration = Duration::from_secs(1);

/// Handshakes found failed in one pass, by owner.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Per target.
    pub by_slot: HashMap<Slot, u64>,
    /// `--all`: per cgroup.
    pub by_cgroup: HashMap<u64, u64>,
}

impl Failed {
    fn add(&mut self, owner: HandshakeOwner) {
        if let Some(s) = owner.slot {
            *self.by_slot.entry(s).or_default() += 1;
        }
        if let Some(id) = owner.cgroup_id {
            *self.by_cgroup.entry(id).or_default() += 1;
        }
    }
}

/// Resolves the kernel's recorded handshakes older than [`SETTLE`] at `now_ns`
/// (CLOCK_MONOTONIC). `pid_of` names a process in an owner's listener's namespace; None when
/// its processes are gone (so is the listener, and with it every request).
pub fn resolve(
    kernel: &mut dyn Kernel,
    host: &mut dyn HostView,
    now_ns: u64,
    mut pid_of: impl FnMut(&mut dyn HostView, &HandshakeOwner) -> Option<u32>,
) -> Failed {
    let settle = SETTLE.as_nanos() as u64;
    let old: Vec<PendingHandshake> = kernel
        .handshakes()
        .into_iter()
        .filter(|h| now_ns.saturating_sub(h.started_ns) >= settle)
        .collect();
    let mut failed = Failed::default();
    // One read of a namespace's tables per pass, whatever the number of handshakes in it.
    let mut tables: HashMap<u32, Option<TcpPairs>> = HashMap::new();
    for h in old {
        let gone = match pid_of(host, &h.owner) {
            None => true,
            Some(pid) => match tables.entry(pid).or_insert_with(|| host.tcp_pairs(pid)) {
                Some(pairs) => !pairs.contains(&(h.local, h.remote)),
                None => false, // the process went meanwhile: look again next tick
            },
        };
        if gone && kernel.forget_handshake(&h) {
            failed.add(h.owner);
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::{kernel::fake::FakeKernel, session::fake_host::FakeHost};

    fn pending(port: u16, owner: HandshakeOwner, started_ns: u64) -> PendingHandshake {
        PendingHandshake {
            local: "10.0.0.1:80".parse().unwrap(),
            remote: SocketAddr::new("10.0.0.2".parse().unwrap(), port),
            owner,
            started_ns,
        }
    }

    const SLOT: HandshakeOwner = HandshakeOwner {
        slot: Some(Slot(0)),
        cgroup_id: None,
    };
    const BOTH: HandshakeOwner = HandshakeOwner {
        slot: Some(Slot(1)),
        cgroup_id: Some(77),
    };

    #[test]
    fn gone_requests_fail_once_live_and_young_ones_wait() {
        let s = SETTLE.as_nanos() as u64;
        let now = 10 * s;
        let mut k = FakeKernel {
            handshakes: vec![
                pending(1000, SLOT, now - s),     // old, gone: failed
                pending(1001, SLOT, now - s),     // old, still listed: waits
                pending(1002, SLOT, now - s / 2), // young: not looked at
                pending(1003, BOTH, now - 2 * s), // old, gone: failed for both owners
            ],
            ..FakeKernel::default()
        };
        let mut host = FakeHost::default();
        let live = pending(1001, SLOT, 0);
        host.tcp_pairs
            .insert(42, [(live.local, live.remote)].into_iter().collect());
        let pid_of = |_: &mut dyn HostView, _: &HandshakeOwner| Some(42);
        let f = resolve(&mut k, &mut host, now, pid_of);
        assert_eq!(f.by_slot.get(&Slot(0)), Some(&1));
        assert_eq!(f.by_slot.get(&Slot(1)), Some(&1));
        assert_eq!(f.by_cgroup.get(&77), Some(&1));
        let left: Vec<u16> = k.handshakes.iter().map(|h| h.remote.port()).collect();
        assert_eq!(left, vec![1001, 1002]);
        // Counted once: a second pass finds nothing more.
        assert_eq!(resolve(&mut k, &mut host, now, pid_of), Failed::default());
    }

    #[test]
    fn an_owner_without_processes_fails_its_requests_and_a_vanished_one_waits() {
        let s = SETTLE.as_nanos() as u64;
        let mut k = FakeKernel {
            handshakes: vec![pending(1000, SLOT, 0), pending(1001, BOTH, 0)],
            ..FakeKernel::default()
        };
        let mut host = FakeHost::default();
        host.dead.insert(9);
        // Slot 0 has no process left; slot 1's process is gone while its table is read.
        let pid_of =
            |_: &mut dyn HostView, o: &HandshakeOwner| (o.slot == Some(Slot(1))).then_some(9);
        let f = resolve(&mut k, &mut host, 5 * s, pid_of);
        assert_eq!(f.by_slot.get(&Slot(0)), Some(&1));
        assert_eq!(f.by_slot.get(&Slot(1)), None);
        assert_eq!(k.handshakes.len(), 1);
    }
}
