//! Destination classes (`--class NAME=CIDR[,CIDR…]`, `--classes FILE`): names for ranges of
//! remote addresses, counted in the kernel by a longest-prefix match on each packet's remote
//! address (`CLASS_CIDRS`, an LPM trie), so the most specific prefix wins.
//!
//! Four classes are built in and always present when classes are on: `loopback`,
//! `link-local`, `private` (RFC 1918, RFC 4193 ULA, CGNAT) and `internet` (what no prefix
//! matches). A user class with a built-in name adds prefixes to it. Pure: no kernel, no files
//! except the one `--classes` names.

use std::{net::IpAddr, path::Path};

use ipnet::IpNet;

use crate::error::UsageError;

/// Index of the built-in `internet` class: what no prefix matches (`CLASS_DEFAULT`).
pub const INTERNET: u8 = procnetmon2_common::dest::CLASS_DEFAULT;
/// Most classes, built-ins included.
pub const MAX_CLASSES: usize = procnetmon2_common::dest::MAX_CLASSES as usize;
/// Most prefixes, built-ins included.
pub const MAX_CIDRS: usize = procnetmon2_common::dest::MAX_CIDRS as usize;

/// Built-in classes, in index order (`internet` has no prefix: it is the default).
const BUILTIN: [(&str, &[&str]); 4] = [
    ("loopback", &["127.0.0.0/8", "::1/128"]),
    ("link-local", &["169.254.0.0/16", "fe80::/10"]),
    (
        "private",
        &[
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "fc00::/7",
        ],
    ),
    ("internet", &[]),
];

/// The classes of a run: names by index and every prefix with its class index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSet {
    /// Class names; a class's index is its position.
    pub names: Vec<String>,
    /// (prefix, class index); a later entry for the same prefix replaces an earlier one.
    pub cidrs: Vec<(IpNet, u8)>,
}

impl Default for ClassSet {
    fn default() -> Self {
        let mut set = Self {
            names: Vec::new(),
            cidrs: Vec::new(),
        };
        for (name, cidrs) in BUILTIN {
            let i = set.names.len() as u8;
            set.names.push(name.to_string());
            for c in cidrs {
                set.cidrs
                    .push((c.parse().expect("built-in prefixes parse"), i));
            }
        }
        set
    }
}

impl ClassSet {
    /// The built-ins plus `--class` values (`NAME=CIDR[,CIDR…]`) and the `--classes` file.
    pub fn from_flags(flags: &[String], file: Option<&Path>) -> Result<Self, UsageError> {
        let mut set = Self::default();
        if let Some(path) = file {
            let text = read_capped(path)?;
            for (name, cidrs) in parse_file(&text).map_err(|e| {
                UsageError::new(format!(
                    "--classes {}: {e}; expected NAME: [CIDR, …] per line, e.g. pod-network: [10.244.0.0/16]",
                    path.display()
                ))
            })? {
                set.add(&name, &cidrs, "--classes")?;
            }
        }
        for f in flags {
            let Some((name, list)) = f.split_once('=') else {
                return Err(UsageError::new(format!(
                    "--class {f}: expected NAME=CIDR[,CIDR…], e.g. --class pod-network=10.244.0.0/16"
                )));
            };
            let cidrs: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
            set.add(name, &cidrs, "--class")?;
        }
        Ok(set)
    }

    fn add(&mut self, name: &str, cidrs: &[String], flag: &str) -> Result<(), UsageError> {
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(UsageError::new(format!(
                "{flag} '{name}': a class name is letters, digits, '-', '_' or '.', e.g. pod-network"
            )));
        }
        if name == "internet" {
            return Err(UsageError::new(format!(
                "{flag} internet: 'internet' is what no prefix matches; give the ranges another name"
            )));
        }
        if cidrs.is_empty() || cidrs.iter().any(String::is_empty) {
            return Err(UsageError::new(format!(
                "{flag} {name}: give at least one CIDR, e.g. {name}=10.0.0.0/8"
            )));
        }
        let index = match self.names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                if self.names.len() >= MAX_CLASSES {
                    return Err(UsageError::new(format!(
                        "{flag} {name}: at most {MAX_CLASSES} classes (built-ins included); merge some"
                    )));
                }
                self.names.push(name.to_string());
                self.names.len() - 1
            }
        };
        for c in cidrs {
            let net = parse_cidr(c).map_err(|e| UsageError::new(format!("{flag} {name}: {e}")))?;
            if self.cidrs.len() >= MAX_CIDRS {
                return Err(UsageError::new(format!(
                    "{flag} {name}: at most {MAX_CIDRS} prefixes; merge some"
                )));
            }
            self.cidrs.push((net, index as u8));
        }
        Ok(())
    }

    /// The class of `addr` as the kernel decides it (longest prefix; ties: the last given).
    /// Used by tests and for addresses the agent classifies itself.
    pub fn class_of(&self, addr: IpAddr) -> u8 {
        let addr = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
            a => a,
        };
        self.cidrs
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map_or(INTERNET, |(_, c)| *c)
    }

    /// The name of class `index` (`?` for an index the kernel should never report).
    pub fn name(&self, index: u8) -> &str {
        self.names
            .get(usize::from(index))
            .map_or("?", String::as_str)
    }
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (`/32`, `/128`). Host bits must be
/// zero: `10.1.2.3/8` is more likely a typo than a wish for `10.0.0.0/8`.
/// Largest `--classes` file read: far more than `MAX_CIDRS` prefixes take as YAML (about
/// 40 bytes each), small enough that `/dev/zero`, a FIFO that never ends or a 10 GB file is
/// refused after reading at most this much.
pub const MAX_CLASSES_FILE: u64 = 1 << 20;

/// The `--classes` file as text, read through a cap: its metadata is not trusted (a device or
/// `/proc` file says 0 bytes), so at most `MAX_CLASSES_FILE` + 1 bytes are ever read.
fn read_capped(path: &Path) -> Result<String, UsageError> {
    use std::io::Read as _;
    let fail = |what: String| {
        UsageError::new(format!(
            "--classes {}: {what}; give a readable YAML file of NAME: [CIDR, …]",
            path.display()
        ))
    };
    let too_big = || fail(format!("larger than {} KiB", MAX_CLASSES_FILE / 1024));
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    if file.metadata().is_ok_and(|m| m.len() > MAX_CLASSES_FILE) {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    file.take(MAX_CLASSES_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_CLASSES_FILE {
        return Err(too_big());
    }
    String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".into()))
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = match s.parse() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                return Err(format!(
                    "'{s}' is not a CIDR; write e.g. 10.0.0.0/8 or fd00::/8"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "'{s}' has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// `--classes FILE`: a YAML mapping of class name to a list of CIDRs (or one CIDR), in order.
fn parse_file(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    use serde_norway::Value;
    let doc: Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let Value::Mapping(map) = doc else {
        return Err("not a mapping".into());
    };
    let mut out = Vec::new();
    for (k, v) in map {
        let Value::String(name) = k else {
            return Err("class names must be strings".into());
        };
        let cidrs = match v {
            Value::String(s) => vec![s],
            Value::Sequence(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s),
                    other => Err(format!("{name}: {other:?} is not a CIDR string")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("{name}: expected a list of CIDRs")),
        };
        out.push((name, cidrs));
    }
    Ok(out)
}

/// The LPM trie key of a prefix: 16 address bytes (IPv4 mapped into IPv6) and the length.
pub fn trie_key(net: &IpNet) -> (u32, [u8; 16]) {
    match net {
        IpNet::V4(n) => (
            u32::from(n.prefix_len()) + 96,
            n.network().to_ipv6_mapped().octets(),
        ),
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(flags: &[&str]) -> Result<ClassSet, UsageError> {
        let flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        ClassSet::from_flags(&flags, None)
    }

    #[test]
    fn builtins_classify() {
        let s = ClassSet::default();
        for (addr, class) in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("10.1.2.3", "private"),
            ("172.31.0.1", "private"),
            ("172.32.0.1", "internet"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "private"),
            ("fd00::1", "private"),
            ("8.8.8.8", "internet"),
            ("2001:db8::1", "internet"),
            ("::ffff:10.0.0.1", "private"),
        ] {
            assert_eq!(s.name(s.class_of(addr.parse().unwrap())), class, "{addr}");
        }
    }

    #[test]
    fn most_specific_prefix_wins() {
        let s = set(&["zone=10.1.0.0/16", "rack=10.1.2.0/24,10.9.0.0/16"]).unwrap();
        assert_eq!(s.names[4..], ["zone".to_string(), "rack".to_string()]);
        assert_eq!(s.name(s.class_of("10.1.2.9".parse().unwrap())), "rack");
        assert_eq!(s.name(s.class_of("10.1.3.9".parse().unwrap())), "zone");
        assert_eq!(s.name(s.class_of("10.2.0.1".parse().unwrap())), "private");
        // A built-in name adds prefixes to the built-in class.
        let s = set(&["loopback=10.0.0.1"]).unwrap();
        assert_eq!(s.names.len(), 4);
        assert_eq!(s.name(s.class_of("10.0.0.1".parse().unwrap())), "loopback");
    }

    #[test]
    fn bad_values_name_the_fix() {
        for (flag, needle) in [
            ("nocidr", "NAME=CIDR"),
            ("x=10.1.2.3/8", "did you mean 10.0.0.0/8"),
            ("x=banana", "not a CIDR"),
            ("=10.0.0.0/8", "class name"),
            ("internet=1.0.0.0/8", "no prefix matches"),
            ("x=", "at least one CIDR"),
        ] {
            let e = set(&[flag]).unwrap_err().to_string();
            assert!(e.contains(needle), "{flag}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// Hostile `--classes` files: an endless device, a sparse 10 GB file, a directory and
    /// binary data each get one line, after reading at most the cap.
    #[test]
    fn classes_file_is_read_through_a_cap() {
        let dir = std::env::temp_dir().join(format!("pnm-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let huge = dir.join("huge.yaml");
        std::fs::File::create(&huge)
            .unwrap()
            .set_len(10 * 1000 * 1000 * 1000)
            .unwrap();
        let binary = dir.join("binary.yaml");
        std::fs::write(&binary, [0xff, 0xfe, b':', b' ']).unwrap();
        let ok = dir.join("ok.yaml");
        std::fs::write(&ok, "zone: [10.1.0.0/16]\n").unwrap();
        for (path, needle) in [
            (Path::new("/dev/zero"), "larger than 1024 KiB"),
            (huge.as_path(), "larger than 1024 KiB"),
            (dir.as_path(), "--classes"),
            (binary.as_path(), "not UTF-8"),
            (Path::new("/nonexistent/classes.yaml"), "No such file"),
        ] {
            let e = ClassSet::from_flags(&[], Some(path))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{}: {e}", path.display());
            assert!(!e.contains('\n'), "{e}");
        }
        let set = ClassSet::from_flags(&[], Some(&ok)).unwrap();
        assert!(set.names.iter().any(|n| n == "zone"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn file_keeps_order_and_accepts_single_cidrs() {
        let got = parse_file(
            "pod-network: [10.244.0.0/16]\nservice-network: 10.96.0.0/12\nsame-zone:\n  - 10.0.1.0/24\n  - 10.0.2.0/24\n",
        )
        .unwrap();
        assert_eq!(
            got.iter()
                .map(|(n, c)| (n.as_str(), c.len()))
                .collect::<Vec<_>>(),
            [("pod-network", 1), ("service-network", 1), ("same-zone", 2)]
        );
        assert!(parse_file("- 10.0.0.0/8").is_err());
    }

    #[test]
    fn trie_keys_map_ipv4_into_ipv6() {
        let (len, key) = trie_key(&"10.1.0.0/16".parse().unwrap());
        assert_eq!(len, 112);
        assert_eq!(&key[10..14], &[0xff, 0xff, 10, 1]);
        let (len, key) = trie_key(&"fd00::/8".parse().unwrap());
        assert_eq!((len, key[0]), (8, 0xfd));
    }
}
