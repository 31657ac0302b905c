//! The loop's rules, driven by scripted events against `FakeKernel`, a fake host and a fake
//! command: no root, no clock, no process.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use super::{Command, Runner};
use crate::{
    kernel::{Knobs, Moved, Slot, Untracked, fake::SharedKernel},
    model::{Counters, Gap, Traffic},
    plan::{ProcessLabels, Schedule},
    session::{
        ReportKind, Session, Started, Subject,
        decide::{Decision, Event},
        fake_host::{SharedHost, ident},
    },
};

const SEC: Duration = Duration::from_secs(1);
const I: Option<ReportKind> = Some(ReportKind::Interval);
const F: Option<ReportKind> = Some(ReportKind::Final);
const N: Option<ReportKind> = None;
/// What the fixed clock of the loop under test reads (CLOCK_MONOTONIC ns).
const CLOCK_NS: u64 = 9_000_000;

fn udp(bytes_out: u64) -> Traffic {
    Traffic {
        udp: Counters {
            bytes_out,
            packets_out: bytes_out / 100,
            ..Counters::default()
        },
        ..Traffic::default()
    }
}

/// What a fake command was asked, in order.
type Calls = Rc<RefCell<Vec<&'static str>>>;

/// A command that has exited with `exited` (or runs on), and sends `sends_on_end` bytes
/// from slot 0 while it is being stopped.
struct FakeCommand {
    calls: Calls,
    exited: Option<u8>,
    kernel: SharedKernel,
    sends_on_end: u64,
}

impl Command for FakeCommand {
    fn wait(&mut self) -> anyhow::Result<u8> {
        self.calls.borrow_mut().push("wait");
        Ok(self.exited.unwrap_or(143))
    }
    fn try_wait(&mut self) -> anyhow::Result<Option<u8>> {
        self.calls.borrow_mut().push("try_wait");
        Ok(self.exited)
    }
    fn suspend(&mut self) -> anyhow::Result<()> {
        self.calls.borrow_mut().push("suspend");
        Ok(())
    }
    fn end(&mut self) -> Duration {
        self.calls.borrow_mut().push("end");
        let mut k = self.kernel.0.borrow_mut();
        let t = k.totals.entry(Slot(0)).or_default();
        *t = udp(t.udp.bytes_out + self.sends_on_end);
        Duration::from_millis(300)
    }
}

/// A loop over one process target (PID 10, slot 0) started at `t0`, attached at `/cg/a`.
struct Rig {
    t0: Instant,
    kernel: SharedKernel,
    host: SharedHost,
    calls: Calls,
    runner: Runner,
}

impl Rig {
    fn new(schedule: Schedule, command: Option<(Option<u8>, u64)>) -> Self {
        let t0 = Instant::now();
        let kernel = SharedKernel::default();
        let host = SharedHost::default();
        host.0
            .borrow_mut()
            .cgroup_of
            .insert(10, PathBuf::from("/cg/a"));
        let calls = Calls::default();
        let session = Session::start(
            t0,
            vec![Started {
                slot: Slot(0),
                subject: Subject::Process {
                    ident: ident(10),
                    labels: ProcessLabels::default(),
                },
                baseline: Traffic::default(),
                health: Default::default(),
                preexisting: (0, 0),
                ifaces: Default::default(),
            }],
            None,
            Vec::new(),
            false,
            Vec::new(),
            Untracked::default(),
        )
        .with_interval(schedule.interval);
        let command = command.map(|(exited, sends_on_end)| {
            Box::new(FakeCommand {
                calls: calls.clone(),
                exited,
                kernel: kernel.clone(),
                sends_on_end,
            }) as Box<dyn Command>
        });
        let runner = Runner::new(
            session,
            Box::new(kernel.clone()),
            Box::new(host.clone()),
            command,
            (schedule, Knobs::default(), vec![PathBuf::from("/cg/a")]),
        )
        .with_clock(|| CLOCK_NS);
        Self {
            t0,
            kernel,
            host,
            calls,
            runner,
        }
    }

    fn send(&self, bytes_out: u64) {
        self.kernel
            .0
            .borrow_mut()
            .totals
            .insert(Slot(0), udp(bytes_out));
    }

    fn step(&mut self, event: Event, at: Duration) -> Decision {
        self.runner.step(event, self.t0 + at).expect("step")
    }

    fn bytes_out(&mut self, kind: ReportKind) -> u64 {
        let r = self
            .runner
            .snapshot(kind, false, (self.t0, 0))
            .expect("snapshot");
        r.processes[0].row.counters.bytes_out
    }
}

fn schedule(window: bool, every_interval: bool) -> Schedule {
    Schedule {
        interval: SEC,
        window: window.then_some(10 * SEC),
        every_interval,
        daemon: false,
        whole_run: false,
    }
}

/// Spawn mode: when the command is reaped or stopped, and whose status the run's is.
#[test]
fn the_spawned_commands_end() {
    /// (event, -t window, the command exited already with, the target gone)
    ///   → (report, stop, the run's status, what the command was asked)
    type Row = (
        Event,
        bool,
        Option<u8>,
        bool,
        Option<ReportKind>,
        bool,
        u8,
        &'static [&'static str],
    );
    #[rustfmt::skip]
    let table: &[Row] = &[
        // It exited: reaped, its status is the run's, what it left in its cgroup is ended.
        (Event::CommandExited, false, Some(3), false, I, true, 3, &["wait", "end"]),
        (Event::CommandExited, true, Some(0), false, F, true, 0, &["wait", "end"]),
        // The window ends first: it is stopped, and its status (of being stopped) is not
        // the run's.
        (Event::WindowEnd, true, None, false, F, true, 0, &["try_wait", "end", "wait"]),
        (Event::Signal, false, None, false, N, true, 0, &["try_wait", "end", "wait"]),
        (Event::Quit, true, None, false, F, true, 0, &["try_wait", "end", "wait"]),
        (Event::OutputClosed, false, None, false, N, true, 0, &["try_wait", "end", "wait"]),
        // Every target gone on a tick while its pidfd was also ready: the tick won, its
        // status is still the run's.
        (Event::Tick, false, Some(7), true, I, true, 7, &["try_wait", "end"]),
        // A tick while it runs: nothing is asked of it.
        (Event::Tick, false, None, false, I, false, 0, &[]),
        // Stopped (Ctrl-Z) while it has the terminal: the run stops with it and goes on,
        // no report, nothing reaped or ended.
        (Event::CommandStopped, false, None, false, N, false, 0, &["suspend"]),
        (Event::CommandStopped, true, None, false, N, false, 0, &["suspend"]),
    ];
    for &(event, window, exited, gone, report, stop, status, calls) in table {
        let mut rig = Rig::new(schedule(window, !window), Some((exited, 0)));
        if gone {
            rig.host.0.borrow_mut().dead.insert(10);
        }
        let d = rig.step(event, SEC);
        let what = format!("{event:?} window={window} exited={exited:?} gone={gone}");
        assert_eq!(d, Decision { report, stop }, "{what}");
        assert_eq!(rig.runner.status(), status, "{what}");
        assert_eq!(*rig.calls.borrow(), calls, "{what}");
        // Once the run stopped, the command is done with: a later event asks nothing more.
        if stop {
            rig.step(Event::Signal, 2 * SEC);
            assert_eq!(*rig.calls.borrow(), calls, "{what}: asked twice");
        }
    }
}

/// A command that has the terminal: its stop (Ctrl-Z) counts nothing and reports nothing;
/// its exit gives the report of the whole run, with its status.
#[test]
fn a_command_with_the_terminal_stops_then_ends() {
    let mut s = schedule(false, false);
    s.whole_run = true;
    let mut rig = Rig::new(s, Some((Some(4), 0)));
    rig.send(1_000);
    let d = rig.step(Event::CommandStopped, SEC);
    assert_eq!(
        d,
        Decision {
            report: N,
            stop: false
        }
    );
    assert_eq!(rig.runner.session.targets()[0].last.udp.bytes_out, 0);
    let d = rig.step(Event::CommandExited, 2 * SEC);
    assert_eq!(
        d,
        Decision {
            report: F,
            stop: true
        }
    );
    assert_eq!(rig.bytes_out(ReportKind::Final), 1_000);
    assert_eq!(rig.runner.status(), 4);
    assert_eq!(*rig.calls.borrow(), ["suspend", "wait", "end"]);
}

/// What the command sends while it is being stopped (SIGTERM, its grace) is in the last
/// report: the loop reads the counters again after stopping it.
#[test]
fn bytes_sent_while_the_command_stops_count() {
    let mut rig = Rig::new(schedule(true, false), Some((None, 4_000)));
    rig.send(1_000);
    assert_eq!(rig.step(Event::Tick, SEC).report, N);
    let d = rig.step(Event::WindowEnd, 10 * SEC);
    assert_eq!(
        d,
        Decision {
            report: F,
            stop: true
        }
    );
    assert_eq!(rig.bytes_out(ReportKind::Final), 5_000);
}

/// Only the interval's own tick is whole: a tick for any other event is partial, so a
/// cut-off interval shorter than half of one sets no peak, while its bytes still count.
#[test]
fn partial_ticks_count_bytes_but_set_no_peak() {
    for (event, at, peak) in [
        (Event::Tick, 100, true),
        (Event::Signal, 100, false),
        (Event::Signal, 600, true),
        (Event::WindowEnd, 100, false),
        (Event::Quit, 100, false),
    ] {
        let mut rig = Rig::new(schedule(true, false), None);
        rig.send(10_000);
        rig.step(event, Duration::from_millis(at));
        let t = &rig.runner.session.targets()[0];
        assert_eq!(t.last.udp.bytes_out, 10_000, "{event:?} at {at} ms");
        assert_eq!(t.series.peak_out > 0.0, peak, "{event:?} at {at} ms");
    }
}

/// A process target that moves to a cgroup the programs do not cover: attached there and
/// its sockets stamped at the next tick; an ancestor of an attach point (double counting)
/// or a cgroup that refuses the programs is warned about once and never tried again.
#[test]
fn following_a_moved_target() {
    /// (its cgroup now, refused by the kernel) → (attachments, stamps) after two ticks
    type Row = (
        &'static str,
        bool,
        &'static [(&'static str, &'static str)],
        usize,
    );
    #[rustfmt::skip]
    let table: &[Row] = &[
        ("/cg/a", false, &[], 0),
        ("/cg/a/procnetmon2-10", false, &[], 0),
        ("/cg/b", false, &[("sock", "/cg/b"), ("skb", "/cg/b")], 1),
        ("/cg", false, &[], 0),
        ("/cg/c", true, &[], 0),
    ];
    for &(dir, refused, attached, stamps) in table {
        let mut rig = Rig::new(schedule(false, true), None);
        rig.host
            .0
            .borrow_mut()
            .cgroup_of
            .insert(10, PathBuf::from(dir));
        if refused {
            rig.kernel
                .0
                .borrow_mut()
                .refuse_attach
                .insert(PathBuf::from(dir));
        }
        // A stop event follows nothing; ticks do, once.
        rig.step(Event::Signal, Duration::from_millis(10));
        assert!(rig.kernel.0.borrow().attached.is_empty(), "{dir}");
        rig.step(Event::Tick, SEC);
        rig.step(Event::Tick, 2 * SEC);
        let got: Vec<(&str, PathBuf)> = rig.kernel.0.borrow().attached.clone();
        let want: Vec<(&str, PathBuf)> = attached
            .iter()
            .map(|&(k, d)| (k, Path::new(d).to_path_buf()))
            .collect();
        assert_eq!(got, want, "{dir}");
        let stamped = rig.host.0.borrow().stamped.borrow().clone();
        assert_eq!(stamped, vec![(10, Slot(0)); stamps], "{dir}");
    }
}

/// An ended target is not followed, wherever /proc says its PID now is.
#[test]
fn an_ended_target_is_not_followed() {
    let mut rig = Rig::new(schedule(false, true), None);
    rig.host.0.borrow_mut().dead.insert(10);
    rig.step(Event::Tick, SEC);
    rig.host
        .0
        .borrow_mut()
        .cgroup_of
        .insert(10, PathBuf::from("/cg/b"));
    rig.step(Event::Tick, 2 * SEC);
    assert!(rig.kernel.0.borrow().attached.is_empty());
}

/// A move the kernel reports is followed in that same step, without a tick: attached and
/// stamped at once, and the time from the move to the end of the stamping is a gap in the
/// report; a cgroup that cannot be covered leaves an ongoing gap. A child of the target
/// (in the kernel's target map, not a named target) is followed the same way.
#[test]
fn a_reported_move_is_followed_at_once_with_its_gap() {
    /// (process, its cgroup now, refused) → (attachments, stamps, gap (from, to, ongoing))
    type Row = (
        u32,
        &'static str,
        bool,
        &'static [(&'static str, &'static str)],
        &'static [(u32, Slot)],
        Option<(u64, u64, bool)>,
    );
    const MOVE_NS: u64 = 4_000_000;
    #[rustfmt::skip]
    let table: &[Row] = &[
        // Still covered: nothing to do, nothing lost.
        (10, "/cg/a/sub", false, &[], &[], None),
        // A cgroup not covered: attached and stamped now; the gap is move → now.
        (10, "/cg/b", false, &[("sock", "/cg/b"), ("skb", "/cg/b")], &[(10, Slot(0))], Some((MOVE_NS, CLOCK_NS, false))),
        // A forked child of the target moved: followed as well, charged to the target.
        (11, "/cg/c", false, &[("sock", "/cg/c"), ("skb", "/cg/c")], &[(11, Slot(0))], Some((MOVE_NS, CLOCK_NS, false))),
        // An ancestor of the attach point, or a cgroup that refuses the programs: ongoing.
        (10, "/cg", false, &[], &[], Some((MOVE_NS, CLOCK_NS, true))),
        (10, "/cg/d", true, &[], &[], Some((MOVE_NS, CLOCK_NS, true))),
    ];
    for &(pid, dir, refused, attached, stamped, gap) in table {
        let mut rig = Rig::new(schedule(false, true), None);
        rig.send(1_000);
        rig.host
            .0
            .borrow_mut()
            .cgroup_of
            .insert(pid, PathBuf::from(dir));
        if refused {
            rig.kernel
                .0
                .borrow_mut()
                .refuse_attach
                .insert(PathBuf::from(dir));
        }
        rig.kernel.0.borrow_mut().moves.push(Moved {
            tgid: pid,
            slot: Slot(0),
            ns: MOVE_NS,
        });
        let d = rig.step(Event::Moved, Duration::from_millis(5));
        assert_eq!(
            d,
            Decision {
                report: N,
                stop: false
            },
            "{dir}"
        );
        // No tick: the interval's reading is untouched.
        assert_eq!(rig.runner.session.ticks(), 0, "{dir}");
        let got: Vec<(&str, PathBuf)> = rig.kernel.0.borrow().attached.clone();
        let want: Vec<(&str, PathBuf)> = attached
            .iter()
            .map(|&(k, d)| (k, Path::new(d).to_path_buf()))
            .collect();
        assert_eq!(got, want, "{dir}");
        assert_eq!(*rig.host.0.borrow().stamped.borrow(), stamped, "{dir}");
        let gaps = &rig.runner.session.targets()[0].gaps;
        let want_gap = gap.map(|(from_ns, to_ns, ongoing)| Gap {
            cgroup: dir.to_owned(),
            from_ns,
            to_ns,
            ongoing,
        });
        assert_eq!(gaps.first(), want_gap.as_ref(), "{dir}");
        assert!(gaps.len() <= 1, "{dir}: {gaps:?}");
        // The next tick finds nothing more to follow.
        rig.step(Event::Tick, SEC);
        assert_eq!(
            rig.kernel.0.borrow().attached.len(),
            attached.len(),
            "{dir}"
        );
        assert!(rig.runner.session.targets()[0].gaps.len() <= 1, "{dir}");
    }
}

/// A move the kernel could not report (its ring buffer was full) is found at the next tick;
/// its gap then runs from the check before, the earliest it can have happened.
#[test]
fn a_move_found_at_a_tick_has_a_gap_since_the_check_before() {
    let mut rig = Rig::new(schedule(false, true), None);
    rig.host
        .0
        .borrow_mut()
        .cgroup_of
        .insert(10, PathBuf::from("/cg/b"));
    rig.kernel.0.borrow_mut().moves_lost = 1;
    rig.step(Event::Tick, SEC);
    let gaps = rig.runner.session.targets()[0].gaps.clone();
    assert_eq!(
        gaps,
        [Gap {
            cgroup: "/cg/b".into(),
            from_ns: CLOCK_NS,
            to_ns: CLOCK_NS,
            ongoing: false,
        }]
    );
    let r = rig
        .runner
        .snapshot(ReportKind::Interval, false, (rig.t0, CLOCK_NS + 5))
        .expect("snapshot");
    assert_eq!(r.processes[0].gaps, gaps);
}
