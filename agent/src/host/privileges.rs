//! Checks, before anything is loaded, that this process may do what a run needs, and says
//! exactly what is missing.

/// Capabilities a run uses, with the reason, as (bit, name, why).
const NEEDED: [(u32, &str, &str); 4] = [
    (39, "CAP_BPF", "load programs and create maps"),
    (12, "CAP_NET_ADMIN", "attach cgroup_skb programs"),
    (
        21,
        "CAP_SYS_ADMIN",
        "attach cgroup socket hooks and read sockets of other users",
    ),
    (
        19,
        "CAP_SYS_PTRACE",
        "copy a target's sockets with pidfd_getfd and read its /proc/PID/fd",
    ),
];

/// Parses the `CapEff:` line of /proc/self/status.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Names of the needed capabilities missing from `cap_eff`.
pub fn missing(cap_eff: u64) -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(bit, ..)| cap_eff & (1 << bit) == 0)
        .map(|(_, name, _)| *name)
        .collect()
}

/// Fails with one line naming what is missing (root, or the capabilities).
pub fn check() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = parse_cap_eff(&status).unwrap_or(0);
    let missing = missing(cap_eff);
    if missing.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = NEEDED
        .iter()
        .filter(|(_, n, _)| missing.contains(n))
        .map(|(_, n, w)| format!("{n} to {w}"))
        .collect();
    anyhow::bail!(
        "insufficient privileges: run as root (sudo procnetmon2 …) or grant {}",
        why.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_names_missing_caps() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(root), Some(0x1ff_ffff_ffff));
        assert!(missing(0x1ff_ffff_ffff).is_empty());
        assert_eq!(
            missing(0),
            vec![
                "CAP_BPF",
                "CAP_NET_ADMIN",
                "CAP_SYS_ADMIN",
                "CAP_SYS_PTRACE"
            ]
        );
        assert_eq!(missing(1 << 39 | 1 << 12 | 1 << 21), vec!["CAP_SYS_PTRACE"]);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff(""), None);
    }
}
