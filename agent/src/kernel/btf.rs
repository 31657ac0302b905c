//! Reads member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! aya-ebpf has no CO-RE relocations, so the fork tracepoint reads `task_struct.pid` and
//! `task_struct.tgid` at offsets found here and handed to the kernel program as read-only
//! globals. aya 0.14 parses BTF but keeps its type accessors private; this is the small part
//! of the format we need (include/uapi/linux/btf.h).

use anyhow::{Context as _, bail};

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;

/// Size in bytes of the data that follows a type's 12-byte header, by kind.
fn extra_len(kind: u32, vlen: u32) -> Option<usize> {
    let vlen = vlen as usize;
    Some(match kind {
        1 | 14 | 17 => 4,   // INT, VAR, DECL_TAG
        3 => 12,            // ARRAY
        4 | 5 => 12 * vlen, // STRUCT, UNION
        6 => 8 * vlen,      // ENUM
        13 => 8 * vlen,     // FUNC_PROTO
        15 => 12 * vlen,    // DATASEC
        19 => 12 * vlen,    // ENUM64
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        _ => return None,
    })
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn str_at(strings: &[u8], off: u32) -> Option<&str> {
    let s = strings.get(off as usize..)?;
    let end = s.iter().position(|&c| c == 0)?;
    std::str::from_utf8(&s[..end]).ok()
}

/// Byte offsets of `members` in struct `name`, from a raw BTF blob (little-endian).
pub fn member_offsets(blob: &[u8], name: &str, members: &[&str]) -> anyhow::Result<Vec<u32>> {
    if blob.len() < 24 || u16::from_le_bytes([blob[0], blob[1]]) != BTF_MAGIC {
        bail!("not a little-endian BTF blob");
    }
    let hdr_len = u32_at(blob, 4).context("header")? as usize;
    let (type_off, type_len) = (
        u32_at(blob, 8).context("header")? as usize,
        u32_at(blob, 12).context("header")? as usize,
    );
    let (str_off, str_len) = (
        u32_at(blob, 16).context("header")? as usize,
        u32_at(blob, 20).context("header")? as usize,
    );
    let types = blob
        .get(hdr_len + type_off..hdr_len + type_off + type_len)
        .context("type section out of bounds")?;
    let strings = blob
        .get(hdr_len + str_off..hdr_len + str_off + str_len)
        .context("string section out of bounds")?;
    let mut pos = 0;
    while pos + 12 <= types.len() {
        let name_off = u32_at(types, pos).context("type")?;
        let info = u32_at(types, pos + 4).context("type")?;
        let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31 == 1);
        let extra = extra_len(kind, vlen).with_context(|| format!("unknown BTF kind {kind}"))?;
        if kind == KIND_STRUCT && str_at(strings, name_off) == Some(name) {
            let mut out = Vec::with_capacity(members.len());
            for want in members {
                let found = (0..vlen as usize).find_map(|i| {
                    let m = pos + 12 + i * 12;
                    let mname = str_at(strings, u32_at(types, m)?)?;
                    let bits = u32_at(types, m + 8)?;
                    let bit_off = if kind_flag { bits & 0x00ff_ffff } else { bits };
                    (mname == *want && bit_off % 8 == 0).then_some(bit_off / 8)
                });
                out.push(found.with_context(|| format!("no member {want} in struct {name}"))?);
            }
            return Ok(out);
        }
        pos += 12 + extra;
    }
    bail!("no struct {name} in BTF")
}

/// Offsets of `task_struct.pid` and `task_struct.tgid` in the running kernel.
pub fn task_pid_tgid_offsets() -> anyhow::Result<(u32, u32)> {
    let blob = std::fs::read("/sys/kernel/btf/vmlinux")
        .context("read /sys/kernel/btf/vmlinux (kernel BTF is required)")?;
    let v = member_offsets(&blob, "task_struct", &["pid", "tgid"])?;
    Ok((v[0], v[1]))
}

/// Whether the kernel hands a cgroup program its cgroup storage through the program's run
/// context (`struct bpf_cg_run_ctx`, upstream since 5.15), which nested runs save and restore.
/// Before that, `bpf_get_local_storage` read a per-CPU pointer that a program run from a
/// softirq interrupting a process-context cgroup program could find set by that program
/// (5.10.y's stable fix keys the slots by `current`, which the softirq shares): the cgroup
/// path (ebpf/src/whole.rs) is used only where this is true. A kernel without readable BTF
/// says no.
pub fn cgroup_storage_in_run_ctx() -> bool {
    let found = std::fs::read("/sys/kernel/btf/vmlinux")
        .map_err(anyhow::Error::from)
        .and_then(|blob| member_offsets(&blob, "bpf_cg_run_ctx", &[]));
    if let Err(e) = &found {
        log::debug!("cgroup storage in the run context: {e:#}");
    }
    found.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with: INT "int" (id 1), STRUCT "task_struct" { pid: int @ 32 bits, tgid: int @ 64 bits }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0task_struct\0pid\0tgid\0".to_vec();
        let mut types = Vec::new();
        let push = |t: &mut Vec<u8>, v: u32| t.extend_from_slice(&v.to_le_bytes());
        // INT: name "int"(1), info kind 1, size 4, extra u32.
        push(&mut types, 1);
        push(&mut types, 1 << 24);
        push(&mut types, 4);
        push(&mut types, 32);
        // STRUCT task_struct (5), kind 4, vlen 2, size 12.
        push(&mut types, 5);
        push(&mut types, (4 << 24) | 2);
        push(&mut types, 12);
        for (name, off) in [(17, 32), (21, 64)] {
            push(&mut types, name);
            push(&mut types, 1);
            push(&mut types, off);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.push(1); // version
        b.push(0); // flags
        for v in [
            24_u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn finds_member_offsets() {
        assert_eq!(
            member_offsets(&blob(), "task_struct", &["pid", "tgid"]).unwrap(),
            vec![4, 8]
        );
        assert!(member_offsets(&blob(), "task_struct", &["nope"]).is_err());
        assert!(member_offsets(&blob(), "mm_struct", &["pid"]).is_err());
        assert!(member_offsets(b"junk", "x", &[]).is_err());
        let mut truncated = blob();
        truncated.truncate(40);
        assert!(member_offsets(&truncated, "task_struct", &["pid"]).is_err());
    }

    #[test]
    fn finds_a_struct_by_name() {
        assert!(member_offsets(&blob(), "task_struct", &[]).is_ok());
        assert!(member_offsets(&blob(), "bpf_cg_run_ctx", &[]).is_err());
    }

    #[test]
    fn running_kernel_has_task_offsets() {
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            let (pid, tgid) = task_pid_tgid_offsets().unwrap();
            assert_eq!(tgid, pid + 4, "tgid follows pid in task_struct");
        }
    }
}
