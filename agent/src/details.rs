//! `--details`: turns the kernel's per-connection records into report rows: addresses,
//! state names, ages and per-interval rates; a closed connection is shown once as `CLOSED`
//! and then forgotten. Pure: takes `now` and the records, so tests need no kernel.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use crate::{
    kernel::{Connection, Slot},
    model::ConnDetail,
    sampling::rate_bps,
};

/// `ip:port` (`[ip]:port` for IPv6), `*` when the port is 0 (unbound / not connected).
pub fn format_addr(family: u8, ip: [u32; 4], port: u16) -> String {
    if port == 0 {
        return "*".into();
    }
    if family == 10 {
        let mut b = [0_u8; 16];
        for (i, w) in ip.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        let v6 = Ipv6Addr::from(b);
        match v6.to_ipv4_mapped() {
            Some(v4) => format!("{v4}:{port}"),
            None => format!("[{v6}]:{port}"),
        }
    } else {
        format!("{}:{port}", Ipv4Addr::from(ip[0].to_ne_bytes()))
    }
}

/// The state as `ss` names it (long form); `CLOSED` once closed.
pub fn state_name(r: &Connection) -> &'static str {
    if r.close_ns != 0 {
        return "CLOSED";
    }
    if !r.tcp {
        return if r.remote.1 != 0 {
            "ESTABLISHED"
        } else {
            "UNCONN"
        };
    }
    match r.state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSED",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        _ => "UNKNOWN",
    }
}

/// Remembers the previous report's bytes per connection, for rates.
#[derive(Debug, Default)]
pub struct DetailTracker {
    prev: HashMap<u64, (u64, u64)>,
    prev_at: Option<Instant>,
}

/// Rows per target slot, and the cookies to forget (shown closed).
pub struct DetailRows {
    /// slot → rows, in cookie order.
    pub by_slot: HashMap<Slot, Vec<ConnDetail>>,
    /// Records shown as closed in this report, to delete from the kernel map.
    pub forget: Vec<u64>,
}

impl DetailTracker {
    /// Builds this report's rows from `records` at `now` (`mono_ns`: CLOCK_MONOTONIC now).
    /// `only_iface_ok`: with `-i`, list only connections seen on a chosen interface.
    pub fn update(
        &mut self,
        now: Instant,
        mono_ns: u64,
        mut records: Vec<(u64, Connection)>,
        only_iface_ok: bool,
    ) -> DetailRows {
        records.sort_by_key(|(c, _)| *c);
        let dt = self
            .prev_at
            .map_or(Duration::ZERO, |p| now.saturating_duration_since(p));
        let mut by_slot: HashMap<Slot, Vec<ConnDetail>> = HashMap::new();
        let mut forget = Vec::new();
        let mut next = HashMap::with_capacity(records.len());
        for (cookie, r) in records {
            if r.close_ns != 0 {
                forget.push(cookie);
            } else {
                next.insert(cookie, (r.bytes_in, r.bytes_out));
            }
            if only_iface_ok && !r.iface_ok {
                continue;
            }
            let (pin, pout) = self.prev.get(&cookie).copied().unwrap_or((0, 0));
            let tcp = r.tcp;
            by_slot.entry(r.slot).or_default().push(ConnDetail {
                protocol: if tcp { "tcp" } else { "udp" },
                local: format_addr(r.family, r.local.0, r.local.1),
                remote: format_addr(r.family, r.remote.0, r.remote.1),
                state: state_name(&r),
                bytes_in: r.bytes_in,
                bytes_out: r.bytes_out,
                rate_in: rate_bps(r.bytes_in.saturating_sub(pin), dt),
                rate_out: rate_bps(r.bytes_out.saturating_sub(pout), dt),
                age: Duration::from_nanos(if r.open_ns == 0 {
                    0
                } else {
                    mono_ns.saturating_sub(r.open_ns)
                }),
                rtt_us: tcp.then_some(r.srtt_us),
                retransmits: tcp.then_some(r.retrans),
            });
        }
        self.prev = next;
        self.prev_at = Some(now);
        DetailRows { by_slot, forget }
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock of `bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unconnected UDP socket: the base the tests change.
    fn conn() -> Connection {
        Connection {
            bytes_in: 0,
            bytes_out: 0,
            open_ns: 0,
            close_ns: 0,
            local: ([0; 4], 0),
            remote: ([0; 4], 0),
            slot: Slot(0),
            tgid: 1,
            srtt_us: 0,
            retrans: 0,
            tcp: false,
            family: 2,
            state: 0,
            iface_ok: true,
        }
    }

    fn v4(a: [u8; 4]) -> [u32; 4] {
        [u32::from_ne_bytes(a), 0, 0, 0]
    }

    #[test]
    fn addresses() {
        assert_eq!(format_addr(2, v4([10, 0, 0, 1]), 5000), "10.0.0.1:5000");
        assert_eq!(format_addr(2, v4([10, 0, 0, 1]), 0), "*");
        let mut lo6 = [0_u32; 4];
        lo6[3] = u32::from_ne_bytes([0, 0, 0, 1]);
        assert_eq!(format_addr(10, lo6, 80), "[::1]:80");
        let mapped = [
            0,
            0,
            u32::from_ne_bytes([0, 0, 0xff, 0xff]),
            u32::from_ne_bytes([127, 0, 0, 1]),
        ];
        assert_eq!(format_addr(10, mapped, 53), "127.0.0.1:53");
    }

    #[test]
    fn states_rates_and_closed_once() {
        let t0 = Instant::now();
        let mut d = DetailTracker::default();
        let rec = |bytes_in: u64, close_ns: u64| Connection {
            bytes_in,
            open_ns: 1_000_000_000,
            close_ns,
            local: (v4([10, 0, 0, 1]), 5000),
            remote: (v4([10, 0, 0, 2]), 443),
            family: 2,
            tcp: true,
            state: 1,
            slot: Slot(3),
            srtt_us: 250,
            iface_ok: true,
            ..conn()
        };
        let rows = d.update(t0, 4_000_000_000, vec![(7, rec(100, 0))], false);
        let r = &rows.by_slot[&Slot(3)][0];
        assert_eq!(
            (r.state, r.local.as_str(), r.remote.as_str()),
            ("ESTABLISHED", "10.0.0.1:5000", "10.0.0.2:443")
        );
        assert_eq!(r.age, Duration::from_secs(3));
        assert_eq!(r.rtt_us, Some(250));
        assert!(rows.forget.is_empty());
        let rows = d.update(
            t0 + Duration::from_secs(1),
            5_000_000_000,
            vec![(7, rec(1100, 4_500_000_000))],
            false,
        );
        let r = &rows.by_slot[&Slot(3)][0];
        assert_eq!(r.state, "CLOSED");
        assert!((r.rate_in - 8000.0).abs() < 1e-6);
        assert_eq!(rows.forget, vec![7]);
        // With -i, records without traffic through a chosen interface are left out.
        let mut quiet = rec(0, 0);
        quiet.iface_ok = false;
        let rows = d.update(
            t0 + Duration::from_secs(2),
            6_000_000_000,
            vec![(8, quiet)],
            true,
        );
        assert!(rows.by_slot.is_empty());
    }

    #[test]
    fn udp_states() {
        let mut r = conn();
        assert_eq!(state_name(&r), "UNCONN");
        r.remote.1 = 53;
        assert_eq!(state_name(&r), "ESTABLISHED");
        r.close_ns = 1;
        assert_eq!(state_name(&r), "CLOSED");
    }
}
