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

/// The DNS reader (`crate::dns`) against hostile packets: arbitrary bytes, and valid answers
/// (built by simple-dns, an independent implementation) mutated into compression loops,
/// pointers out of range, counts larger than the packet, labels over 63 bytes, names over
/// 255, and wrapped in IPv4 or IPv6 with extension headers. No input may panic, and none may
/// make the reader allocate (it works in place: `test_alloc` counts this thread's
/// allocations). 100,000 cases in all, in `cargo test`.
mod dns_fuzz {
    use proptest::prelude::*;

    use crate::{
        dns::{Message, TYPE_A, udp, wire},
        test_alloc::allocated_by,
    };

    /// Everything the agent does with a packet the kernel handed up, walked to the end.
    /// Returns (bytes allocated, addresses found).
    fn read_all(packet: &[u8]) -> (usize, usize) {
        allocated_by(|| {
            let mut n = 0;
            for payload in [udp(packet).map(|d| d.payload), Some(packet)]
                .into_iter()
                .flatten()
            {
                if let Some(m) = Message::parse(payload) {
                    let _ = (m.qname.as_str(), m.id, m.qtype, m.rcode);
                    n += m.addresses().count();
                }
            }
            n
        })
    }

    /// A valid answer for `name` with `addrs` (A records), a CNAME hop when `cname`, built
    /// by simple-dns with name compression.
    fn valid_answer(name: &str, addrs: &[[u8; 4]], cname: Option<&str>, ttl: u32) -> Vec<u8> {
        use simple_dns::{CLASS, Name, Packet, Question, ResourceRecord, rdata::RData};
        let mut p = Packet::new_reply(0x1234);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            simple_dns::TYPE::A.into(),
            CLASS::IN.into(),
            false,
        ));
        let owner = match cname {
            Some(c) => {
                p.answers.push(ResourceRecord::new(
                    Name::new_unchecked(name),
                    CLASS::IN,
                    ttl,
                    RData::CNAME(simple_dns::rdata::CNAME(Name::new_unchecked(c))),
                ));
                c
            }
            None => name,
        };
        for a in addrs {
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked(owner),
                CLASS::IN,
                ttl,
                RData::A(std::net::Ipv4Addr::from(*a).into()),
            ));
        }
        p.build_bytes_vec_compressed().expect("build")
    }

    /// One way to break a valid message.
    #[derive(Debug, Clone)]
    enum Mutation {
        /// Overwrite a byte.
        Byte(usize, u8),
        /// A compression pointer at `at` to `to` (loops, forward, out of range).
        Pointer(usize, u16),
        /// The answer (or another) count set to `n`, larger than the packet holds.
        Count(usize, u16),
        /// A label length byte over 63 (or an extended label type) at `at`.
        LongLabel(usize, u8),
        /// The packet cut to `n` bytes.
        Truncate(usize),
        /// `n` more labels of 63 bytes spliced after the header (a name over 255).
        Grow(usize),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Byte(a, b)),
            (any::<usize>(), any::<u16>()).prop_map(|(a, t)| Mutation::Pointer(a, t)),
            (0usize..4, any::<u16>()).prop_map(|(i, n)| Mutation::Count(i, n)),
            (any::<usize>(), 64u8..=255).prop_map(|(a, l)| Mutation::LongLabel(a, l)),
            any::<usize>().prop_map(Mutation::Truncate),
            (1usize..6).prop_map(Mutation::Grow),
        ]
    }

    fn apply(mut m: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
        for x in muts {
            let len = m.len().max(1);
            match *x {
                Mutation::Byte(at, b) => {
                    if let Some(v) = m.get_mut(at % len) {
                        *v = b;
                    }
                }
                Mutation::Pointer(at, to) => {
                    let at = at % len;
                    let p = (0xc000 | (to & 0x3fff)).to_be_bytes();
                    for (i, b) in p.iter().enumerate() {
                        if let Some(v) = m.get_mut(at + i) {
                            *v = *b;
                        }
                    }
                }
                Mutation::Count(i, n) => {
                    let at = 4 + 2 * i;
                    if m.len() >= at + 2 {
                        m[at..at + 2].copy_from_slice(&n.to_be_bytes());
                    }
                }
                Mutation::LongLabel(at, l) => {
                    if let Some(v) = m.get_mut(at % len) {
                        *v = l;
                    }
                }
                Mutation::Truncate(n) => m.truncate(n % len),
                Mutation::Grow(n) => {
                    let at = m.len().min(12);
                    let mut label = vec![63u8];
                    label.extend_from_slice(&[b'x'; 63]);
                    for _ in 0..n {
                        m.splice(at..at, label.iter().copied());
                    }
                }
            }
        }
        m
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,20}(\\.[a-z0-9-]{1,20}){0,4}"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40_000, ..ProptestConfig::default() })]

        /// Arbitrary bytes, as a packet and as a DNS message.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let (alloc, _) = read_all(&bytes);
            prop_assert_eq!(alloc, 0);
        }

        /// Valid answers, mutated, bare and in IPv4.
        #[test]
        fn mutated_answers(
            qname in name(),
            cname in proptest::option::of(name()),
            addrs in proptest::collection::vec(any::<[u8; 4]>(), 0..6),
            muts in proptest::collection::vec(mutation(), 1..5),
        ) {
            let m = apply(valid_answer(&qname, &addrs, cname.as_deref(), 60), &muts);
            let (alloc, _) = read_all(&m);
            prop_assert_eq!(alloc, 0);
            let p = wire::ipv4([10, 0, 0, 53], [10, 0, 0, 1], 53, 40000, &m);
            let (alloc, _) = read_all(&apply(p, &muts[..1]));
            prop_assert_eq!(alloc, 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 18_000, ..ProptestConfig::default() })]

        /// Answers in IPv6 behind random extension headers (hop-by-hop, routing, fragment,
        /// destination options, AH, or anything), then mutated.
        #[test]
        fn ipv6_with_extension_headers(
            qname in name(),
            addrs in proptest::collection::vec(any::<[u8; 4]>(), 0..4),
            ext in proptest::collection::vec((prop_oneof![Just(0u8), Just(43), Just(44), Just(60), Just(51), any::<u8>()], 0u8..4), 0..6),
            muts in proptest::collection::vec(mutation(), 0..3),
        ) {
            let m = valid_answer(&qname, &addrs, None, 60);
            let ext: Vec<(u8, Vec<u8>)> = ext
                .into_iter()
                .map(|(nh, words)| {
                    let mut h = vec![0u8; 8 * (usize::from(words) + 1)];
                    h[1] = words;
                    (nh, h)
                })
                .collect();
            let p = apply(wire::ipv6([0xfd; 16], [0xfe; 16], 53, 40000, &ext, &m), &muts);
            let (alloc, _) = read_all(&p);
            prop_assert_eq!(alloc, 0);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

        /// Well-formed answers read back to what they encode: the asked name and every
        /// address, through a CNAME hop too.
        #[test]
        fn valid_answers_read_back(
            qname in name(),
            cname in proptest::option::of(name()),
            addrs in proptest::collection::vec(any::<[u8; 4]>(), 0..6),
            ttl in any::<u32>(),
        ) {
            prop_assume!(cname.as_deref() != Some(qname.as_str()));
            let m = valid_answer(&qname, &addrs, cname.as_deref(), ttl);
            let msg = Message::parse(&m).expect("valid");
            prop_assert_eq!(msg.qname.as_str(), qname.as_str());
            prop_assert_eq!(msg.qtype, TYPE_A);
            let got: Vec<(std::net::IpAddr, u32)> = msg.addresses().collect();
            let want: Vec<(std::net::IpAddr, u32)> =
                addrs.iter().map(|a| (std::net::IpAddr::from(*a), ttl)).collect();
            prop_assert_eq!(got, want);
        }
    }
}
