//! Where the bytes go, per target (issue 17): per-remote-host totals (`--destinations`), per
//! class totals (`--class`, `--classes`) and names for remote hosts from the DNS answers the
//! targets themselves received.
//!
//! The kernel keeps every count cumulative (nothing is drained, so nothing is lost between
//! ticks); this tracker takes a baseline at the start, as the per-target totals do, and keeps
//! the previous reading per key for interval rates. Names come only from each target's own
//! answers to its own queries (`dns_names`): the agent never sends a query.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use super::dns_names::DnsNames;
use crate::{
    classes::ClassSet,
    kernel::{Kernel, Proto, Slot},
    model::{ClassTraffic, Counters, Destination, DnsCounts, Traffic},
    sampling::rate_bps,
};

/// One cumulative counter with its baseline and last reading.
#[derive(Debug, Clone, Copy, Default)]
struct Flow {
    base: Counters,
    cur: Counters,
    rate_in: f64,
    rate_out: f64,
}

impl Flow {
    fn with_base(base: Counters) -> Self {
        Self {
            base,
            cur: base,
            ..Self::default()
        }
    }

    /// Takes reading `cur` after `dt`.
    fn update(&mut self, cur: Counters, dt: Duration) {
        let d = cur.minus(self.cur);
        self.rate_in = rate_bps(d.bytes_in, dt);
        self.rate_out = rate_bps(d.bytes_out, dt);
        self.cur = cur;
    }

    fn since_start(&self) -> Counters {
        self.cur.minus(self.base)
    }

    /// (in, out) rates: the last interval's, or the average since `elapsed` when final.
    fn rates(&self, is_final: bool, elapsed: Duration) -> (f64, f64) {
        if is_final {
            let c = self.since_start();
            (
                rate_bps(c.bytes_in, elapsed),
                rate_bps(c.bytes_out, elapsed),
            )
        } else {
            (self.rate_in, self.rate_out)
        }
    }
}

/// One remote host of one target.
#[derive(Debug, Clone, Default)]
struct Host {
    flow: Flow,
    class: Option<u8>,
    name: Option<String>,
}

/// What the session keeps of destinations and classes between ticks.
#[derive(Debug)]
pub struct DestTracker {
    destinations: bool,
    classes: Option<ClassSet>,
    slots: Vec<Slot>,
    started: Instant,
    last: Instant,
    hosts: HashMap<(Slot, IpAddr), Host>,
    other: HashMap<Slot, (Flow, u64)>,
    by_class: HashMap<(Slot, Proto, u8), Flow>,
    dns: DnsNames,
}

impl DestTracker {
    /// Starts at `now` for target `slots`, with the kernel's current counts as the baseline
    /// except for `fresh` slots (a spawned command: everything it did is the run's).
    pub fn start(
        now: Instant,
        kernel: &dyn Kernel,
        slots: Vec<Slot>,
        fresh: &[Slot],
        destinations: bool,
        classes: Option<ClassSet>,
    ) -> Self {
        let mut t = Self {
            destinations,
            classes,
            slots,
            started: now,
            last: now,
            hosts: HashMap::new(),
            other: HashMap::new(),
            by_class: HashMap::new(),
            dns: DnsNames::default(),
        };
        let base = |slot: Slot, c: Counters| {
            if fresh.contains(&slot) {
                Counters::default()
            } else {
                c
            }
        };
        if destinations {
            for d in kernel.destinations() {
                t.hosts.insert(
                    (d.slot, d.addr),
                    Host {
                        flow: Flow::with_base(base(d.slot, d.counters)),
                        class: d.class,
                        name: None,
                    },
                );
            }
            for s in t.slots.clone() {
                let o = kernel.dest_other(s).unwrap_or_default();
                t.other
                    .insert(s, (Flow::with_base(base(s, o.counters)), o.hosts));
            }
        }
        if t.classes.is_some() {
            for c in kernel.class_totals() {
                t.by_class.insert(
                    (c.slot, c.proto, c.class),
                    Flow::with_base(base(c.slot, c.counters)),
                );
            }
        }
        t
    }

    /// Reads the kernel's counts and the DNS answers that arrived.
    pub fn tick(&mut self, now: Instant, kernel: &mut dyn Kernel) {
        let dt = now.saturating_duration_since(self.last);
        if dt.is_zero() {
            return;
        }
        self.last = now;
        if self.destinations {
            self.dns.take(kernel.dns_events(), now);
            for d in kernel.destinations() {
                let h = self.hosts.entry((d.slot, d.addr)).or_insert_with(|| Host {
                    class: d.class,
                    ..Host::default()
                });
                h.flow.update(d.counters, dt);
                if let Some(name) = self.dns.name(d.slot, d.addr, now) {
                    // The target's latest answer names it; a name stays once learned (a
                    // short TTL must not blank a host that is still reported).
                    h.name = Some(name);
                }
            }
            for s in &self.slots {
                if let Ok(o) = kernel.dest_other(*s) {
                    let e = self.other.entry(*s).or_default();
                    e.0.update(o.counters, dt);
                    e.1 = o.hosts;
                }
            }
        }
        if self.classes.is_some() {
            for c in kernel.class_totals() {
                self.by_class
                    .entry((c.slot, c.proto, c.class))
                    .or_default()
                    .update(c.counters, dt);
            }
        }
    }

    /// The remote hosts of `slot` (busiest first), `other` last when it carried traffic.
    pub fn destinations(&self, slot: Slot, is_final: bool) -> Option<Vec<Destination>> {
        if !self.destinations {
            return None;
        }
        let elapsed = self.last.saturating_duration_since(self.started);
        let mut out: Vec<Destination> = self
            .hosts
            .iter()
            .filter(|((s, _), h)| *s == slot && h.flow.since_start() != Counters::default())
            .map(|((_, addr), h)| {
                let (rate_in, rate_out) = h.flow.rates(is_final, elapsed);
                Destination {
                    remote: addr.to_string(),
                    name: h.name.clone(),
                    class: self
                        .classes
                        .as_ref()
                        .zip(h.class)
                        .map(|(c, i)| c.name(i).to_string()),
                    counters: h.flow.since_start(),
                    rate_in,
                    rate_out,
                    hosts: None,
                    connections: None,
                }
            })
            .collect();
        let volume = |d: &Destination| d.counters.bytes_in + d.counters.bytes_out;
        out.sort_by(|a, b| volume(b).cmp(&volume(a)).then(a.remote.cmp(&b.remote)));
        if let Some((flow, hosts)) = self.other.get(&slot)
            && flow.since_start() != Counters::default()
        {
            let (rate_in, rate_out) = flow.rates(is_final, elapsed);
            out.push(Destination {
                remote: "other".into(),
                name: None,
                class: None,
                counters: flow.since_start(),
                rate_in,
                rate_out,
                hosts: Some(*hosts),
                connections: None,
            });
        }
        Some(out)
    }

    /// `--destinations`: what of `slot`'s DNS named nothing: answers that matched none of its
    /// queries (those the kernel kept back and those that failed the match here) and records
    /// dropped past its budget.
    pub fn dns_counts(&self, slot: Slot, kernel: &dyn Kernel) -> Option<DnsCounts> {
        if !self.destinations {
            return None;
        }
        let k = kernel.dns_drops(slot);
        Some(DnsCounts {
            unmatched: k.unmatched + self.dns.unmatched(slot),
            dropped: k.dropped,
        })
    }

    /// The classes of `slot` that carried traffic, in class order.
    pub fn classes(&self, slot: Slot, is_final: bool) -> Option<Vec<ClassTraffic>> {
        let set = self.classes.as_ref()?;
        let elapsed = self.last.saturating_duration_since(self.started);
        let mut sums: std::collections::BTreeMap<u8, (Traffic, f64, f64)> = Default::default();
        for ((s, proto, class), f) in &self.by_class {
            if *s != slot {
                continue;
            }
            let (ri, ro) = f.rates(is_final, elapsed);
            let e = sums.entry(*class).or_default();
            add_proto(&mut e.0, *proto, f.since_start());
            e.1 += ri;
            e.2 += ro;
        }
        Some(
            sums.into_iter()
                .filter(|(_, (t, _, _))| t.total() != Counters::default())
                .map(|(i, (by_protocol, rate_in, rate_out))| ClassTraffic {
                    class: set.name(i).to_string(),
                    counters: by_protocol.total(),
                    rate_in,
                    rate_out,
                    by_protocol,
                })
                .collect(),
        )
    }

    /// `slot`'s traffic since the start per class name, by protocol (for the metrics).
    pub fn class_traffic(&self, slot: Slot) -> Option<Vec<(String, Traffic)>> {
        let set = self.classes.as_ref()?;
        let mut sums: std::collections::BTreeMap<u8, Traffic> = Default::default();
        for ((s, proto, class), f) in &self.by_class {
            if *s != slot {
                continue;
            }
            add_proto(sums.entry(*class).or_default(), *proto, f.since_start());
        }
        Some(
            sums.into_iter()
                .map(|(i, t)| (set.name(i).to_string(), t))
                .collect(),
        )
    }
}

/// Adds `c` to `t`'s protocol `proto`.
fn add_proto(t: &mut Traffic, proto: Proto, c: Counters) {
    match proto {
        Proto::Tcp => t.tcp = t.tcp.plus(c),
        Proto::Udp => t.udp = t.udp.plus(c),
        Proto::Other => t.other = t.other.plus(c),
    }
}

/// `--details`: fills each destination's `connections` with the open connections to it
/// (`remote` of a connection row is `ip:port`, `[ip6]:port`, or `*` when unconnected).
pub fn count_connections(dests: &mut [Destination], conns: &[crate::model::ConnDetail]) {
    let mut open: HashMap<String, u32> = HashMap::new();
    for c in conns.iter().filter(|c| c.state != "CLOSED") {
        if let Ok(sa) = c.remote.parse::<std::net::SocketAddr>() {
            *open.entry(sa.ip().to_string()).or_default() += 1;
        }
    }
    for d in dests.iter_mut().filter(|d| d.hosts.is_none()) {
        d.connections = Some(open.get(&d.remote).copied().unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::kernel::{ClassCount, DestCount, DestOther, DnsEvent, fake::FakeKernel};

    fn c(bytes_in: u64, bytes_out: u64) -> Counters {
        Counters {
            bytes_in,
            bytes_out,
            packets_in: 1,
            packets_out: 1,
        }
    }

    fn dest(slot: u32, addr: &str, class: Option<u8>, counters: Counters) -> DestCount {
        DestCount {
            slot: Slot(slot),
            addr: addr.parse().unwrap(),
            class,
            counters,
        }
    }

    /// A query of socket 7 for `name` and its answer `addr`, as the kernel hands them up:
    /// the answer is built with simple-dns (an implementation independent of `crate::dns`).
    fn exchange(name: &str, addr: std::net::Ipv4Addr, ttl: u32) -> Vec<DnsEvent> {
        use simple_dns::{CLASS, Name, Packet, PacketFlag, Question, ResourceRecord, rdata};
        let mut p = Packet::new_reply(7);
        p.set_flags(PacketFlag::RECURSION_AVAILABLE);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            simple_dns::TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        p.answers.push(ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            rdata::RData::A(addr.into()),
        ));
        let resolver = [10, 0, 0, 53];
        let me = [10, 0, 0, 1];
        let q = crate::dns::wire::message(7, false, name, crate::dns::TYPE_A, &[]);
        let ev = |ns, answer, packet| DnsEvent {
            slot: Slot(0),
            cookie: 7,
            ns,
            answer,
            packet,
        };
        vec![
            ev(
                1_000,
                false,
                crate::dns::wire::ipv4(me, resolver, 40000, 53, &q),
            ),
            ev(
                2_000,
                true,
                crate::dns::wire::ipv4(resolver, me, 53, 40000, &p.build_bytes_vec().unwrap()),
            ),
        ]
    }

    #[test]
    fn since_start_rates_other_and_names() {
        let t0 = Instant::now();
        let mut k = FakeKernel::default();
        // Before the start: a host with history (baseline) on slot 0.
        k.destinations
            .push(dest(0, "10.0.1.2", Some(2), c(1000, 500)));
        let mut tr = DestTracker::start(t0, &k, vec![Slot(0)], &[], true, None);
        k.destinations = vec![
            dest(0, "10.0.1.2", Some(2), c(3000, 1500)),
            dest(0, "10.0.2.2", Some(2), c(100, 0)),
            dest(1, "10.0.3.2", None, c(7, 7)),
        ];
        k.dest_other.insert(
            Slot(0),
            DestOther {
                counters: c(50, 60),
                hosts: 2,
            },
        );
        k.dns = exchange("db.example.internal", "10.0.1.2".parse().unwrap(), 30);
        k.dns_drops.insert(
            Slot(0),
            crate::kernel::DnsDrops {
                unmatched: 5,
                dropped: 2,
            },
        );
        tr.tick(t0 + Duration::from_secs(1), &mut k);
        let d = tr.destinations(Slot(0), false).unwrap();
        assert_eq!(
            d.iter().map(|d| d.remote.as_str()).collect::<Vec<_>>(),
            ["10.0.1.2", "10.0.2.2", "other"]
        );
        assert_eq!(d[0].counters.bytes_in, 2000);
        assert_eq!(d[0].counters.bytes_out, 1000);
        assert_eq!(d[0].rate_in, 16000.0);
        assert_eq!(d[0].name.as_deref(), Some("db.example.internal"));
        assert_eq!(d[1].name, None);
        assert_eq!(d[2].hosts, Some(2));
        assert_eq!(d[2].counters.bytes_out, 60);
        assert_eq!(
            tr.dns_counts(Slot(0), &k),
            Some(DnsCounts {
                unmatched: 5,
                dropped: 2
            })
        );
        // The name outlives its TTL on a host already named; new hosts need a fresh answer.
        tr.tick(t0 + Duration::from_secs(60), &mut k);
        let d = tr.destinations(Slot(0), true).unwrap();
        assert_eq!(d[0].name.as_deref(), Some("db.example.internal"));
        // Window average: 2000 bytes over 60 s.
        assert!((d[0].rate_in - 2000.0 * 8.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn fresh_slots_keep_everything_and_classes_sum_by_name() {
        let t0 = Instant::now();
        let mut k = FakeKernel::default();
        let class = |proto, class, counters| ClassCount {
            slot: Slot(0),
            proto,
            class,
            counters,
        };
        k.class_totals = vec![class(Proto::Tcp, 2, c(10, 10))];
        let set = ClassSet::from_flags(&["zone=10.1.0.0/16".to_string()], None).unwrap();
        let mut tr = DestTracker::start(t0, &k, vec![Slot(0)], &[Slot(0)], false, Some(set));
        k.class_totals = vec![
            class(Proto::Tcp, 2, c(100, 10)),
            class(Proto::Udp, 2, c(5, 5)),
            class(Proto::Udp, 4, c(1, 2)),
        ];
        tr.tick(t0 + Duration::from_secs(1), &mut k);
        assert_eq!(tr.destinations(Slot(0), false), None);
        let cl = tr.classes(Slot(0), false).unwrap();
        assert_eq!(
            cl.iter()
                .map(|c| (c.class.as_str(), c.counters.bytes_in))
                .collect::<Vec<_>>(),
            [("private", 105), ("zone", 1)]
        );
        let m = tr.class_traffic(Slot(0)).unwrap();
        assert_eq!(m[0].0, "private");
        assert_eq!(m[0].1.tcp.bytes_in, 100);
        assert_eq!(m[0].1.udp.bytes_in, 5);
    }

    #[test]
    fn connections_per_remote_from_details() {
        let detail = |remote: &str, state: &'static str| crate::model::ConnDetail {
            protocol: "tcp",
            local: "10.0.0.1:1".into(),
            remote: remote.into(),
            state,
            bytes_in: 0,
            bytes_out: 0,
            rate_in: 0.0,
            rate_out: 0.0,
            age: Duration::ZERO,
            rtt_us: None,
            retransmits: None,
        };
        let dest = |remote: &str, hosts| Destination {
            remote: remote.into(),
            name: None,
            class: None,
            counters: Counters::default(),
            rate_in: 0.0,
            rate_out: 0.0,
            hosts,
            connections: None,
        };
        let mut d = vec![
            dest("10.0.0.2", None),
            dest("fd00::2", None),
            dest("other", Some(3)),
        ];
        count_connections(
            &mut d,
            &[
                detail("10.0.0.2:443", "ESTABLISHED"),
                detail("10.0.0.2:80", "ESTABLISHED"),
                detail("10.0.0.2:81", "CLOSED"),
                detail("[fd00::2]:53", "ESTABLISHED"),
                detail("*", "UNCONN"),
            ],
        );
        assert_eq!(
            d.iter().map(|d| d.connections).collect::<Vec<_>>(),
            [Some(2), Some(1), None]
        );
    }
}
