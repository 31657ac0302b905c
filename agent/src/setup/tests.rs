//! Set-up against `FakeKernel` and a fake host: which maps a plan fills, the order programs
//! attach in, and what counting starts from (stamps, baselines, the command's zero).

use std::path::PathBuf;

use super::{attach, fill_maps, start};
use crate::{
    host::procs::ProcIdentity,
    kernel::{IfaceKey, Slot, fake::SharedKernel},
    model::{Counters, Traffic},
    plan::{
        ProcessLabels,
        tests::{MNT, plan},
    },
    session::{
        Stamped, Subject,
        fake_host::{FakeHost, SharedHost},
        step::Command,
    },
};

fn dir(rel: &str) -> PathBuf {
    PathBuf::from(format!("{MNT}{rel}"))
}

fn tcp(bytes_in: u64) -> Traffic {
    Traffic {
        tcp: Counters {
            bytes_in,
            packets_in: 1,
            ..Counters::default()
        },
        ..Traffic::default()
    }
}

#[test]
fn maps_hold_every_target_and_class() {
    let p = plan(&["-p", "10,11", "--cgroup", "/x", "--class", "lab=10.0.0.0/8"]).unwrap();
    let k = SharedKernel::default();
    fill_maps(&mut *k.0.borrow_mut(), &p).unwrap();
    let k = k.0.borrow();
    // Each process with the child it had at the start (pid + 1000), in its own slot.
    let mut pids: Vec<(u32, Slot)> = k.target_pids.iter().map(|(p, s)| (*p, *s)).collect();
    pids.sort_unstable();
    assert_eq!(
        pids,
        [
            (10, Slot(0)),
            (11, Slot(1)),
            (1010, Slot(0)),
            (1011, Slot(1))
        ]
    );
    // The cgroup by id (the plan's fake survey: 100 per byte of "/x" + its first byte).
    assert_eq!(
        k.cgroup_targets.get(&(200 + u64::from(b'/'))),
        Some(&Slot(2))
    );
    assert!(
        k.class_cidrs
            .iter()
            .any(|(n, _)| n.to_string() == "10.0.0.0/8"),
        "{:?}",
        k.class_cidrs
    );
    assert!(k.ifaces.is_empty() && k.skipped.is_empty());
}

#[test]
fn node_wide_interface_filter_holds_every_namespace() {
    let p = plan(&["--all", "-i", "eth0"]).unwrap();
    let k = SharedKernel::default();
    fill_maps(&mut *k.0.borrow_mut(), &p).unwrap();
    let k = k.0.borrow();
    let key = |netns_cookie, ifindex| IfaceKey {
        netns_cookie,
        ifindex,
    };
    // The plan's fake namespaces: cookie 1000 (lo, eth0, veth1), cookie 2000 (lo, eth0).
    let mut counted: Vec<_> = k.ifaces.iter().copied().collect();
    counted.sort_by_key(|k| (k.netns_cookie, k.ifindex));
    assert_eq!(counted, [key(1000, 2), key(2000, 2)]);
    assert_eq!(k.skipped.len(), 3);
}

#[test]
fn sock_hooks_everywhere_before_any_counter() {
    let root = PathBuf::from(MNT);
    let spawn = dir("/agent/procnetmon2-spawn-77");
    /// (arguments, netns helper, attachments in order, the namespace stamp after how many)
    type Row<'a> = (&'a [&'a str], bool, Vec<(&'a str, PathBuf)>, Option<usize>);
    let table: &[Row<'_>] = &[
        (
            &["-p", "10,11", "--cgroup", "/x"],
            false,
            vec![
                ("sock", dir("/p10")),
                ("sock", dir("/p11")),
                ("sock", dir("/x")),
                ("skb", dir("/p10")),
                ("skb", dir("/p11")),
                ("skb", dir("/x")),
            ],
            None,
        ),
        // --all: its socket hooks (TCP health; with -i and without the helper, new sockets'
        // namespaces, stamped before existing ones), then its counters.
        (
            &["--all", "-i", "eth0"],
            false,
            vec![("node-hooks", root.clone()), ("node", root.clone())],
            Some(1),
        ),
        (
            &["--all", "-i", "eth0"],
            true,
            vec![("node-hooks", root.clone()), ("node", root.clone())],
            None,
        ),
        // The cgroup path at the targets' own cgroups, the node's at the root.
        (
            &["--all", "--cgroup", "/x", "--", "curl"],
            false,
            vec![
                ("whole", dir("/x")),
                ("whole", spawn.clone()),
                ("node-hooks", root.clone()),
                ("node", root.clone()),
            ],
            None,
        ),
        // -p with --all: the socket path at the process's cgroup, the node's at the root.
        (
            &["--all", "-p", "10"],
            false,
            vec![
                ("sock", dir("/p10")),
                ("node-hooks", root.clone()),
                ("node", root.clone()),
                ("skb", dir("/p10")),
            ],
            None,
        ),
    ];
    for (args, helper, want, stamp_after) in table {
        let p = plan(args).unwrap();
        let k = SharedKernel::default();
        k.0.borrow_mut().netns_helper = *helper;
        let mut stamped_between = None;
        let mut programs = k.clone();
        attach(&mut programs, &p, |_| {
            stamped_between = Some(k.0.borrow().attached.len());
        })
        .unwrap();
        let attached = k.0.borrow().attached.clone();
        let want: Vec<(&str, PathBuf)> = want.clone();
        assert_eq!(attached, want, "{args:?}");
        assert_eq!(stamped_between, *stamp_after, "{args:?}");
    }
}

/// A whole cgroup on the cgroup path is attached with its scan flag up (it predates the run;
/// the spawned command's cgroup does not), and the flag goes down once its sockets are
/// stamped.
#[test]
fn whole_cgroups_scan_between_attach_and_start() {
    let p = plan(&["--cgroup", "/x", "--", "curl"]).unwrap();
    let k = SharedKernel::default();
    let mut programs = k.clone();
    attach(&mut programs, &p, |_| {}).unwrap();
    let whole: Vec<(Slot, bool)> =
        k.0.borrow()
            .whole
            .iter()
            .map(|(s, (_, scanning))| (*s, *scanning))
            .collect();
    assert_eq!(whole, [(Slot(0), true), (Slot(1), false)]);
    let host = SharedHost::default();
    let _ = start(&p, Box::new(k.clone()), Box::new(host), None, None).unwrap();
    assert!(k.0.borrow().whole.values().all(|(_, scanning)| !scanning));
}

struct NoCommand;

impl Command for NoCommand {
    fn wait(&mut self) -> anyhow::Result<u8> {
        Ok(0)
    }
    fn try_wait(&mut self) -> anyhow::Result<Option<u8>> {
        Ok(Some(0))
    }
    fn end(&mut self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    fn suspend(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

#[test]
fn counting_starts_from_stamps_and_baselines() {
    let p = plan(&["-p", "10", "--cgroup", "/x"]).unwrap();
    let k = SharedKernel::default();
    k.0.borrow_mut().totals.insert(Slot(0), tcp(500));
    k.0.borrow_mut().totals.insert(Slot(1), tcp(900));
    // TCP health counted between attach and start is not the run's either.
    k.0.borrow_mut().rtt_sample(Slot(0), 100);
    let mut h = FakeHost::default();
    // PID 10 holds one TCP and two UDP connections, its child one UDP; the cgroup's two
    // processes one TCP each.
    h.sockets.insert(
        10,
        Stamped {
            connections: (1, 2),
            old: Vec::new(),
        },
    );
    h.sockets.insert(
        1010,
        Stamped {
            connections: (0, 1),
            old: Vec::new(),
        },
    );
    for pid in [20, 21] {
        h.sockets.insert(
            pid,
            Stamped {
                connections: (1, 0),
                old: Vec::new(),
            },
        );
    }
    h.procs_in.insert(dir("/x"), vec![20, 21]);
    let host = SharedHost(std::rc::Rc::new(h.into()));
    let runner = start(&p, Box::new(k.clone()), Box::new(host.clone()), None, None).unwrap();
    let stamped = host.0.borrow().stamped.borrow().clone();
    assert_eq!(
        stamped,
        [(10, Slot(0)), (1010, Slot(0)), (20, Slot(1)), (21, Slot(1))]
    );
    let t = runner.session.targets();
    assert_eq!(t.len(), 2);
    // Traffic before the run is not the run's: each starts from the kernel's count now.
    assert_eq!(t[0].last, tcp(500));
    assert_eq!(t[1].last, tcp(900));
    assert_eq!(t[0].tcp_health().rtt.count(), 0);
    assert_eq!(t[0].health.0.rtt.count(), 1);
    // RTT sampling has started: epoch 1.
    assert_eq!(k.0.borrow().rtt_epoch, 1);
    assert_eq!(t[0].preexisting, (1, 3));
    assert_eq!(t[1].preexisting, (2, 0));
    assert!(matches!(&t[1].subject, Subject::Cgroup { dir: d, .. } if *d == dir("/x")));
}

#[test]
fn a_spawned_command_counts_from_zero() {
    let p = plan(&["--cgroup", "/x", "--", "curl", "-s"]).unwrap();
    let k = SharedKernel::default();
    // Its slot carries no traffic before it starts; whatever the map says is its own.
    k.0.borrow_mut().totals.insert(Slot(1), tcp(300));
    k.0.borrow_mut().rtt_sample(Slot(1), 100);
    let subject = Subject::Process {
        ident: ProcIdentity {
            pid: 4242,
            comm: "curl".into(),
            start_ticks: 9,
        },
        labels: ProcessLabels::default(),
    };
    let command = Some((Box::new(NoCommand) as Box<dyn Command>, subject.clone()));
    let runner = start(
        &p,
        Box::new(k),
        Box::new(SharedHost::default()),
        None,
        command,
    )
    .unwrap();
    let t = runner.session.targets();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].subject, subject);
    assert_eq!(t[1].last, Traffic::default());
    // Its health baseline is zero too: the sample in its slot will be its own.
    assert_eq!(t[1].health.0.rtt.count(), 0);
}
