//! One turn of the run's loop, over seams: the loaded programs ([`Programs`]), the host
//! ([`HostView`]) and the spawned command ([`Command`]). Every rule of the loop lives here —
//! which ticks are whole and which partial, when the command is reaped and when it is
//! stopped (and whose exit status the run's is), following a target that moved to a cgroup
//! the programs do not cover (at once on the kernel's word, `Event::Moved`; at each tick for
//! what that missed), and the gap each such move leaves — so each is a row in a table test
//! against `FakeKernel`.
//! `run.rs` feeds it real events and writes the reports it asks for; `session::decide` says
//! when to report and stop.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    HostView, ReportKind, Session, Subject,
    decide::{Decision, Event, Facts, decide},
};
use crate::{
    host::procs::ProcIdentity,
    kernel::{Knobs, Programs, Slot},
    model::{Gap, Report},
    plan::{Coverage, Schedule, coverage},
};

/// The command of spawn mode, as the loop sees it.
pub trait Command {
    /// Its exit status, reaping it (call once it has exited: its pidfd was readable).
    fn wait(&mut self) -> anyhow::Result<u8>;
    /// Its exit status if it has exited, reaping it; None while it runs.
    fn try_wait(&mut self) -> anyhow::Result<Option<u8>>;
    /// Ends what runs in its cgroup (itself, or what it left behind): SIGTERM, a grace
    /// period, then `cgroup.kill`. Returns how long that took.
    fn end(&mut self) -> Duration;
    /// It was stopped while it has the terminal (Ctrl-Z): procnetmon2 stops the same way,
    /// so that the shell gets the terminal back and sees the job stopped, and when it is
    /// continued (`fg`, `bg`) continues the command, giving it the terminal again if
    /// procnetmon2 has it. Returns once the command runs again.
    fn suspend(&mut self) -> anyhow::Result<()>;
}

/// A running loop: the session and the seams it reads and writes.
pub struct Runner {
    /// The counting state.
    pub session: Session,
    /// The loaded programs.
    pub programs: Box<dyn Programs>,
    /// The host.
    pub host: Box<dyn HostView>,
    command: Option<Box<dyn Command>>,
    moves: Moves,
    schedule: Schedule,
    knobs: Knobs,
    status: u8,
    /// CLOCK_MONOTONIC ns (a seam: tests pass a fixed clock).
    mono: fn() -> u64,
    /// When targets' cgroups were last checked (a move found at a tick happened after it).
    checked_ns: u64,
    /// Moves the kernel could not hand up, as last seen (warned about when it grows).
    moves_lost: u64,
}

impl Runner {
    /// A loop over `session` with these seams; `points` are where the programs are attached.
    pub fn new(
        session: Session,
        programs: Box<dyn Programs>,
        host: Box<dyn HostView>,
        command: Option<Box<dyn Command>>,
        plan: (Schedule, Knobs, Vec<PathBuf>),
    ) -> Self {
        let (schedule, knobs, points) = plan;
        Self {
            session,
            programs,
            host,
            command,
            moves: Moves {
                points,
                uncovered: HashSet::new(),
            },
            schedule,
            knobs,
            status: 0,
            mono: crate::details::monotonic_ns,
            checked_ns: crate::details::monotonic_ns(),
            moves_lost: 0,
        }
    }

    /// Reads CLOCK_MONOTONIC through `mono` (tests: a fixed clock).
    #[must_use]
    pub fn with_clock(mut self, mono: fn() -> u64) -> Self {
        self.mono = mono;
        self.checked_ns = mono();
        self
    }

    /// Handles `event` at `now`: reaps the command when it exited (stops with it when it was
    /// stopped), follows moved targets and ticks on the interval (a partial tick on anything
    /// else, so the last report counts the
    /// last bytes), decides, and when the run stops with the command still running, stops
    /// it and counts what it sent meanwhile. A move the kernel reported is followed at once,
    /// without a tick (the interval's rates stay whole).
    pub fn step(&mut self, event: Event, now: Instant) -> anyhow::Result<Decision> {
        if event == Event::Moved {
            self.follow_reported_moves();
            return Ok(decide(event, self.facts()));
        }
        match event {
            Event::CommandExited => {
                if let Some(status) = self.reap_command()? {
                    self.status = status;
                }
            }
            Event::CommandStopped => {
                // Nothing to count: the run stops with the command and goes on with it.
                if let Some(c) = &mut self.command {
                    c.suspend()?;
                }
                return Ok(decide(event, self.facts()));
            }
            Event::Tick => self.follow_moves(),
            _ => {}
        }
        if event == Event::Tick {
            self.session
                .tick(now, &mut *self.programs, &mut *self.host)?;
        } else {
            self.session
                .tick_partial(now, &mut *self.programs, &mut *self.host)?;
        }
        let decision = decide(event, self.facts());
        if decision.stop
            && let Some((exited, took)) = self.stop_command()?
        {
            // It may have exited already: the tick that found every target gone and its
            // pidfd were ready together, and the tick won. Then its status is the run's.
            if let Some(status) = exited {
                self.status = status;
            }
            self.session
                .tick_partial(now + took, &mut *self.programs, &mut *self.host)?;
        }
        Ok(decision)
    }

    /// The run's exit status so far: the command's, once it exited on its own; else 0.
    pub fn status(&self) -> u8 {
        self.status
    }

    /// The report of `kind` now (`clock`: the monotonic instant and its nanoseconds).
    pub fn snapshot(
        &mut self,
        kind: ReportKind,
        aggregate: bool,
        clock: (Instant, u64),
    ) -> anyhow::Result<Report> {
        self.session
            .snapshot(kind, aggregate, clock, &mut *self.programs, &*self.host)
    }

    /// What `decide` needs to know about the run.
    fn facts(&self) -> Facts {
        Facts {
            window: self.schedule.window.is_some(),
            continuous: self.schedule.every_interval,
            daemon: self.schedule.daemon,
            all_gone: self.session.all_gone(),
            whole_run: self.schedule.whole_run,
        }
    }

    /// The command exited: reaps it (its status becomes the run's) and ends what it left
    /// running in its cgroup.
    fn reap_command(&mut self) -> anyhow::Result<Option<u8>> {
        let Some(mut c) = self.command.take() else {
            return Ok(None);
        };
        let status = c.wait()?;
        c.end();
        Ok(Some(status))
    }

    /// The run stops with the command not reaped: its status if it had exited on its own
    /// (else it is ended, and its status is not the run's), and how long ending took.
    fn stop_command(&mut self) -> anyhow::Result<Option<(Option<u8>, Duration)>> {
        let Some(mut c) = self.command.take() else {
            return Ok(None);
        };
        let exited = c.try_wait()?;
        let took = c.end();
        if exited.is_none() {
            let _ = c.wait();
        }
        Ok(Some((exited, took)))
    }

    /// The kernel saw targets' processes (named ones or their children) move to another
    /// cgroup: follows each at once, so what they do there is counted from now on. The gap
    /// runs from the move to the end of the stamping.
    fn follow_reported_moves(&mut self) {
        for m in self.programs.moves() {
            let Some(ident) = self.host.identify(m.tgid) else {
                continue; // gone already: nothing more of it to count
            };
            if let Some(dir) = self.host.cgroup_of(m.tgid) {
                self.follow(&ident, m.slot, dir, m.ns);
            }
        }
        let lost = self.programs.moves_lost();
        if lost > self.moves_lost {
            log::warn!(
                "{} moves of targets to other cgroups were not reported at once (ring buffer full); they are followed at the next interval",
                lost - self.moves_lost
            );
            self.moves_lost = lost;
        }
    }

    /// Follows named process targets that moved to a cgroup the programs do not cover, for
    /// moves the kernel could not report at once: the gap then runs from the previous check.
    fn follow_moves(&mut self) {
        let since = std::mem::replace(&mut self.checked_ns, (self.mono)());
        let moved: Vec<(ProcIdentity, Slot, PathBuf)> = self
            .session
            .targets()
            .iter()
            .filter(|t| t.exited.is_none())
            .filter_map(|t| match &t.subject {
                Subject::Process { ident, .. } => {
                    let dir = self.host.cgroup_of(ident.pid)?;
                    Some((ident.clone(), t.slot, dir))
                }
                Subject::Cgroup { .. } => None,
            })
            .collect();
        for (ident, slot, dir) in moved {
            self.follow(&ident, slot, dir, since);
        }
    }

    /// Process `ident` of target `slot` is in cgroup `dir` since `from_ns` at the latest:
    /// attaches there and stamps its sockets when the programs do not cover it, and notes the
    /// gap (its duration; ongoing when the cgroup cannot be covered) in the report and the log.
    fn follow(&mut self, ident: &ProcIdentity, slot: Slot, dir: PathBuf, from_ns: u64) {
        let pid = ident.pid;
        let shown = dir.display().to_string();
        let gap = |to_ns: u64, ongoing| Gap {
            cgroup: shown.clone(),
            from_ns,
            to_ns: to_ns.max(from_ns),
            ongoing,
        };
        let why = match self.moves.follow(&dir) {
            Follow::Nothing => return,
            Follow::Attach => match self.attach_at(&dir) {
                Ok(()) => {
                    self.host
                        .stamp_existing(&mut *self.programs, ident, slot, self.knobs);
                    let g = gap((self.mono)(), false);
                    log::warn!(
                        "process {pid} moved to cgroup {shown}: counting there too; what its new sockets there sent in the {:.1} ms before could not be counted",
                        g.duration().as_secs_f64() * 1000.0
                    );
                    self.session.note_gap(slot, g);
                    return;
                }
                Err(e) => format!("which cannot be attached ({e:#})"),
            },
            Follow::Ancestor => {
                "an ancestor of where procnetmon2 is attached (restart procnetmon2 to follow it)"
                    .to_owned()
            }
        };
        log::warn!(
            "process {pid} moved to cgroup {shown}, {why}: its new sockets are not counted (reported as an ongoing gap)"
        );
        self.moves.uncovered.insert(dir);
        self.session.note_gap(slot, gap((self.mono)(), true));
    }

    fn attach_at(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.programs.attach_sock_hooks(dir)?;
        self.programs.attach_counters(dir)?;
        self.moves.points.push(dir.to_path_buf());
        Ok(())
    }
}

/// Where the programs are attached, and the cgroups targets moved to that cannot be.
#[derive(Debug)]
struct Moves {
    points: Vec<PathBuf>,
    /// Warned about once; never tried again.
    uncovered: HashSet<PathBuf>,
}

/// What to do about a target found in cgroup `dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Follow {
    /// Covered already, or known not to be coverable.
    Nothing,
    /// Attach there too.
    Attach,
    /// An ancestor of an attach point: attaching there would count that point's packets
    /// twice, so the target's new sockets cannot be counted.
    Ancestor,
}

impl Moves {
    fn follow(&self, dir: &Path) -> Follow {
        if self.uncovered.contains(dir) {
            return Follow::Nothing;
        }
        match coverage(&self.points, dir) {
            Coverage::Covered => Follow::Nothing,
            Coverage::Attach => Follow::Attach,
            Coverage::Ancestor => Follow::Ancestor,
        }
    }
}

#[cfg(test)]
mod tests;
