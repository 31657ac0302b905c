//! Network namespaces, veth pairs between them, and the kernel's own interface counters: the
//! ground truth every byte count is checked against.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
};

use crate::process::{next_seq, sh, unique};

/// A network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates a namespace with `lo` up and IPv6 off on every other link unless `ipv6`.
    ///
    /// Two processes (`ip netns add`, `ip -n … link set lo up`); the sysctls are written from
    /// a thread inside the namespace. Every process start costs 0.24-0.9 s in the emulated VMs of
    /// scripts/test-kernels (measured: `/bin/true` 0.24 s on 6.12 and 0.7-0.9 s on 5.10 under
    /// TCG), so the harness starts as few as it can.
    pub fn new(ipv6: bool) -> Self {
        let name = unique("pnmt");
        sh("ip", &["netns", "add", &name]);
        let ns = Self { name };
        sh("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        if !ipv6 {
            // No router solicitations, MLD reports or DAD probes on our links.
            ns.sysctl(&[
                ("net/ipv6/conf/all/disable_ipv6", "1"),
                ("net/ipv6/conf/default/disable_ipv6", "1"),
            ]);
        }
        ns
    }

    /// Writes sysctls (paths under /proc/sys) as seen inside the namespace: a thread joins
    /// it (setns affects the calling thread only) and opens the files there, since
    /// /proc/sys/net resolves to the namespace of the task that opens it.
    pub fn sysctl(&self, settings: &[(&str, &str)]) {
        let ns_file = std::fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns: {e}"));
                for (key, value) in settings {
                    std::fs::write(Path::new("/proc/sys").join(key), value)
                        .unwrap_or_else(|e| panic!("sysctl {key}={value}: {e}"));
                }
            });
        });
    }

    /// A file under `/proc/net` (e.g. `snmp`, `tcp`) as this namespace sees it, read from a
    /// thread inside it (`/proc/thread-self/net` follows the reading thread's namespace): no
    /// process start.
    pub fn proc_net(&self, file: &str) -> String {
        let ns_file = std::fs::File::open(self.path())
            .unwrap_or_else(|e| panic!("open {}: {e}", self.path().display()));
        thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns_file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns: {e}"));
                std::fs::read_to_string(Path::new("/proc/thread-self/net").join(file))
                    .unwrap_or_else(|e| panic!("read /proc/net/{file}: {e}"))
            })
            .join()
            .expect("reader thread")
        })
    }

    /// One counter of this namespace's `/proc/net/snmp`, e.g. `("Tcp", "RetransSegs")`.
    pub fn snmp(&self, group: &str, field: &str) -> u64 {
        let text = self.proc_net("snmp");
        let prefix = format!("{group}:");
        let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (lines.next(), lines.next());
        let (Some(names), Some(values)) = (names, values) else {
            panic!("no {group} lines in /proc/net/snmp:\n{text}");
        };
        let i = names
            .split_whitespace()
            .position(|n| n == field)
            .unwrap_or_else(|| panic!("no {group} {field} in /proc/net/snmp"));
        values
            .split_whitespace()
            .nth(i)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad {group} {field} in /proc/net/snmp"))
    }

    /// Runs `ip -n NS -batch -` with `lines` (one ip command each, without `ip`): one process
    /// for a namespace's whole setup.
    pub fn ip_batch(&self, lines: &[String]) {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn ip: {e}"));
        {
            let mut stdin = child.stdin.take().expect("ip stdin");
            for l in lines {
                writeln!(stdin, "{l}").expect("write to ip -batch");
            }
        }
        let out = child.wait_with_output().expect("ip -batch");
        assert!(
            out.status.success(),
            "ip -n {} -batch {lines:?} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut args = vec!["netns", "exec", &self.name];
        args.extend_from_slice(cmd);
        sh("ip", &args)
    }

    /// Path of the namespace file, for setns.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Counters of interface `dev` in this namespace.
    pub fn link_stats(&self, dev: &str) -> LinkStats {
        let out = sh(
            "ip",
            &["-n", &self.name, "-s", "-j", "link", "show", "dev", dev],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        let s = &v[0]["stats64"];
        let n = |dir: &str, k: &str| {
            s[dir][k]
                .as_u64()
                .unwrap_or_else(|| panic!("stats64.{dir}.{k} in {out}"))
        };
        LinkStats {
            rx_bytes: n("rx", "bytes"),
            rx_packets: n("rx", "packets"),
            tx_bytes: n("tx", "bytes"),
            tx_packets: n("tx", "packets"),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// An interface's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes received (frames, with link-layer header).
    pub rx_bytes: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames sent.
    pub tx_packets: u64,
}

impl LinkStats {
    /// Counters accumulated since `before`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            rx_bytes: self.rx_bytes - before.rx_bytes,
            rx_packets: self.rx_packets - before.rx_packets,
            tx_bytes: self.tx_bytes - before.tx_bytes,
            tx_packets: self.tx_packets - before.tx_packets,
        }
    }

    /// IP bytes received on a veth: frame bytes less the 14-byte Ethernet header of each
    /// frame. (Loopback counts from the IP header already: use `rx_bytes` there.)
    pub fn ip_rx(&self) -> u64 {
        self.rx_bytes - 14 * self.rx_packets
    }

    /// IP bytes sent.
    pub fn ip_tx(&self) -> u64 {
        self.tx_bytes - 14 * self.tx_packets
    }

    /// What a veth carried, as a target's counts: IP bytes and packets, each way.
    pub fn ip(&self) -> Counts {
        Counts {
            bytes_in: self.ip_rx(),
            bytes_out: self.ip_tx(),
            packets_in: self.rx_packets,
            packets_out: self.tx_packets,
        }
    }
}

/// Bytes and packets each way: a report's `current` (or a workload's, a destination's), or
/// what a link carried ([`LinkStats::ip`]), compared whole so no field is left unchecked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Bytes in.
    pub bytes_in: u64,
    /// Bytes out.
    pub bytes_out: u64,
    /// Packets in.
    pub packets_in: u64,
    /// Packets out.
    pub packets_out: u64,
}

impl Counts {
    /// The four counts of a report object (`current`, a workload's `current`, a destination).
    pub fn of(v: &serde_json::Value) -> Self {
        let n = |k: &str| {
            v[k].as_u64()
                .unwrap_or_else(|| panic!("{k} missing in {v}"))
        };
        Self {
            bytes_in: n("bytes_in"),
            bytes_out: n("bytes_out"),
            packets_in: n("packets_in"),
            packets_out: n("packets_out"),
        }
    }

    /// Both added up.
    pub const fn plus(self, o: Self) -> Self {
        Self {
            bytes_in: self.bytes_in + o.bytes_in,
            bytes_out: self.bytes_out + o.bytes_out,
            packets_in: self.packets_in + o.packets_in,
            packets_out: self.packets_out + o.packets_out,
        }
    }

    /// `count` IPv4 UDP datagrams of `payload` bytes sent.
    pub const fn udp4_out(count: u64, payload: u64) -> Self {
        Self {
            bytes_in: 0,
            bytes_out: count * udp4_bytes(payload),
            packets_in: 0,
            packets_out: count,
        }
    }

    /// `count` IPv4 UDP datagrams of `payload` bytes received.
    pub const fn udp4_in(count: u64, payload: u64) -> Self {
        Self {
            bytes_in: count * udp4_bytes(payload),
            bytes_out: 0,
            packets_in: count,
            packets_out: 0,
        }
    }
}

/// IPv4 bytes of a UDP datagram with `payload` bytes (20 IP + 8 UDP).
pub const fn udp4_bytes(payload: u64) -> u64 {
    payload + 28
}

/// IPv6 bytes of a UDP datagram with `payload` bytes (40 IPv6 + 8 UDP).
pub const fn udp6_bytes(payload: u64) -> u64 {
    payload + 48
}

/// A veth pair `a` (in `ns_a`, address `10.X.Y.1`) ↔ `b` (in `ns_b`, `10.X.Y.2`), with
/// permanent neighbour entries so no ARP crosses the link. Removed with its namespaces.
pub struct Veth {
    /// Interface name on the A side.
    pub a: String,
    /// Interface name on the B side.
    pub b: String,
    /// IPv4 address of the A side.
    pub ip_a: String,
    /// IPv4 address of the B side.
    pub ip_b: String,
}

/// Test subnet prefix (`10.X`), overridable with `PNM_TEST_NET` (e.g. `10.231`).
fn net_prefix() -> String {
    std::env::var("PNM_TEST_NET").unwrap_or_else(|_| "10.231".into())
}

impl Veth {
    /// Creates the pair, addresses, neighbours; `a_name`/`b_name` name the ends.
    ///
    /// Three processes: the pair is created with each end already in its namespace under its
    /// final name (so an `eth0` never meets the host's own) and with known MAC addresses,
    /// then each side is set up by one `ip -batch`.
    pub fn new(ns_a: &Netns, a_name: &str, ns_b: &Netns, b_name: &str, subnet: u8) -> Self {
        // Locally administered, unique per pair in this process (the pair is its own link:
        // only the two ends must differ).
        let seq = next_seq();
        let mac = |side: u8| {
            format!(
                "02:70:{:02x}:{:02x}:{subnet:02x}:{side:02x}",
                (seq >> 8) & 0xff,
                seq & 0xff
            )
        };
        let (mac_a, mac_b) = (mac(1), mac(2));
        sh(
            "ip",
            &[
                "link", "add", a_name, "address", &mac_a, "netns", &ns_a.name, "type", "veth",
                "peer", "name", b_name, "address", &mac_b, "netns", &ns_b.name,
            ],
        );
        let p = net_prefix();
        let (ip_a, ip_b) = (format!("{p}.{subnet}.1"), format!("{p}.{subnet}.2"));
        let setup = |dev: &str, ip: &str, peer_ip: &str, peer_mac: &str| {
            vec![
                format!("addr add {ip}/24 dev {dev}"),
                format!("link set {dev} up"),
                format!("neigh replace {peer_ip} lladdr {peer_mac} dev {dev} nud permanent"),
            ]
        };
        ns_a.ip_batch(&setup(a_name, &ip_a, &ip_b, &mac_b));
        ns_b.ip_batch(&setup(b_name, &ip_b, &ip_a, &mac_a));
        Self {
            a: a_name.into(),
            b: b_name.into(),
            ip_a,
            ip_b,
        }
    }
}
