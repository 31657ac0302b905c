//! The "bare cgroup_skb counter" of `scripts/bench`: the cheapest useful thing a cgroup hook can
//! do, as the yardstick for procnetmon2's in-kernel cost.
//!
//! Usage: `pnm-bare CGROUP_DIR [counter|miss|hit|cgid|storage][+sockops|+health|+class]`
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
//!
//! Two more are the floors of the paths that look no socket up (issue 28): `cgid` is what
//! counting by cgroup cannot avoid (`--all`): the counter keyed by the packet's socket's
//! cgroup, `bpf_skb_cgroup_id` then a per-CPU hash map (created on a cgroup's first packet);
//! `storage` is what counting by attach point cannot avoid (whole-cgroup targets): the attach
//! point's cgroup storage (one `bpf_get_local_storage`) names the slot, and the per-CPU add is
//! keyed by it. Both count bytes and packets, atomically on egress, as an exact count must
//! (see `add_of`).
//!
//! Two suffixes add what TCP health (issue 29) cannot avoid on those paths: `+sockops` a
//! sock_ops program that arms the state callback at each connect (`TCP_CONNECT_CB`, before the
//! SYN: a failed connect's end is seen only so) and disarms it at the change into ESTABLISHED
//! (the kernel runs the program on every TCP callback of a connection, whatever it does);
//! `+health` that, plus a cgroup/sock_create program allocating one socket-storage value per
//! new socket (the node path's sock_ops has no cgroup helper: a socket's cgroup must be stamped
//! where `current` is its creator) and an empty cgroup/sock_release program (where a connect
//! the process gives up is seen). `storage+sockops` and `cgid+health` are the floors of the
//! cgroup and node paths with TCP health.
//!
//! `cgid+class` is the node path's floor with destination classes (`--all --classes`): before
//! the cgroup's counter, the packet's remote IPv4 address read from its header (direct packet
//! access) and its class found in a per-CPU direct-mapped cache of 1,024 slots (one array
//! lookup and a compare: what procnetmon2 pays when the cache hits, as it always does for one
//! remote host), and the counter keyed by (cgroup id, class).
use std::{
    ffi::CString,
    io::{Read, Write},
    os::fd::RawFd,
};

use procnetmon2_integration::bpf::{
    Attr, BPF_BTF_LOAD, BPF_CGROUP_INET_EGRESS, BPF_CGROUP_INET_INGRESS,
    BPF_CGROUP_INET_SOCK_CREATE, BPF_CGROUP_INET_SOCK_RELEASE, BPF_CGROUP_SOCK_OPS,
    BPF_F_NO_PREALLOC, BPF_FUNC_GET_LOCAL_STORAGE, BPF_FUNC_MAP_LOOKUP_ELEM,
    BPF_FUNC_MAP_UPDATE_ELEM, BPF_FUNC_SK_STORAGE_GET, BPF_FUNC_SKB_CGROUP_ID,
    BPF_FUNC_SOCK_OPS_CB_FLAGS_SET, BPF_LINK_CREATE, BPF_MAP_CREATE, BPF_MAP_TYPE_CGROUP_STORAGE,
    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_SK_STORAGE,
    BPF_PROG_TYPE_CGROUP_SKB, BPF_PROG_TYPE_CGROUP_SOCK, BPF_PROG_TYPE_SOCK_OPS, BPF_PSEUDO_MAP_FD,
    bpf, insn, load_program,
};

/// `offsetof(struct __sk_buff, sk)` (include/uapi/linux/bpf.h).
const SKB_SK: i16 = 168;

/// Which floor program to load (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Counter,
    Miss,
    Hit,
    CgroupId,
    Storage,
}

/// The counter: key 0 on the stack, look the per-CPU slot up, add skb->len, return 1 (allow).
/// `miss` then looks the packet's socket up in a socket storage (and finds nothing); `hit`
/// instead finds (or on the first packet creates) the socket's value and uses it as the
/// counter's key. `egress`: the program for the egress hook (see `add_of`).
/// `class_fd`: the class cache of `cgid+class`.
fn program(
    v: Variant,
    map_fd: RawFd,
    sk_fd: RawFd,
    class_fd: Option<RawFd>,
    egress: bool,
) -> Vec<u64> {
    let add = add_of(v, egress);
    let past_add = add.len() as i16;
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
            p.push(insn(0x15, 0, 0, 12, 0)); // if r0 == 0 goto out
            p.extend(counter_of_slot(map_fd, past_add));
            p.extend(add);
        }
        Variant::CgroupId => {
            if let Some(fd) = class_fd {
                p.extend(class_of_remote(fd, egress));
            }
            p.extend(by_cgroup_id(map_fd, past_add, class_fd.is_some()));
            p.extend(add);
        }
        Variant::Storage => {
            p.extend([
                insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, sk_fd), // r1 = cgroup storage
                insn(0x00, 0, 0, 0, 0),                     //
                insn(0xb7, 2, 0, 0, 0),                     // r2 = 0 (flags)
                insn(0x85, 0, 0, 0, BPF_FUNC_GET_LOCAL_STORAGE), // never null
            ]);
            p.extend(counter_of_slot(map_fd, past_add));
            p.extend(add);
        }
    }
    p.extend(ret);
    p
}

/// r0 = the counter keyed by the slot a value at r0 holds (a socket's, or the attach point's
/// storage), jumping `past_add` instructions past the block (to `out`) when there is none.
/// Eight instructions (jump offsets around it count them).
fn counter_of_slot(map_fd: RawFd, past_add: i16) -> [u64; 8] {
    [
        insn(0x61, 1, 0, 0, 0),                        // r1 = *(u32 *)(r0 + 0) (slot)
        insn(0x63, 10, 1, -4, 0),                      // *(u32 *)(r10 - 4) = r1
        insn(0xbf, 2, 10, 0, 0),                       // r2 = r10
        insn(0x07, 2, 0, 0, -4),                       // r2 += -4
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),   // r1 = map
        insn(0x00, 0, 0, 0, 0),                        //
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // call bpf_map_lookup_elem
        insn(0x15, 0, 0, past_add, 0),                 // if r0 == 0 goto out
    ]
}

/// The add into the counter at r0 (r6: the context). The first three variants add the bytes
/// plainly (as they were measured since issue 19). `storage` and `cgid`, the floors of the
/// paths without a socket lookup, do what an exact count of procnetmon2's must: bytes and
/// packets (the value is two u64s), plainly on ingress (bottom halves off: nothing on this
/// CPU interrupts it), atomically on egress (which also runs in process context, where a
/// softirq sending on the same CPU or a preempting task can come between a plain add's load
/// and store).
fn add_of(v: Variant, egress: bool) -> Vec<u64> {
    let exact = matches!(v, Variant::Storage | Variant::CgroupId);
    let len = insn(0x61, 1, 6, 0, 0); // r1 = *(u32 *)(r6 + 0) (skb->len)
    match (exact, egress) {
        (true, true) => vec![
            len,
            insn(0xdb, 0, 1, 0, 0), // lock *(u64 *)(r0 + 0) += r1 (bytes)
            insn(0xb7, 1, 0, 0, 1), // r1 = 1
            insn(0xdb, 0, 1, 8, 0), // lock *(u64 *)(r0 + 8) += r1 (packets)
        ],
        (true, false) => vec![
            len,
            insn(0x79, 2, 0, 0, 0), // r2 = *(u64 *)(r0 + 0)
            insn(0x0f, 2, 1, 0, 0), // r2 += r1
            insn(0x7b, 0, 2, 0, 0), // *(u64 *)(r0 + 0) = r2 (bytes)
            insn(0x79, 2, 0, 8, 0), // r2 = *(u64 *)(r0 + 8)
            insn(0x07, 2, 0, 0, 1), // r2 += 1
            insn(0x7b, 0, 2, 8, 0), // *(u64 *)(r0 + 8) = r2 (packets)
        ],
        (false, _) => vec![
            len,
            insn(0x79, 2, 0, 0, 0), // r2 = *(u64 *)(r0 + 0)
            insn(0x0f, 2, 1, 0, 0), // r2 += r1
            insn(0x7b, 0, 2, 0, 0), // *(u64 *)(r0 + 0) = r2
        ],
    }
}

/// `cgid+class`: r7 = the class of the packet's remote IPv4 address from this CPU's cache
/// (`class_fd`, 1,024 u64 slots of `address << 32 | 0x100 | class`, as procnetmon2's
/// `CLASS_CACHE`); 0 when the header is not in the linear data or the slot holds another
/// address (then the slot is filled, class 0: the next packet hits). r6 holds the context.
fn class_of_remote(class_fd: RawFd, egress: bool) -> Vec<u64> {
    // The remote address: the destination on egress, the source on ingress.
    let addr_off: i16 = if egress { 16 } else { 12 };
    // Fibonacci hashing of the address (as `dest::class_node_cached`), top 10 bits.
    let golden = 0x9e37_79b9_u32 as i32;
    vec![
        insn(0xb7, 7, 0, 0, 0),                        // r7 = 0 (class)
        insn(0x61, 2, 6, 76, 0),                       // r2 = skb->data
        insn(0x61, 3, 6, 80, 0),                       // r3 = skb->data_end
        insn(0xbf, 4, 2, 0, 0),                        // r4 = r2
        insn(0x07, 4, 0, 0, 20),                       // r4 += 20 (an IPv4 header)
        insn(0x2d, 4, 3, 22, 0),                       // if r4 > r3 goto end
        insn(0x61, 8, 2, addr_off, 0),                 // r8 = the remote address
        insn(0xbf, 1, 8, 0, 0),                        // r1 = r8
        insn(0x24, 1, 0, 0, golden),                   // w1 *= 0x9e3779b9
        insn(0x74, 1, 0, 0, 22),                       // w1 >>= 22 (slot)
        insn(0x63, 10, 1, -36, 0),                     // *(u32 *)(r10 - 36) = r1
        insn(0xbf, 2, 10, 0, 0),                       // r2 = r10
        insn(0x07, 2, 0, 0, -36),                      // r2 += -36
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, class_fd), // r1 = class cache
        insn(0x00, 0, 0, 0, 0),                        //
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = this CPU's slot
        insn(0x15, 0, 0, 11, 0),                       // if r0 == 0 goto end
        insn(0x79, 1, 0, 0, 0),                        // r1 = *(u64 *)(r0 + 0)
        insn(0xbf, 2, 8, 0, 0),                        // r2 = r8
        insn(0x67, 2, 0, 0, 32),                       // r2 <<= 32
        insn(0x47, 2, 0, 0, 0x100),                    // r2 |= 0x100 (cached)
        insn(0xbf, 3, 1, 0, 0),                        // r3 = r1
        insn(0x57, 3, 0, 0, -256),                     // r3 &= !0xff
        insn(0x5d, 3, 2, 3, 0),                        // if r3 != r2 goto fill
        insn(0xbf, 7, 1, 0, 0),                        // r7 = r1
        insn(0x57, 7, 0, 0, 0xff),                     // r7 &= 0xff (the class)
        insn(0x05, 0, 0, 1, 0),                        // goto end
        insn(0x7b, 0, 2, 0, 0),                        // fill: *(u64 *)(r0 + 0) = r2
        insn(0xbf, 1, 6, 0, 0),                        // end: r1 = ctx
    ]
}

/// `cgid`: r0 = the per-CPU hash map's value for the packet's socket's cgroup (created on its
/// first packet), then the add; r6 holds the context. Jumps land on the add (right after this
/// block) or past it (`past_add` instructions) on `out`. `with_class`: the key is (cgroup id,
/// the class in r7), 16 bytes.
fn by_cgroup_id(map_fd: RawFd, past_add: i16, with_class: bool) -> Vec<u64> {
    let (key_at, value_at) = if with_class { (-16, -32) } else { (-8, -24) };
    let key = [
        insn(0xbf, 2, 10, 0, 0),                     // r2 = r10
        insn(0x07, 2, 0, 0, i32::from(key_at)),      // r2 += key_at (the key)
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd), // r1 = map
        insn(0x00, 0, 0, 0, 0),                      //
    ];
    let mut p = vec![
        insn(0x85, 0, 0, 0, BPF_FUNC_SKB_CGROUP_ID), // r0 = bpf_skb_cgroup_id(ctx)
        insn(0x7b, 10, 0, key_at, 0),                // *(u64 *)(r10 + key_at) = r0
    ];
    if with_class {
        p.push(insn(0x7b, 10, 7, key_at + 8, 0)); // *(u64 *)(r10 + key_at + 8) = r7
    }
    p.extend(key);
    p.extend([
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = lookup
        insn(0x55, 0, 0, 16, 0),                       // if r0 != 0 goto add (+16)
        insn(0x7a, 10, 0, value_at, 0),                // value: two u64s of 0
        insn(0x7a, 10, 0, value_at + 8, 0),            //
        insn(0xbf, 3, 10, 0, 0),                       // r3 = r10
        insn(0x07, 3, 0, 0, i32::from(value_at)),      // r3 += value_at
        insn(0xb7, 4, 0, 0, 1),                        // r4 = BPF_NOEXIST
    ]);
    p.extend(key);
    p.extend([
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_UPDATE_ELEM), // update (a racing CPU may win)
    ]);
    p.extend(key);
    p.extend([
        insn(0x85, 0, 0, 0, BPF_FUNC_MAP_LOOKUP_ELEM), // r0 = lookup
        insn(0x15, 0, 0, past_add, 0),                 // if r0 == 0 goto out (past the add)
    ]);
    p
}

/// What TCP health adds to a floor (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    SockOps,
    Health,
    Class,
}

/// `+sockops`: arm the state and retransmit callbacks at `TCP_CONNECT_CB`, keep only the
/// retransmit callback once the connection is established; allow everything.
fn sock_ops_program() -> Vec<u64> {
    vec![
        insn(0xbf, 6, 1, 0, 0),  // r6 = r1 (ctx)
        insn(0x61, 2, 1, 0, 0),  // r2 = ctx->op
        insn(0x15, 2, 0, 7, 3),  // if r2 == TCP_CONNECT_CB goto connect
        insn(0x55, 2, 0, 9, 10), // if r2 != STATE_CB goto out
        insn(0x61, 2, 6, 8, 0),  // r2 = ctx->args[1] (the new state)
        insn(0x55, 2, 0, 7, 1),  // if r2 != TCP_ESTABLISHED goto out
        insn(0xbf, 1, 6, 0, 0),  // r1 = ctx
        insn(0xb7, 2, 0, 0, 2),  // r2 = RETRANS_CB_FLAG
        insn(0x85, 0, 0, 0, BPF_FUNC_SOCK_OPS_CB_FLAGS_SET),
        insn(0x05, 0, 0, 3, 0), // goto out
        insn(0xbf, 1, 6, 0, 0), // connect: r1 = ctx
        insn(0xb7, 2, 0, 0, 6), // r2 = STATE_CB_FLAG | RETRANS_CB_FLAG
        insn(0x85, 0, 0, 0, BPF_FUNC_SOCK_OPS_CB_FLAGS_SET),
        insn(0xb7, 0, 0, 0, 1), // out: r0 = 1
        insn(0x95, 0, 0, 0, 0), // exit
    ]
}

/// `+health`'s cgroup/sock_release program: nothing but the run.
fn release_program() -> Vec<u64> {
    vec![
        insn(0xb7, 0, 0, 0, 1), // r0 = 1 (allow)
        insn(0x95, 0, 0, 0, 0), // exit
    ]
}

/// `hit`'s (and `+health`'s) cgroup/sock_create program: create the new socket's storage value
/// (slot 0).
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

/// A socket storage of one u32 per socket (`miss`, `hit`, `+health`).
fn socket_storage(name: &[u8]) -> RawFd {
    let btf = load_btf();
    let mut a = Attr::new();
    a.u32(0, BPF_MAP_TYPE_SK_STORAGE) // map_type
        .u32(4, 4) // key_size (a socket fd from user space)
        .u32(8, 4) // value_size (the slot)
        .u32(16, BPF_F_NO_PREALLOC) // map_flags
        .bytes(28, name) // map_name
        .u32(48, btf as u32) // btf_fd
        .u32(52, 1) // btf_key_type_id
        .u32(56, 1); // btf_value_type_id
    bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| die("socket storage create", e))
}

fn main() {
    let usage = || -> ! {
        eprintln!(
            "usage: pnm-bare CGROUP_DIR [counter|miss|hit|cgid|storage|storage+sockops|cgid+health|cgid+class]"
        );
        std::process::exit(2);
    };
    let Some(dir) = std::env::args().nth(1) else {
        usage()
    };
    let arg = std::env::args().nth(2).unwrap_or_default();
    let (base, extra) = match arg.split_once('+') {
        None => (arg.as_str(), Extra::None),
        Some((b, "sockops")) => (b, Extra::SockOps),
        Some((b, "health")) => (b, Extra::Health),
        Some(("cgid", "class")) => ("cgid", Extra::Class),
        Some(_) => usage(),
    };
    let variant = match base {
        "" | "counter" => Variant::Counter,
        "miss" => Variant::Miss,
        "hit" => Variant::Hit,
        "cgid" => Variant::CgroupId,
        "storage" => Variant::Storage,
        _ => usage(),
    };
    let cdir = CString::new(dir.clone()).expect("cstr");
    // SAFETY: plain open(2) of a NUL-terminated path.
    let cg = unsafe { libc::open(cdir.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    if cg < 0 {
        die(&format!("open {dir}"), std::io::Error::last_os_error());
    }
    // (type, key size, max_entries): the counter's map, keyed as the variant counts.
    let (map_type, key_size, entries) = match variant {
        Variant::CgroupId if extra == Extra::Class => (BPF_MAP_TYPE_PERCPU_HASH, 16, 16_384),
        Variant::CgroupId => (BPF_MAP_TYPE_PERCPU_HASH, 8, 16_384),
        _ => (BPF_MAP_TYPE_PERCPU_ARRAY, 4, 1),
    };
    // Bytes, and for the exact floors packets too (`add_of`).
    let value_size = if matches!(variant, Variant::Storage | Variant::CgroupId) {
        16
    } else {
        8
    };
    let mut a = Attr::new();
    a.u32(0, map_type) // map_type
        .u32(4, key_size) // key_size
        .u32(8, value_size) // value_size
        .u32(12, entries) // max_entries
        .bytes(28, b"bare_bytes"); // map_name
    let map = bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| die("map create", e));
    let sk_map = if variant == Variant::Storage {
        // The attach point's slot (0: the kernel zero-fills it), keyed by the cgroup id.
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_CGROUP_STORAGE) // map_type
            .u32(4, 8) // key_size (the cgroup id)
            .u32(8, 4) // value_size (the slot)
            .u32(12, 0) // max_entries (must be 0)
            .bytes(28, b"bare_cg"); // map_name
        bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| die("cgroup storage create", e))
    } else if !matches!(variant, Variant::Miss | Variant::Hit) {
        -1
    } else {
        socket_storage(b"bare_sk")
    };
    let class_map = (extra == Extra::Class).then(|| {
        let mut a = Attr::new();
        a.u32(0, BPF_MAP_TYPE_PERCPU_ARRAY) // map_type
            .u32(4, 4) // key_size (the slot)
            .u32(8, 8) // value_size (address << 32 | cached | class)
            .u32(12, 1024) // max_entries (procnetmon2's CLASS_CACHE_SLOTS)
            .bytes(28, b"bare_class"); // map_name
        bpf(BPF_MAP_CREATE, &mut a).unwrap_or_else(|e| die("class cache create", e))
    });
    let ingress = program(variant, map, sk_map, class_map, false);
    let egress = program(variant, map, sk_map, class_map, true);
    let create = sock_create_program(if extra == Extra::Health {
        socket_storage(b"bare_stamp")
    } else {
        sk_map
    });
    let (ops, release) = (sock_ops_program(), release_program());
    let mut progs = vec![
        (
            "bare_ingress",
            BPF_PROG_TYPE_CGROUP_SKB,
            BPF_CGROUP_INET_INGRESS,
            &ingress,
        ),
        (
            "bare_egress",
            BPF_PROG_TYPE_CGROUP_SKB,
            BPF_CGROUP_INET_EGRESS,
            &egress,
        ),
    ];
    if variant == Variant::Hit || extra == Extra::Health {
        progs.push((
            "bare_sock_new",
            BPF_PROG_TYPE_CGROUP_SOCK,
            BPF_CGROUP_INET_SOCK_CREATE,
            &create,
        ));
    }
    if extra == Extra::Health {
        progs.push((
            "bare_sock_rel",
            BPF_PROG_TYPE_CGROUP_SOCK,
            BPF_CGROUP_INET_SOCK_RELEASE,
            &release,
        ));
    }
    if matches!(extra, Extra::SockOps | Extra::Health) {
        progs.push((
            "bare_sockops",
            BPF_PROG_TYPE_SOCK_OPS,
            BPF_CGROUP_SOCK_OPS,
            &ops,
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
