//! What the running kernel offers, found by trying it: a tiny program handed to the verifier,
//! a socket option asked for. Version numbers lie (distributions backport, and helpers reach
//! program types kernel by kernel), and bpftool's helper probe reports helpers as available
//! where loading a program that calls them fails. docs/kernels.md has the measured table.

use std::os::fd::{FromRawFd as _, OwnedFd};

/// `BPF_PROG_LOAD` command and `BPF_PROG_TYPE_CGROUP_SKB`.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
/// `BPF_FUNC_get_netns_cookie`.
const FUNC_GET_NETNS_COOKIE: i32 = 122;

/// One `struct bpf_insn`: opcode, dst/src registers (4 bits each), offset, immediate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// The head of `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`; the kernel
/// takes a shorter attribute and treats the rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads `insns` as a cgroup_skb program and frees it at once: whether the verifier took it.
fn cgroup_skb_loads(insns: &[Insn]) -> bool {
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_SKB,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: a valid BPF_PROG_LOAD attribute; `insns` and `license` outlive the call.
    match unsafe { sys_bpf(BPF_PROG_LOAD, &attr) } {
        Err(e) => {
            log::debug!("probe program refused: {e}");
            false
        }
        Ok(fd) => {
            // SAFETY: the kernel just returned this descriptor to us; dropping it frees the
            // program.
            drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            true
        }
    }
}

/// `bpf(cmd, attr)`, for the few calls aya does not expose (a probe's load here, the cgroup
/// storage's update in `whole.rs`). Neither nix nor rustix wraps bpf(2).
///
/// # Safety
/// `attr` must be the `#[repr(C)]` attribute of `cmd`, every pointer in it valid for the call.
pub(super) unsafe fn sys_bpf<A>(cmd: libc::c_long, attr: &A) -> std::io::Result<libc::c_long> {
    // SAFETY: the caller's contract; the size passed is the attribute's own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_ref(attr),
            std::mem::size_of::<A>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Environment variable that, set to `0`, makes `-i` use the stamped-namespace path of older
/// kernels even where cgroup_skb has the helper: so that path is tested on the newest kernels
/// too (docs/kernels.md).
pub const NETNS_HELPER_ENV: &str = "PROCNETMON2_NETNS_HELPER";

/// Whether cgroup_skb programs may call `bpf_get_netns_cookie` (upstream c221d3744ad3, ~6.15).
/// Without it, `-i` filters on the namespace stamped on each socket instead.
pub fn netns_cookie_in_cgroup_skb() -> bool {
    if std::env::var_os(NETNS_HELPER_ENV).is_some_and(|v| v == "0") {
        log::info!("{NETNS_HELPER_ENV}=0: -i filters on the namespace stamped on each socket");
        return false;
    }
    let prog = [
        // call bpf_get_netns_cookie(r1 = ctx)
        Insn {
            code: 0x85,
            regs: 0,
            off: 0,
            imm: FUNC_GET_NETNS_COOKIE,
        },
        // r0 = 1 (allow)
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: 1,
        },
        // exit
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ];
    cgroup_skb_loads(&prog)
}

/// Whether sockets report their namespace's cookie (`SO_NETNS_COOKIE`, Linux 5.14). `-i`
/// needs it: it names the namespace of each interface and of sockets that predate the run.
pub fn so_netns_cookie() -> bool {
    let Ok(sock) = std::net::UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    netns_cookie_of(&sock).is_ok()
}

pub use crate::host::netns::netns_cookie_of;

pub use crate::host::privileges::kernel_release;

/// `-i` on this kernel: a one-line refusal naming the kernel it needs, or fine.
pub fn check_iface_filter() -> Result<(), crate::error::UsageError> {
    if so_netns_cookie() {
        return Ok(());
    }
    Err(crate::error::UsageError::new(format!(
        "-i needs Linux >= 5.14 (SO_NETNS_COOKIE names each interface's network namespace); this kernel is {}: run without -i",
        kernel_release()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cookie of a socket made by a thread in a new network namespace, or None where
    /// this process may not make one (not root): then that part is reported as skipped.
    fn cookie_in_a_new_namespace() -> Option<std::io::Result<u64>> {
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp socket");
            Some(netns_cookie_of(&sock))
        })
        .join()
        .expect("thread")
    }

    #[test]
    fn netns_cookie_names_the_namespace() {
        // Two sockets of this namespace share one non-zero cookie; a socket made in another
        // namespace has another. Without SO_NETNS_COOKIE (< 5.14) the read fails with
        // ENOPROTOOPT, and the probe says no.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let here = match netns_cookie_of(&udp) {
            Ok(cookie) => cookie,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT), "{e}");
                assert!(!so_netns_cookie());
                return;
            }
        };
        assert!(so_netns_cookie());
        assert_ne!(here, 0);
        assert_eq!(netns_cookie_of(&tcp).unwrap(), here);
        match cookie_in_a_new_namespace() {
            Some(there) => assert_ne!(there.unwrap(), here),
            None => {
                use std::io::Write as _;
                // Past the test harness's capture: scripts/test counts the test as skipped.
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "pnm-skip: procnetmon2::kernel::features::tests::netns_cookie_names_the_namespace: another namespace needs CAP_SYS_ADMIN"
                );
            }
        }
    }

    #[test]
    fn release_is_the_kernels() {
        // What uname(2) says, not merely something (the fallback "unknown" is not empty).
        let uts = nix::sys::utsname::uname().unwrap();
        assert_eq!(kernel_release(), uts.release().to_str().unwrap());
    }
}
