//! Names for a target's remote hosts, from its own DNS, and only from answers to questions it
//! asked (issue 26).
//!
//! The kernel hands up each query a target's socket sends (UDP to port 53) and only those
//! answers that came back to the same socket, from the server it asked, with the query's
//! transaction ID, within 10 s; any other answer is counted there and never handed up. Here
//! an answer names hosts only when it matches a query of this target on every point: the
//! same socket (cookie), server, transaction ID, question name (case-insensitive) and type,
//! and it came at most 10 s after the query. Then its A/AAAA records for that name (or along
//! its CNAME chain) name those addresses for this target alone. Everything else is counted
//! as unmatched.
//!
//! Bounded: per target at most `NAMES_PER_TARGET` names and `PENDING_PER_TARGET` queries
//! (least recently used go first), a TTL counts for at most `MAX_TTL`, and answers read
//! before their query (another CPU's perf buffer) wait one read at most, `HELD_PER_TARGET`.

use std::{
    collections::HashMap,
    net::IpAddr,
    num::NonZeroUsize,
    time::{Duration, Instant},
};

use lru::LruCache;

use crate::{
    dns::{Message, udp},
    kernel::{DnsEvent, Slot},
};

/// Names kept per target (addresses it resolved); the least recently used go first.
pub const NAMES_PER_TARGET: usize = 1024;
/// Queries waiting for an answer per target; the oldest go first (their answers then count
/// as unmatched).
pub const PENDING_PER_TARGET: usize = 256;
/// Longest a name counts for new hosts, whatever TTL the answer gave.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// An answer counts only this long after its query.
pub const ANSWER_WITHIN_NS: u64 = procnetmon2_common::dest::DNS_ANSWER_WITHIN_NS;
/// Answers kept for one more read because their query was not read yet.
pub const HELD_PER_TARGET: usize = 256;

/// A query in flight, as its answer must match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct QueryKey {
    cookie: u64,
    server: IpAddr,
    id: u16,
}

#[derive(Debug, Clone)]
struct Query {
    name: String,
    qtype: u16,
    ns: u64,
}

#[derive(Debug, Clone)]
struct Learned {
    name: String,
    until: Instant,
}

/// One target's names, queries in flight and unmatched answers.
#[derive(Debug)]
struct TargetDns {
    names: LruCache<IpAddr, Learned>,
    pending: LruCache<QueryKey, Query>,
    held: Vec<DnsEvent>,
    unmatched: u64,
}

impl Default for TargetDns {
    fn default() -> Self {
        let cap = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        Self {
            names: LruCache::new(cap(NAMES_PER_TARGET)),
            pending: LruCache::new(cap(PENDING_PER_TARGET)),
            held: Vec::new(),
            unmatched: 0,
        }
    }
}

/// Every target's DNS names.
#[derive(Debug, Default)]
pub struct DnsNames {
    targets: HashMap<Slot, TargetDns>,
}

/// What one answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// It matched a query: its addresses are named.
    Matched,
    /// No query of this socket to that server with that ID was read yet.
    NoQuery,
    /// Anything else: not a DNS answer, another name or type, too late.
    Unmatched,
}

impl DnsNames {
    /// Takes the queries and answers the kernel handed up since the last read, at `now`.
    /// Answers whose query was not read yet wait for the next read, once.
    pub fn take(&mut self, events: Vec<DnsEvent>, now: Instant) {
        let mut batch: Vec<(DnsEvent, bool)> = events.into_iter().map(|e| (e, false)).collect();
        for t in self.targets.values_mut() {
            batch.extend(t.held.drain(..).map(|e| (e, true)));
        }
        batch.sort_by_key(|(e, _)| (e.ns, e.answer));
        for (ev, was_held) in batch {
            let t = self.targets.entry(ev.slot).or_default();
            if !ev.answer {
                t.query(&ev);
                continue;
            }
            match t.answer(&ev, now) {
                Outcome::Matched => {}
                Outcome::NoQuery if !was_held && t.held.len() < HELD_PER_TARGET => {
                    t.held.push(ev);
                }
                Outcome::NoQuery | Outcome::Unmatched => t.unmatched += 1,
            }
        }
        // Queries that can no longer be answered.
        for t in self.targets.values_mut() {
            let newest = t.pending.iter().map(|(_, q)| q.ns).max().unwrap_or(0);
            while t
                .pending
                .peek_lru()
                .is_some_and(|(_, q)| q.ns + ANSWER_WITHIN_NS < newest)
            {
                t.pending.pop_lru();
            }
        }
    }

    /// The name target `slot` resolved `addr` from, while its TTL runs.
    pub fn name(&mut self, slot: Slot, addr: IpAddr, now: Instant) -> Option<String> {
        let t = self.targets.get_mut(&slot)?;
        match t.names.get(&addr) {
            Some(l) if l.until >= now => Some(l.name.clone()),
            Some(_) => {
                t.names.pop(&addr);
                None
            }
            None => None,
        }
    }

    /// Answers target `slot` received that matched none of its queries (here; the kernel
    /// counts those it did not hand up).
    pub fn unmatched(&self, slot: Slot) -> u64 {
        self.targets.get(&slot).map_or(0, |t| t.unmatched)
    }

    /// Names kept for `slot` now (for tests and the flood benchmark's checks).
    pub fn len(&self, slot: Slot) -> usize {
        self.targets.get(&slot).map_or(0, |t| t.names.len())
    }
}

impl TargetDns {
    /// A query the target sent: remembered until answered, pushed out or too old.
    fn query(&mut self, ev: &DnsEvent) {
        let Some(d) = udp(&ev.packet).filter(|d| d.dst_port == 53) else {
            return;
        };
        let Some(m) = Message::parse(d.payload).filter(|m| !m.response) else {
            return;
        };
        let key = QueryKey {
            cookie: ev.cookie,
            server: d.dst,
            id: m.id,
        };
        self.pending.put(
            key,
            Query {
                name: m.qname.as_str().to_owned(),
                qtype: m.qtype,
                ns: ev.ns,
            },
        );
    }

    /// An answer the target received: names its addresses when it matches a query.
    fn answer(&mut self, ev: &DnsEvent, now: Instant) -> Outcome {
        let Some(d) = udp(&ev.packet).filter(|d| d.src_port == 53) else {
            return Outcome::Unmatched;
        };
        let Some(m) = Message::parse(d.payload).filter(|m| m.response) else {
            return Outcome::Unmatched;
        };
        let key = QueryKey {
            cookie: ev.cookie,
            server: d.src,
            id: m.id,
        };
        let Some(q) = self.pending.peek(&key) else {
            return Outcome::NoQuery;
        };
        let in_time = ev.ns >= q.ns && ev.ns - q.ns <= ANSWER_WITHIN_NS;
        if !in_time || q.qtype != m.qtype || q.name != m.qname.as_str() {
            return Outcome::Unmatched;
        }
        let Some(q) = self.pending.pop(&key) else {
            return Outcome::Unmatched;
        };
        for (addr, ttl) in m.addresses() {
            let ttl = Duration::from_secs(u64::from(ttl)).min(MAX_TTL);
            self.names.put(
                addr,
                Learned {
                    name: q.name.clone(),
                    until: now + ttl,
                },
            );
        }
        Outcome::Matched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::{
        TYPE_A, TYPE_AAAA,
        wire::{ipv4, message},
    };

    const RESOLVER: [u8; 4] = [10, 0, 0, 53];
    const TARGET: [u8; 4] = [10, 0, 0, 1];

    fn query(slot: u32, cookie: u64, ns: u64, id: u16, name: &str, qtype: u16) -> DnsEvent {
        DnsEvent {
            slot: Slot(slot),
            cookie,
            ns,
            answer: false,
            packet: ipv4(
                TARGET,
                RESOLVER,
                40000,
                53,
                &message(id, false, name, qtype, &[]),
            ),
        }
    }

    /// An answer from `server` naming `name` → `addr` (A record on the question's name).
    #[allow(clippy::too_many_arguments)]
    fn answer(
        slot: u32,
        cookie: u64,
        ns: u64,
        server: [u8; 4],
        id: u16,
        name: &str,
        qtype: u16,
        addr: [u8; 4],
        ttl: u32,
    ) -> DnsEvent {
        let m = message(
            id,
            true,
            name,
            qtype,
            &[(vec![0xc0, 12], TYPE_A, ttl, addr.to_vec())],
        );
        DnsEvent {
            slot: Slot(slot),
            cookie,
            ns,
            answer: true,
            packet: ipv4(server, TARGET, 53, 40000, &m),
        }
    }

    fn ip(a: [u8; 4]) -> IpAddr {
        IpAddr::from(a)
    }

    const S: u64 = 1_000_000_000;

    /// Which answers name a host: every point of the match is one row.
    #[test]
    fn an_answer_names_only_what_its_own_query_asked() {
        let good = [10, 0, 0, 66];
        // (what, the answer) → named
        #[rustfmt::skip]
        let rows: &[(&str, DnsEvent, bool)] = &[
            ("the answer", answer(0, 7, 2 * S, RESOLVER, 100, "good.example", TYPE_A, good, 60), true),
            ("name in another case", answer(0, 7, 2 * S, RESOLVER, 100, "GOOD.example", TYPE_A, good, 60), true),
            ("another socket", answer(0, 8, 2 * S, RESOLVER, 100, "good.example", TYPE_A, good, 60), false),
            ("another target", answer(1, 7, 2 * S, RESOLVER, 100, "good.example", TYPE_A, good, 60), false),
            ("another server", answer(0, 7, 2 * S, [10, 0, 0, 99], 100, "good.example", TYPE_A, good, 60), false),
            ("another ID", answer(0, 7, 2 * S, RESOLVER, 101, "good.example", TYPE_A, good, 60), false),
            ("another name", answer(0, 7, 2 * S, RESOLVER, 100, "evil.example", TYPE_A, good, 60), false),
            ("another type", answer(0, 7, 2 * S, RESOLVER, 100, "good.example", TYPE_AAAA, good, 60), false),
            ("too late", answer(0, 7, 12 * S, RESOLVER, 100, "good.example", TYPE_A, good, 60), false),
            ("before the query", answer(0, 7, S / 2, RESOLVER, 100, "good.example", TYPE_A, good, 60), false),
        ];
        let now = Instant::now();
        for (what, ev, named) in rows {
            let mut n = DnsNames::default();
            n.take(
                vec![query(0, 7, S, 100, "good.example", TYPE_A), ev.clone()],
                now,
            );
            // A second read: answers held for their query are settled.
            n.take(Vec::new(), now);
            let got = n.name(ev.slot, ip(good), now);
            assert_eq!(got.is_some(), *named, "{what}: {got:?}");
            if *named {
                assert_eq!(got.as_deref(), Some("good.example"), "{what}");
            }
            assert_eq!(n.unmatched(ev.slot), u64::from(!*named), "{what}");
            // Nothing leaks to the other target.
            assert_eq!(n.name(Slot(1 - ev.slot.0), ip(good), now), None, "{what}");
        }
    }

    /// The scenario: A asks for good.example, the resolver later sends A an answer it
    /// never asked for (evil.example); B asked nothing. B's hosts get no names, and A's
    /// only the one it asked for.
    #[test]
    fn names_are_per_target_and_unsolicited_answers_name_nothing() {
        let now = Instant::now();
        let mut n = DnsNames::default();
        n.take(
            vec![
                query(0, 7, S, 1, "good.example", TYPE_A),
                answer(
                    0,
                    7,
                    S + 1000,
                    RESOLVER,
                    1,
                    "good.example",
                    TYPE_A,
                    [127, 0, 0, 66],
                    300,
                ),
                answer(
                    0,
                    7,
                    3 * S,
                    RESOLVER,
                    2,
                    "evil.example",
                    TYPE_A,
                    [127, 0, 0, 77],
                    300,
                ),
            ],
            now,
        );
        n.take(Vec::new(), now);
        assert_eq!(
            n.name(Slot(0), ip([127, 0, 0, 66]), now).as_deref(),
            Some("good.example")
        );
        assert_eq!(n.name(Slot(0), ip([127, 0, 0, 77]), now), None);
        assert_eq!(n.name(Slot(1), ip([127, 0, 0, 66]), now), None);
        assert_eq!(n.unmatched(Slot(0)), 1);
        // A replayed answer (its query was answered already) names nothing either.
        n.take(
            vec![answer(
                0,
                7,
                S + 2000,
                RESOLVER,
                1,
                "good.example",
                TYPE_A,
                [127, 0, 0, 88],
                300,
            )],
            now,
        );
        n.take(Vec::new(), now);
        assert_eq!(n.name(Slot(0), ip([127, 0, 0, 88]), now), None);
        assert_eq!(n.unmatched(Slot(0)), 2);
    }

    /// An answer read before its query (the query sat in another CPU's buffer) waits one read.
    #[test]
    fn an_answer_read_before_its_query_waits_one_read() {
        let now = Instant::now();
        let mut n = DnsNames::default();
        n.take(
            vec![answer(
                0,
                7,
                2 * S,
                RESOLVER,
                5,
                "late.example",
                TYPE_A,
                [10, 1, 1, 1],
                60,
            )],
            now,
        );
        assert_eq!(n.unmatched(Slot(0)), 0);
        n.take(vec![query(0, 7, S, 5, "late.example", TYPE_A)], now);
        assert_eq!(
            n.name(Slot(0), ip([10, 1, 1, 1]), now).as_deref(),
            Some("late.example")
        );
        assert_eq!(n.unmatched(Slot(0)), 0);
    }

    /// Caps: names per target (LRU), queries in flight (LRU), TTLs.
    #[test]
    fn names_queries_and_ttls_are_bounded() {
        let now = Instant::now();
        let mut n = DnsNames::default();
        let total = NAMES_PER_TARGET + 100;
        for i in 0..total {
            let id = (i % 60_000) as u16;
            let name = format!("h{i}.example");
            let addr = [10, 2, (i >> 8) as u8, i as u8];
            let ns = S + i as u64;
            n.take(
                vec![
                    query(0, 7, ns, id, &name, TYPE_A),
                    answer(0, 7, ns + 1, RESOLVER, id, &name, TYPE_A, addr, u32::MAX),
                ],
                now,
            );
        }
        assert_eq!(n.len(Slot(0)), NAMES_PER_TARGET);
        assert_eq!(
            n.name(Slot(0), ip([10, 2, 0, 0]), now),
            None,
            "oldest evicted"
        );
        let last = total - 1;
        let addr = [10, 2, (last >> 8) as u8, last as u8];
        assert!(n.name(Slot(0), ip(addr), now).is_some());
        // A TTL of 136 years counts for an hour.
        assert!(n.name(Slot(0), ip(addr), now + MAX_TTL).is_some());
        assert_eq!(
            n.name(Slot(0), ip(addr), now + MAX_TTL + Duration::from_secs(1)),
            None
        );
        // Queries in flight: at most PENDING_PER_TARGET; the oldest's answer is unmatched.
        let mut n = DnsNames::default();
        let qs = (0..PENDING_PER_TARGET as u16 + 1)
            .map(|i| query(0, 7, S + u64::from(i), i, "q.example", TYPE_A))
            .collect();
        n.take(qs, now);
        n.take(
            vec![answer(
                0,
                7,
                2 * S,
                RESOLVER,
                0,
                "q.example",
                TYPE_A,
                [10, 3, 0, 1],
                5,
            )],
            now,
        );
        n.take(Vec::new(), now);
        assert_eq!(n.unmatched(Slot(0)), 1);
    }
}
