//! Checks, before anything is loaded, that this process may do what a run needs, and says
//! exactly what is missing.
//!
//! Each need is met by any of a few capabilities, as the kernel decides it: since Linux 5.8
//! `bpf()` accepts `CAP_BPF` and tracing programs `CAP_PERFMON`, and `CAP_SYS_ADMIN` still
//! stands in for both (docker 20.10, for one, can grant `CAP_SYS_ADMIN` but not `CAP_BPF`).
//! Before 5.8 those two capabilities do not exist and only `CAP_SYS_ADMIN` does.

/// Capability bits used here.
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn cap_name(bit: u32) -> &'static str {
    match bit {
        CAP_NET_ADMIN => "CAP_NET_ADMIN",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "an unknown capability",
    }
}

/// One thing a run does, and the capabilities any one of which lets it (on kernels that
/// know them: `since` is the kernel that introduced the first alternative).
struct Need {
    why: &'static str,
    any_of: &'static [u32],
    /// The first alternative exists from this kernel on; before it only the others count.
    since: (u32, u32),
}

const NEEDS: [Need; 4] = [
    Need {
        why: "load programs and create maps",
        any_of: &[CAP_BPF, CAP_SYS_ADMIN],
        since: (5, 8),
    },
    Need {
        why: "load the fork tracepoint and its kernel reads",
        any_of: &[CAP_PERFMON, CAP_SYS_ADMIN],
        since: (5, 8),
    },
    Need {
        why: "load and attach cgroup_skb and socket programs",
        any_of: &[CAP_NET_ADMIN],
        since: (0, 0),
    },
    Need {
        why: "copy a target's sockets with pidfd_getfd and read its /proc/PID/fd",
        any_of: &[CAP_SYS_PTRACE],
        since: (0, 0),
    },
];

/// The running kernel's release (`uname -r`, e.g. `6.18.0-1-amd64`): the one place it is read.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// `(major, minor)` of a kernel release such as `6.18.0-1-amd64`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The alternatives of `need` this kernel knows.
fn alternatives(need: &Need, kernel: (u32, u32)) -> &'static [u32] {
    if kernel < need.since {
        &need.any_of[1..]
    } else {
        need.any_of
    }
}

/// For each need not met by `cap_eff` on `kernel`: what it is for and the capabilities that
/// would meet it ("CAP_BPF or CAP_SYS_ADMIN").
pub fn missing(cap_eff: u64, kernel: (u32, u32)) -> Vec<String> {
    NEEDS
        .iter()
        .filter_map(|n| {
            let alts = alternatives(n, kernel);
            if alts.iter().any(|bit| cap_eff & (1 << bit) != 0) {
                return None;
            }
            let names: Vec<&str> = alts.iter().map(|b| cap_name(*b)).collect();
            Some(format!("{} to {}", names.join(" or "), n.why))
        })
        .collect()
}

/// Fails with one line naming what is missing (root, or the capabilities, with each choice).
pub fn check() -> anyhow::Result<()> {
    let cap_eff = procfs::process::Process::myself()
        .and_then(|p| p.status())
        .map_or(0, |s| s.capeff);
    // An unknown kernel counts as a new one: the kernel itself has the last word anyway.
    let kernel = parse_kernel_release(&kernel_release()).unwrap_or((u32::MAX, 0));
    let missing = missing(cap_eff, kernel);
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "insufficient privileges: run as root (sudo procnetmon2 …) or grant {} (CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, e.g. where a runtime cannot grant those)",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: (u32, u32) = (6, 18);

    #[test]
    fn parses_the_release() {
        assert_eq!(parse_kernel_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_kernel_release("x"), None);
    }

    #[test]
    fn names_missing_caps_with_their_alternatives() {
        assert!(missing(0x1ff_ffff_ffff, NEW).is_empty());
        let none = missing(0, NEW);
        assert_eq!(none.len(), 4);
        assert!(
            none[0].starts_with("CAP_BPF or CAP_SYS_ADMIN to "),
            "{none:?}"
        );
        assert!(
            none[1].starts_with("CAP_PERFMON or CAP_SYS_ADMIN to "),
            "{none:?}"
        );
        assert!(none[2].starts_with("CAP_NET_ADMIN to "));
        assert!(none[3].starts_with("CAP_SYS_PTRACE to "));
        // BPF + PERFMON without SYS_ADMIN: enough.
        let bit = |b: u32| 1u64 << b;
        let split = bit(CAP_BPF) | bit(CAP_PERFMON) | bit(CAP_NET_ADMIN) | bit(CAP_SYS_PTRACE);
        assert!(missing(split, NEW).is_empty());
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        // docker 20.10: CAP_SYS_ADMIN and everything up to bit 37, no CAP_BPF (39) or
        // CAP_PERFMON (38).
        let docker = (1u64 << 38) - 1;
        assert!(missing(docker, NEW).is_empty());
        assert!(missing(docker, (5, 4)).is_empty());
        // Before 5.8 CAP_BPF and CAP_PERFMON mean nothing.
        let split = 1u64 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_NET_ADMIN | 1 << CAP_SYS_PTRACE;
        let old = missing(split, (5, 4));
        assert_eq!(old.len(), 2, "{old:?}");
        assert!(
            old[0].starts_with("CAP_SYS_ADMIN to load programs"),
            "{old:?}"
        );
    }
}
