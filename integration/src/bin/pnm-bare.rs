//! The "bare cgroup_skb counter" of `scripts/bench`: the cheapest useful thing a cgroup hook can
//! do, as the yardstick for procnetmon2's in-kernel cost.
//!
//! Usage: `pnm-bare CGROUP_DIR [counter|miss|hit]`
//!
//! Creates a one-entry `BPF_MAP_TYPE_PERCPU_ARRAY` (u64 value), loads two hand-assembled
//! `BPF_PROG_TYPE_CGROUP_SKB` programs (ingress and egress) that add `skb->len` to it (plain
//! add: the value is per CPU) and allow every packet, attaches them to the directory with
//! `BPF_LINK_CREATE`, prints "attached", and stays until stdin closes or a signal ends it. The
//! links close with the process, which detaches the programs. Raw `bpf(2)` calls: no loader
//! library, no object file, nothing but the counter itself.
//!
//! The other two variants decompose the floor of procnetmon2's design, which must find each
//! packet's socket state (one `bpf_sk_storage_get` per packet): `miss` is the counter plus one
//! *failed* lookup in a socket storage no socket has (what a non-target's packet cannot avoid),
//! `hit` is one *successful* lookup (created on the socket's first packet, found on every later
//! one) and the per-CPU add keyed by the slot it holds (what a target's packet cannot avoid);
//! `hit` also attaches a cgroup/sock_create program that gives every new socket its value
//! there (what each socket of a `-p` target cannot avoid: only sock_create sees its creator),
//! so in a churn of short connections it is the design's floor per connection.
use std::{
    ffi::CString,
    io::{Read, Write},
    os::fd::RawFd,
};

use procnetmon2_integration::bpf::{
    Attr, BPF_BTF_LOAD, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS,
    BPF_CGROUP_INET_SOCK_CREATE, BPF_F_NO_PREALLOC, BPF_FUNC_MAP_LOOKUP_ELEM,
    BPF_FUNC_SK_STORAGE_GET, BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_SK_STORAGE, BPF_PROG_TYPE_CGROUP_SKB, BPF_PROG_TYPE_CGROUP_SOCK,
    BPF_PSEUDO_MAP_FD, bpf, insn, load_program,
};

/// `offsetof(struct __sk_buff, sk)` (include/uapi/linux/bpf.h).
const SKB_SK: i16 = 168;

/// Which floor program to load (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Counter,
    Miss,
    Hit,
}

/// The counter: key 0 on the stack, look the per-CPU slot up, add skb->len, return 1 (allow).
/// `miss` then looks the packet's socket up in a socket storage (and finds nothing); `hit`
/// instead finds (or on the first packet creates) the socket's value and uses it as the
/// counter's key.
fn program(v: Variant, map_fd: RawFd, sk_fd: RawFd) -> Vec<u64> {
    let add = [
        insn(0x61, 1, 6, 0, 0), // r1 = *(u32 *)(r6 + 0) (skb->len)
        insn(0x79, 2, 0, 0, 0), // r2 = *(u64 *)(r0 + 0)
        insn(0x0f, 2, 1, 0, 0), // r2 += r1
        insn(0x7b, 0, 2, 0, 0), // *(u64 *)(r0 + 0) = r2
    ];
    let ret = [
        insn(0xb7, 0, 0, 0, 1), // out: r0 = 1
        insn(0x95, 0, 0, 0, 0), // exit
    ];
    let mut p = vec![insn(0xbf, 6, 1, 0, 0)]; // r6 = r1 (ctx)
    match v {
        Variant::Counter | Variant::Miss => {
            p.extend([
                insn(0x62, 10, 0, -4, 0),                      // *(u32 *)(r10 - 4) = 0
                insn(0xbf, 2, 10, 0, 0),                       // r2 = r10
                insn(0x07, 2, 0, 0, -4),                       // r2 += -4
                insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),   // r1 = map (ld_imm64, low half)
                insn(0x00, 0, 0, 0, 0),                        //          (high half)
                insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // call bpf_map_lookup_elem
                insn(0x15, 0, 0, 4, 0),                        // if r0 == 0 goto +4 (past the add)
            ]);
            p.extend(add);
            if v == Variant::Miss {
                p.extend([
                    insn(0x79, 2, 6, SKB_SK, 0),                  // r2 = skb->sk
                    insn(0x15, 2, 0, 5, 0),                       // if r2 == 0 goto out
                    insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, sk_fd),   // r1 = socket storage
                    insn(0x00, 0, 0, 0, 0),                       //
                    insn(0xb7, 3, 0, 0, 0),                       // r3 = NULL (no value)
                    insn(0xb7, 4, 0, 0, 0),                       // r4 = 0 (no create)
                    insn(0x85, 0, 0, 0, BPF_FUNC_SK_STORAGE_GET), // call bpf_sk_storage_get
                ]);
            }
        }
        Variant::Hit => {
            p.extend([
                insn(0x79, 2, 6, SKB_SK, 0), // r2 = skb->sk
                insn(0x15, 2, 0, 20, 0),     // if r2 == 0 goto out
            ]);
            p.extend(storage_get_or_create(sk_fd)); // r0 = the socket's value (slot 0)
            p.extend([
                insn(0x15, 0, 0, 12, 0),                       // if r0 == 0 goto out
                insn(0x61, 1, 0, 0, 0),                        // r1 = *(u32 *)(r0 + 0) (slot)
                insn(0x63, 10, 1, -4, 0),                      // *(u32 *)(r10 - 4) = r1
                insn(0xbf, 2, 10, 0, 0),                       // r2 = r10
                insn(0x07, 2, 0, 0, -4),                       // r2 += -4
                insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),   // r1 = map
                insn(0x00, 0, 0, 0, 0),                        //
                insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // call bpf_map_lookup_elem
                insn(0x15, 0, 0, 4, 0),                        // if r0 == 0 goto out
            ]);
            p.extend(add);
        }
    }
    p.extend(ret);
    p
}

/// `hit`'s cgroup/sock_create program: create the new socket's storage value (slot 0).
fn sock_create_program(sk_fd: RawFd) -> Vec<u64> {
    let mut p = vec![insn(0xbf, 2, 1, 0, 0)]; // r2 = r1 (ctx: the socket)
    p.extend(storage_get_or_create(sk_fd));
    p.extend([
        insn(0xb7, 0, 0, 0, 1), // r0 = 1 (allow)
        insn(0x95, 0, 0, 0, 0), // exit
    ]);
    p
}

/// `bpf_sk_storage_get(storage, r2, &0, F_CREATE)` with the socket already in r2: the found
/// or new value (slot 0) in r0, or NULL. Seven instructions (jump offsets around it count
/// them).
fn storage_get_or_create(sk_fd: RawFd) -> [u64; 7] {
    [
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, sk_fd), // r1 = socket storage
        insn(0x00, 0, 0, 0, 0),                     //
        insn(0x62, 10, 0, -8, 0),                   // *(u32 *)(r10 - 8) = 0 (slot 0)
        insn(0xbf, 3, 10, 0, 0),                    // r3 = r10
        insn(0x07, 3, 0, 0, -8),                    // r3 += -8 (initial value)
        insn(0xb7, 4, 0, 0, 1),                     // r4 = F_CREATE
        insn(0x85, 0, 0, 0, BPF_FUNC_SK_STORAGE_GET), // call bpf_sk_storage_get
    ]
}

/// A minimal BTF blob (one type: `int`, 4 bytes, signed), loaded for the socket storage: the
/// kernel refuses a socket-storage map without BTF key and value types.
fn load_btf() -> RawFd {
    let mut types = Vec::new();
    for w in [1_u32, 1 << 24, 4, (1 << 24) | 32] {
        // name_off 1 ("int"), info BTF_KIND_INT, size 4, encoding SIGNED | 32 bits
        types.extend_from_slice(&w.to_le_bytes());
    }
    let strings = b"\0int\0";
    let mut blob = Vec::new();
    blob.extend_from_slice(&0xeb9f_u16.to_le_bytes()); // magic
    blob.extend_from_slice(&[1, 0]); // version, flags
    for w in [
        24_u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        // hdr_len, type_off, type_len, str_off, str_len
        blob.extend_from_slice(&w.to_le_bytes());
    }
    blob.extend_from_slice(&types);
    blob.extend_from_slice(strings);
    let mut a = Attr::new();
    a.u64(0, blob.as_ptr() as u64).u32(16, blob.len() as u32); // btf, btf_size
    bpf(BPF_BTF_LOAD, &mut a).unwrap_or_else(|e| die("btf load", e))
}

fn die(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("pnm-bare: {what}: {e}");
    std::process::exit(1);
}

fn load(prog_type: u32, name: &str, attach_type: u32, insns: &[u64]) -> RawFd {
    load_program(prog_type, name, attach_type, insns, false).unwrap_or_else(|_| {
        load_program(prog_type, name, attach_type, insns, true)
            .unwrap_or_else(|e| die(&format!("loading {name}"), e))
    })
}

fn main() {
    let usage = || -> ! {
        eprintln!("usage: pnm-bare CGROUP_DIR [counter|miss|hit]");
        std::process::exit(2);
    };
    let Some(dir) = std::env::args().nth(1) else {
        usage()
    };
    let variant = match std::env::args().nth(2).as_deref() {
        None | Some("counter") => Variant::Counter,
        Some("miss") => Variant::Miss,
        Some("hit") => Variant::Hit,
        Some(_) => usage(),
    };
    let cdir = CString::new(dir.clone()).expect("cstr");
    // SAFETY: plain open(2) of a NUL-terminated path.
    let cg = unsafe { libc::open(cdir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if cg < 0 {
        die(&format!("open {dir}"), std::io::Error::last_os_error());
    }
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_PERCPU_ARRAY) // map_type
        .u32(4, 4) // key_size
        .u32(8, 8) // value_size
        .u32(12, 1) // max_entries
        .bytes(28, b"bare_bytes"); // map_name
    let map = bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| die("map create", e));
    let sk_map = if variant == Variant::Counter {
        -1
    } else {
        let btf = load_btf();
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_SK_STORAGE) // map_type
            .u32(4, 4) // key_size (a socket fd from user space)
            .u32(8, 4) // value_size (the slot)
            .u32(16, BPF_F_NO_PREALLOC) // map_flags
            .bytes(28, b"bare_sk") // map_name
            .u32(48, btf as u32) // btf_fd
            .u32(52, 1) // btf_key_type_id
            .u32(56, 1); // btf_value_type_id
        bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| die("socket storage create", e))
    };
    let insns = program(variant, map, sk_map);
    let create = sock_create_program(sk_map);
    let mut progs = vec![
        (
            "bare_ingress",
            BPF_PROG_TYPE_CGROUP_SKB,
            BPF_CGROUP_INET_INGRESS,
            &insns,
        ),
        (
            "bare_egress",
            BPF_PROG_TYPE_CGROUP_SKB,
            BPF_CGROUP_INET_EGRESS,
            &insns,
        ),
    ];
    if variant == Variant::Hit {
        progs.push((
            "bare_sock_new",
            BPF_PROG_TYPE_CGROUP_SOCK,
            BPF_CGROUP_INET_SOCK_CREATE,
            &create,
        ));
    }
    let mut links = Vec::new();
    for (name, prog_type, at, insns) in progs {
        let prog = load(prog_type, name, at, insns);
        let mut a = Attr::new();
        a.u32(0, prog as u32).u32(4, cg as u32).u32(8, at); // prog_fd, target_fd, attach_type
        links.push(bpf(BPF_LINK_CREATE, &mut a).unwrap_or_else(|e| die("link create", e)));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "attached").and_then(|()| out.flush()).ok();
    drop(out);
    let mut sink = [0_u8; 256];
    let mut stdin = std::io::stdin().lock();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    // Exiting closes the link fds: the programs detach.
    drop(links);
}
