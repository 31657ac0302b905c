//! Property tests for every parser of outside text: mountinfo, /proc/PID/cgroup,
//! /proc/PID/status lines (Tgid, NSpid, CapEff), PID lists, durations, interface lists,
//! cgroup paths (container identity), and kernel BTF. Arbitrary input must never panic, and
//! well-formed input must parse to what it encodes.

use proptest::prelude::*;

use crate::{
    config,
    host::{cgroup, identity, procs},
    kernel::btf,
};

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mountinfo_never_panics(text in ".*") {
        let table = text.lines().filter_map(|l| procfs::process::MountInfo::from_line(l).ok());
        let _ = cgroup::first_cgroup2(table);
    }

    #[test]
    fn mountinfo_finds_a_cgroup2_line(id in 1u32..9999, dir in "/[a-z]{1,8}(/[a-z]{1,8}){0,3}", noise in "[a-z ]{0,20}") {
        let lines = [
            format!("{id} 1 0:5 / /x rw - tmpfs tmpfs {noise}"),
            format!("{id} 2 0:6 / {dir} rw,relatime - cgroup2 cgroup2 rw"),
        ];
        let table = lines.iter().filter_map(|l| procfs::process::MountInfo::from_line(l).ok());
        let m = cgroup::first_cgroup2(table).expect("found");
        prop_assert_eq!(m.mount_point, std::path::PathBuf::from(dir));
        prop_assert_eq!(m.root, "/");
    }

    #[test]
    fn dir_of_never_leaves_the_mount(path in "(/[a-z.]{1,4}){0,6}") {
        let m = cgroup::Cgroup2Mount { mount_point: "/cg".into(), root: "/".into() };
        if let Ok(d) = m.dir_of(&path) {
            prop_assert!(d.starts_with("/cg"));
            prop_assert!(!d.components().any(|c| matches!(c, std::path::Component::ParentDir)));
        }
    }

    #[test]
    fn pid_lists(text in ".*", pids in proptest::collection::vec(1u32..4_194_304, 1..20)) {
        let _ = config::parse_pid_list(&text, 4_194_304);
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let parsed = config::parse_pid_list(&list.join(","), 4_194_304).expect("valid list");
        let mut dedup = Vec::new();
        for p in pids {
            if !dedup.contains(&p) {
                dedup.push(p);
            }
        }
        prop_assert_eq!(parsed, dedup);
    }

    #[test]
    fn durations(text in ".*", secs in 1u64..1_000_000) {
        if let Ok(d) = config::parse_duration("-t", &text) {
            prop_assert!(!d.is_zero());
        }
        prop_assert_eq!(config::parse_duration("-t", &format!("{secs}s")).expect("valid"), std::time::Duration::from_secs(secs));
    }

    #[test]
    fn interface_lists(text in ".*") {
        if let Ok(names) = config::parse_interfaces(&text) {
            for n in names {
                prop_assert!(!n.is_empty() && n.len() <= config::IFNAME_MAX && !n.contains('/'));
            }
        }
    }

    #[test]
    fn runtime_never_panics(uptime in any::<u64>(), start in any::<u64>(), ticks in any::<u64>()) {
        let up = std::time::Duration::from_nanos(uptime);
        prop_assert!(procs::runtime_of(up, start, ticks) <= up);
    }

    #[test]
    fn cgroup_paths_never_panic(text in ".*", id in "[0-9a-f]{64}") {
        let _ = identity::parse_cgroup_path(&text);
        let _ = identity::workload_name(&text);
        let p = format!("/kubepods/besteffort/pod11111111-2222-3333-4444-555555555555/{id}");
        let c = identity::parse_cgroup_path(&p).expect("a container");
        prop_assert_eq!(c.id, id);
    }

    #[test]
    fn btf_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = btf::member_offsets(&blob, "task_struct", &["pid"]);
        let mut with_magic = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        with_magic.extend_from_slice(&blob);
        let _ = btf::member_offsets(&with_magic, "task_struct", &["pid"]);
    }
}
