//! Raw `bpf(2)` for hand-assembled programs: the yardstick counters of `pnm-bare` and the
//! harness's kernel probes (`probe.rs`). No loader library and no object file: a test that
//! asks the kernel a question must not depend on the code under test to ask it.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    path::Path,
};

pub const BPF_MAP_CREATE: libc::c_long = 0;
pub const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
pub const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_BTF_LOAD: libc::c_long = 18;
pub const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_MAP_TYPE_CGROUP_STORAGE: u32 = 19;
pub const BPF_MAP_TYPE_SK_STORAGE: u32 = 24;
pub const BPF_F_NO_PREALLOC: u32 = 1;
pub const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
pub const BPF_PROG_TYPE_CGROUP_SOCK: u32 = 9;
pub const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
pub const BPF_CGROUP_INET_INGRESS: u32 = 0;
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub const BPF_CGROUP_INET_SOCK_CREATE: u32 = 2;
pub const BPF_CGROUP_SOCK_OPS: u32 = 3;
pub const BPF_CGROUP_INET_SOCK_RELEASE: u32 = 34;
pub const BPF_PSEUDO_MAP_FD: u8 = 1;
pub const BPF_FUNC_MAP_LOOKUP_ELEM: i32 = 1;
pub const BPF_FUNC_MAP_UPDATE_ELEM: i32 = 2;
pub const BPF_FUNC_SOCK_OPS_CB_FLAGS_SET: i32 = 59;
pub const BPF_FUNC_SKB_CGROUP_ID: i32 = 79;
pub const BPF_FUNC_GET_LOCAL_STORAGE: i32 = 81;
pub const BPF_FUNC_SK_STORAGE_GET: i32 = 107;

/// `union bpf_attr`, zero-filled; each command writes its own fields at their offsets.
#[repr(C, align(8))]
pub struct Attr([u8; 160]);

impl Default for Attr {
    fn default() -> Self {
        Self([0; 160])
    }
}

impl Attr {
    /// A zero-filled attribute.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes a u32 at byte offset `off`.
    pub fn u32(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// Writes a u64 at byte offset `off`.
    pub fn u64(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }

    /// Copies `b` to byte offset `off`.
    pub fn bytes(&mut self, off: usize, b: &[u8]) -> &mut Self {
        self.0[off..off + b.len()].copy_from_slice(b);
        self
    }
}

/// One `bpf(2)` call: the new file descriptor (or 0) the kernel returned.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<RawFd> {
    // SAFETY: `attr` is a valid, writable bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.0.as_mut_ptr(),
            std::mem::size_of::<Attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as RawFd)
    }
}

/// A `bpf(2)` call that returns a new file descriptor, owned (closed on drop).
pub fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<OwnedFd> {
    // SAFETY: a successful call returned a new descriptor that nothing else owns.
    bpf(cmd, attr).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `struct bpf_insn`: opcode, dst/src registers (4 bits each), offset, immediate.
pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let b0 = u64::from(code);
    let b1 = u64::from((src << 4) | (dst & 0xf)); // little endian: dst in the low nibble
    let b23 = u64::from(off as u16);
    let b47 = u64::from(imm as u32);
    b0 | (b1 << 8) | (b23 << 16) | (b47 << 32)
}

/// Loads one program; with `verbose`, asks for the verifier's log and prints it on failure.
pub fn load_program(
    prog_type: u32,
    name: &str,
    attach_type: u32,
    insns: &[u64],
    verbose: bool,
) -> std::io::Result<RawFd> {
    let license = CString::new("GPL").expect("cstr");
    let mut log = vec![0_u8; 65536];
    let mut pname = [0_u8; 16];
    pname[..name.len()].copy_from_slice(name.as_bytes());
    let mut a = Attr::new();
    a.u32(0, prog_type) // prog_type
        .u32(4, insns.len() as u32) // insn_cnt
        .u64(8, insns.as_ptr() as u64) // insns
        .u64(16, license.as_ptr() as u64) // license
        .bytes(48, &pname) // prog_name
        .u32(68, attach_type); // expected_attach_type
    if verbose {
        a.u32(24, 1) // log_level
            .u32(28, log.len() as u32) // log_size
            .u64(32, log.as_mut_ptr() as u64); // log_buf
    }
    let r = bpf(BPF_PROG_LOAD, &mut a);
    if verbose && r.is_err() {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        eprintln!("{}", String::from_utf8_lossy(&log[..end]));
    }
    r
}

/// A one-entry `BPF_MAP_TYPE_ARRAY` of one u64.
pub fn array_u64(name: &[u8]) -> std::io::Result<OwnedFd> {
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_ARRAY) // map_type
        .u32(4, 4) // key_size
        .u32(8, 8) // value_size
        .u32(12, 1) // max_entries
        .bytes(28, name); // map_name
    bpf_fd(BPF_MAP_CREATE, &mut a)
}

/// The u64 at key 0 of a map made by [`array_u64`].
pub fn read_u64(map: &OwnedFd) -> std::io::Result<u64> {
    let key = 0_u32;
    let mut value = 0_u64;
    let mut a = Attr::new();
    a.u32(0, map.as_raw_fd() as u32) // map_fd
        .u64(8, (&raw const key) as u64) // key
        .u64(16, (&raw mut value) as u64); // value
    bpf(BPF_MAP_LOOKUP_ELEM, &mut a)?;
    Ok(value)
}

/// Attaches `prog` to the cgroup directory `dir` with a link (`BPF_LINK_CREATE`): the program
/// stays attached while the returned descriptor is open.
pub fn attach_to_cgroup(prog: RawFd, dir: &Path, attach_type: u32) -> std::io::Result<OwnedFd> {
    let cg = std::fs::File::open(dir)?;
    let mut a = Attr::new();
    a.u32(0, prog as u32) // prog_fd
        .u32(4, cg.as_raw_fd() as u32) // target_fd
        .u32(8, attach_type); // attach_type
    bpf_fd(BPF_LINK_CREATE, &mut a)
}
