//! Emptying a dedicated cgroup: every process in it goes back to the cgroup it came from,
//! without racing the forks and exits of a live target, and what could not move is named
//! with the kernel's reason.
//!
//! Kernel behaviour this relies on (cgroup v2, `kernel/cgroup/cgroup.c`, the same from 5.10
//! on):
//! - Writing a PID to `cgroup.procs` migrates its whole thread group while holding
//!   `cgroup_threadgroup_rwsem` for writing; `fork` holds it for reading from
//!   `cgroup_can_fork` to `cgroup_post_fork`. A child is therefore born in the cgroup its
//!   parent is in at that moment: a child of a process still in the dedicated cgroup shows
//!   up in its `cgroup.procs` (the next round moves it), and a process already moved back
//!   has its children born back home. Repeating until nothing is listed and `cgroup.events`
//!   reads `populated 0` leaves none behind.
//! - A PID that is gone: ESRCH. It exited between the listing and the move: done.
//! - An exiting process (`PF_EXITING`, in `do_exit` before `cgroup_exit`) is still listed
//!   and still makes the cgroup populated, but a move skips it and reports success
//!   (`cgroup_migrate_add_task`). It leaves at `cgroup_exit`; zombies neither count as
//!   populated nor keep `rmdir` from working.
//! - Every change of `cgroup.events` is a file-modified event: `poll` on a descriptor that
//!   has read the file reports POLLPRI once it changed since (kernfs). Waiting for exiting
//!   processes is a poll on that, bounded, never a sleep.
//! - EBUSY on the move: the original cgroup has controllers enabled in its
//!   `cgroup.subtree_control` and so takes no processes (the no-internal-process rule).
//!   Only then is disabling them the advice.
//!
//! Freezing the dedicated cgroup (`cgroup.freeze`) first would stop forks outright, but a
//! run killed between freeze and thaw (SIGKILL, the OOM killer) would leave the target
//! stopped until someone ran `--cleanup`. Moving processes while they run, until none is
//! left, leaves them running whatever happens to the run: a killed run only leaves them in
//! the dedicated cgroup, recorded for the next one.
//!
//! A PID is listed, then written: were it to exit and its number be reused in between, the
//! write would move the new process. PIDs are handed out cyclically, so that needs the
//! counter to wrap around `pid_max` within that window (microseconds).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    fs::File,
    io::{self, Read as _, Seek as _},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{PollFd, PollFlags, PollTimeout, poll},
};

use super::cgroup::{open_cgroup_file, parse_populated, procs_in};

/// How long the move back (or a removal) waits for exiting processes to leave a cgroup.
/// They normally take milliseconds; a socket lingering on close can hold one in `do_exit`
/// for seconds. After this the cgroup is kept and recorded, and `--cleanup` finishes.
pub const EXIT_BOUND: Duration = Duration::from_secs(5);

/// Why the kernel refused to move a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The errno of the write to `cgroup.procs`.
    Os(Errno),
    /// No errno: e.g. the destination is not on cgroup v2.
    Other(String),
}

impl Refusal {
    fn of(e: &io::Error) -> Self {
        match e.raw_os_error() {
            Some(n) => Self::Os(Errno::from_raw(n)),
            None => Self::Other(e.to_string()),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Os(e) => write!(f, "{e}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// What writing one PID into the destination's `cgroup.procs` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Accepted: moved, or (if it is exiting) skipped by the kernel.
    Accepted,
    /// ESRCH: the process no longer exists. Done.
    Gone,
    /// Refused, with the reason.
    Refused(Refusal),
}

impl Sent {
    /// The outcome of a write's result.
    pub fn of(r: &io::Result<()>) -> Self {
        match r {
            Ok(()) => Self::Accepted,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Self::Gone,
            Err(e) => Self::Refused(Refusal::of(e)),
        }
    }
}

/// What is still in a dedicated cgroup after the move back; all empty when nothing is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stay {
    /// Live processes the kernel refused to move, with its reason.
    pub refused: Vec<(u32, Refusal)>,
    /// Processes still exiting when the bound ran out.
    pub exiting: Vec<u32>,
    /// Live processes no round got to: forked after the last attempt (the others were
    /// refused), or the bound ran out.
    pub unmoved: Vec<u32>,
    /// Processes live in child cgroups of it (made by its processes): not moved.
    pub nested: bool,
    /// `rmdir` failed although no process was left.
    pub rmdir: Option<Refusal>,
}

impl Stay {
    /// True when nothing stays: the cgroup is gone.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// True when the original cgroup refused a process because it takes none (EBUSY).
    pub fn busy(&self) -> bool {
        self.refused
            .iter()
            .any(|(_, r)| *r == Refusal::Os(Errno::EBUSY))
    }
}

/// The cgroup file system as the move back uses it: the seam between the decisions below
/// and the kernel (a fake in the tests).
pub trait Cgroups {
    /// PIDs listed in `cg`'s `cgroup.procs`.
    fn procs(&mut self, cg: &Path) -> io::Result<Vec<u32>>;
    /// Moves process `pid` into cgroup `dest`.
    fn send(&mut self, dest: &Path, pid: u32) -> io::Result<()>;
    /// `populated` of `cg`'s `cgroup.events`. Reading it arms [`Cgroups::wait_change`].
    fn populated(&mut self, cg: &Path) -> io::Result<bool>;
    /// True when `cg` has child cgroups.
    fn has_children(&mut self, cg: &Path) -> bool;
    /// Waits until `cg`'s `cgroup.events` changes after the last [`Cgroups::populated`],
    /// or until `until`.
    fn wait_change(&mut self, cg: &Path, until: Instant);
    /// True when process `pid` is exiting (or a zombie).
    fn exiting(&mut self, pid: u32) -> bool;
    /// Removes cgroup directory `cg`.
    fn rmdir(&mut self, cg: &Path) -> io::Result<()>;
    /// The time now.
    fn now(&mut self) -> Instant;
}

/// Moves every process in `to` back to `from`, round after round until none is left or
/// `bound` has passed, then removes `to`. Returns what stays (empty: `to` is gone).
pub fn move_back(io: &mut impl Cgroups, from: &Path, to: &Path, bound: Duration) -> Stay {
    let stay = empty(io, from, to, bound);
    if !stay.is_empty() {
        return stay;
    }
    remove(io, to)
}

/// The rounds of [`move_back`], without the removal.
fn empty(io: &mut impl Cgroups, from: &Path, to: &Path, bound: Duration) -> Stay {
    let (start, mut rounds) = (io.now(), 0_u32);
    let deadline = start + bound;
    let mut refused: BTreeMap<u32, Refusal> = BTreeMap::new();
    // Accepted since the last change of cgroup.events: still listed means exiting.
    let mut accepted: BTreeSet<u32> = BTreeSet::new();
    loop {
        rounds += 1;
        let listed = match io.procs(to) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Stay::default(),
            Err(_) => Vec::new(),
        };
        let fresh: Vec<u32> = listed
            .iter()
            .copied()
            .filter(|p| !refused.contains_key(p) && !accepted.contains(p))
            .collect();
        let late = io.now() >= deadline;
        if !fresh.is_empty() && !late {
            let (mut moved, mut denied) = (false, false);
            for pid in fresh {
                match Sent::of(&io.send(from, pid)) {
                    Sent::Accepted => {
                        accepted.insert(pid);
                        moved = true;
                    }
                    Sent::Gone => {}
                    Sent::Refused(why) => {
                        denied = true;
                        refused.insert(pid, why);
                    }
                }
            }
            if moved || !denied {
                continue;
            }
            // A round that moved nothing and was refused: the original cgroup refuses,
            // and would refuse what the refused processes fork meanwhile as well.
            let listed = io.procs(to).unwrap_or_default();
            return settle(io, &listed, &refused);
        }
        // Nothing new to move. Read after the listing, so an exit in between is seen here
        // (and the wait below is armed from this reading).
        let populated = match io.populated(to) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(_) => true,
        };
        if !populated {
            let took = io.now().saturating_duration_since(start);
            log::debug!("{} emptied in {rounds} round(s), {took:?}", to.display());
            return Stay::default();
        }
        if listed.is_empty() && io.has_children(to) {
            return Stay {
                nested: true,
                ..Stay::default()
            };
        }
        let only_refused = !listed.is_empty() && listed.iter().all(|p| refused.contains_key(p));
        if only_refused || late {
            return settle(io, &listed, &refused);
        }
        io.wait_change(to, deadline);
        // After a change, the ones still listed are tried once more.
        accepted.clear();
    }
}

/// What stays, from the last listing: refused (with why), exiting, or not moved.
fn settle(io: &mut impl Cgroups, listed: &[u32], refused: &BTreeMap<u32, Refusal>) -> Stay {
    let mut stay = Stay::default();
    for &pid in listed {
        if let Some(why) = refused.get(&pid) {
            stay.refused.push((pid, why.clone()));
        } else if io.exiting(pid) {
            stay.exiting.push(pid);
        } else {
            stay.unmoved.push(pid);
        }
    }
    stay
}

/// Removes the emptied cgroup `cg`.
fn remove(io: &mut impl Cgroups, cg: &Path) -> Stay {
    match io.rmdir(cg) {
        Ok(()) => Stay::default(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Stay::default(),
        Err(e) => Stay {
            nested: io.has_children(cg),
            rmdir: Some(Refusal::of(&e)),
            ..Stay::default()
        },
    }
}

/// Waits until `cg` holds no live process (true) or `until` passes (false).
pub fn wait_unpopulated(io: &mut impl Cgroups, cg: &Path, until: Instant) -> bool {
    loop {
        match io.populated(cg) {
            Ok(false) => return true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return true,
            _ => {}
        }
        if io.now() >= until {
            return false;
        }
        io.wait_change(cg, until);
    }
}

/// Removes a cgroup whose processes were ended (the spawn cgroup): waits for the last ones
/// to leave (`bound`), then `rmdir`. Returns what stays.
pub fn remove_when_empty(io: &mut impl Cgroups, cg: &Path, bound: Duration) -> Stay {
    let until = io.now() + bound;
    if !wait_unpopulated(io, cg, until) {
        let listed = io.procs(cg).unwrap_or_default();
        return settle(io, &listed, &BTreeMap::new());
    }
    remove(io, cg)
}

/// A dedicated cgroup kept because something stays in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Where its processes belong (`None` for the spawn cgroup: they are the run's own).
    pub from: Option<PathBuf>,
    /// The kept cgroup.
    pub cgroup: PathBuf,
    /// What stays in it.
    pub stay: Stay,
}

/// "process 4" / "processes 4, 5" and the verb that goes with it.
fn procs_phrase(p: &[u32]) -> (String, &'static str) {
    match p {
        [one] => (format!("process {one}"), "stays"),
        _ => (format!("processes {}", pids(p)), "stay"),
    }
}

fn pids(p: &[u32]) -> String {
    p.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl Kept {
    /// What stays and why, without the advice.
    pub fn why(&self) -> String {
        let (s, to) = (&self.stay, self.cgroup.display());
        let mut parts = Vec::new();
        if let (Some(from), [(pid, r)]) = (&self.from, s.refused.as_slice()) {
            parts.push(format!(
                "process {pid} could not be moved back to {} ({r}): it stays, alive, in {to}",
                from.display()
            ));
        } else if let Some(from) = self.from.as_ref().filter(|_| !s.refused.is_empty()) {
            let each: Vec<String> = s
                .refused
                .iter()
                .map(|(pid, r)| format!("{pid} ({r})"))
                .collect();
            parts.push(format!(
                "processes {} could not be moved back to {}: they stay, alive, in {to}",
                each.join(", "),
                from.display()
            ));
        }
        if !s.exiting.is_empty() {
            parts.push(format!(
                "{to} still held exiting process(es) {} after {}s",
                pids(&s.exiting),
                EXIT_BOUND.as_secs()
            ));
        }
        if !s.unmoved.is_empty() {
            let (who, verb) = procs_phrase(&s.unmoved);
            let why = match &self.from {
                None => "the command's, still running".to_owned(),
                Some(_) if !s.refused.is_empty() => {
                    "forked during the move back, after the others were refused".to_owned()
                }
                Some(_) => format!(
                    "still forking when the {}s bound ran out",
                    EXIT_BOUND.as_secs()
                ),
            };
            parts.push(format!("{who} {verb}, alive, in {to} ({why})"));
        }
        if s.nested {
            parts.push(format!(
                "child cgroups of {to} hold processes (made by them; never moved)"
            ));
        }
        if let Some(r) = &s.rmdir {
            parts.push(format!("cgroup {to} could not be removed ({r})"));
        }
        parts.join("; ")
    }
}

/// One line for everything kept: what stays, where the record is, and what to do about it.
/// The `cgroup.subtree_control` advice only when a move got EBUSY.
pub fn describe(kept: &[Kept], record: &Path) -> String {
    let what: Vec<String> = kept.iter().map(Kept::why).collect();
    let advice = if kept.iter().any(|k| k.stay.busy()) {
        "once the original cgroup accepts processes again (e.g. disable the controllers in its \
         cgroup.subtree_control), run procnetmon2 --cleanup"
    } else if kept.iter().all(|k| {
        let s = &k.stay;
        s.refused.is_empty() && s.unmoved.is_empty() && !s.nested && s.rmdir.is_none()
    }) {
        "procnetmon2 --cleanup (or the next run) removes it once they are gone"
    } else {
        "run procnetmon2 --cleanup to retry"
    };
    format!(
        "{}; kept and recorded in {}: {advice}",
        what.join("; "),
        record.display()
    )
}

/// The real cgroup file system. Keeps the `cgroup.events` of the cgroup being waited on
/// open, so that a change after a reading is never missed.
#[derive(Debug, Default)]
pub struct Live {
    events: Option<(PathBuf, File)>,
}

impl Live {
    fn events(&mut self, cg: &Path) -> io::Result<&mut File> {
        if self.events.as_ref().is_none_or(|(p, _)| p != cg) {
            self.events = Some((cg.to_path_buf(), File::open(cg.join("cgroup.events"))?));
        }
        let (_, f) = self.events.as_mut().expect("just set");
        Ok(f)
    }
}

impl Cgroups for Live {
    fn procs(&mut self, cg: &Path) -> io::Result<Vec<u32>> {
        procs_in(cg)
    }

    fn send(&mut self, dest: &Path, pid: u32) -> io::Result<()> {
        super::cgroup::write_pid(dest, pid)
    }

    fn populated(&mut self, cg: &Path) -> io::Result<bool> {
        let f = self.events(cg)?;
        f.rewind()?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        parse_populated(&text)
            .ok_or_else(|| io::Error::other(format!("{}: no populated line", cg.display())))
    }

    fn has_children(&mut self, cg: &Path) -> bool {
        std::fs::read_dir(cg)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_type().is_ok_and(|t| t.is_dir()))
    }

    fn wait_change(&mut self, cg: &Path, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let Ok(f) = self.events(cg) else {
            // No events file to wait on (it never lacks on cgroup v2): a short pause keeps
            // the bounded loop from spinning.
            std::thread::sleep(left.min(Duration::from_millis(50)));
            return;
        };
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        // POLLPRI (with POLLERR) once the file changed since it was last read; EINTR or a
        // timeout just return: the caller looks again.
        let _ = poll(&mut [PollFd::new(f.as_fd(), PollFlags::POLLPRI)], timeout);
    }

    fn exiting(&mut self, pid: u32) -> bool {
        let Ok(stat) = i32::try_from(pid)
            .map_err(|_| procfs::ProcError::NotFound(None))
            .and_then(procfs::process::Process::new)
            .and_then(|p| p.stat())
        else {
            return false;
        };
        matches!(stat.state, 'Z' | 'X')
            || stat
                .flags()
                .is_ok_and(|f| f.contains(procfs::process::StatFlags::PF_EXITING))
    }

    fn rmdir(&mut self, cg: &Path) -> io::Result<()> {
        if self.events.as_ref().is_some_and(|(p, _)| p == cg) {
            self.events = None;
        }
        // Only ever a cgroup v2 directory.
        let fs = nix::sys::statfs::statfs(cg)?;
        if fs.filesystem_type() != nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            return Err(io::Error::other(format!(
                "{} is not a cgroup v2 directory",
                cg.display()
            )));
        }
        std::fs::remove_dir(cg)
    }

    fn now(&mut self) -> Instant {
        Instant::now()
    }
}

/// Ends every process in `cg` (only ever the run's own spawn cgroup): its `cgroup.kill`
/// (Linux 5.14), which also catches a process forked meanwhile. Older kernels have no such
/// file: there each listed process gets SIGKILL, a few rounds over, so a fork between the
/// listing and the signal is caught by the next listing.
pub fn kill_all(cg: &Path) {
    use std::io::Write as _;
    if let Ok(mut f) = open_cgroup_file(&cg.join("cgroup.kill")) {
        let _ = f.write_all(b"1");
        return;
    }
    for _ in 0..16 {
        let pids = procs_in(cg).unwrap_or_default();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// A scripted cgroup: each listing pops the next row (the last one repeats); writes
    /// answer from a table by PID; `populated` pops its own script likewise.
    #[derive(Default)]
    struct Fake {
        listings: VecDeque<Vec<u32>>,
        answers: BTreeMap<u32, i32>,
        populated: VecDeque<bool>,
        exiting: BTreeSet<u32>,
        children: bool,
        rmdir: Option<i32>,
        clock: Option<Instant>,
        sent: Vec<u32>,
        waits: usize,
    }

    impl Fake {
        fn next<T: Clone>(q: &mut VecDeque<T>, last: T) -> T {
            if q.len() > 1 {
                q.pop_front().expect("len > 1")
            } else {
                q.front().cloned().unwrap_or(last)
            }
        }
    }

    impl Cgroups for Fake {
        fn procs(&mut self, _: &Path) -> io::Result<Vec<u32>> {
            Ok(Self::next(&mut self.listings, Vec::new()))
        }
        fn send(&mut self, _: &Path, pid: u32) -> io::Result<()> {
            self.sent.push(pid);
            match self.answers.get(&pid) {
                Some(&e) => Err(io::Error::from_raw_os_error(e)),
                None => Ok(()),
            }
        }
        fn populated(&mut self, _: &Path) -> io::Result<bool> {
            Ok(Self::next(&mut self.populated, false))
        }
        fn has_children(&mut self, _: &Path) -> bool {
            self.children
        }
        fn wait_change(&mut self, _: &Path, _: Instant) {
            // Each wait is a second of (fake) time.
            self.waits += 1;
            let now = self.now();
            self.clock = Some(now + Duration::from_secs(1));
        }
        fn exiting(&mut self, pid: u32) -> bool {
            self.exiting.contains(&pid)
        }
        fn rmdir(&mut self, _: &Path) -> io::Result<()> {
            self.rmdir
                .map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)))
        }
        fn now(&mut self) -> Instant {
            *self.clock.get_or_insert_with(Instant::now)
        }
    }

    fn busy() -> Refusal {
        Refusal::Os(Errno::EBUSY)
    }

    struct Case {
        name: &'static str,
        listings: Vec<Vec<u32>>,
        answers: Vec<(u32, i32)>,
        populated: Vec<bool>,
        exiting: Vec<u32>,
        children: bool,
        rmdir: Option<i32>,
        want: Stay,
        /// Waits on cgroup.events the case takes (each a fake second).
        waits: usize,
    }

    fn case(name: &'static str) -> Case {
        Case {
            name,
            listings: Vec::new(),
            answers: Vec::new(),
            populated: Vec::new(),
            exiting: Vec::new(),
            children: false,
            rmdir: None,
            want: Stay::default(),
            waits: 0,
        }
    }

    #[test]
    fn move_back_decides_what_stays_and_why() {
        let cases = vec![
            Case {
                // The target: children exit between listing and move (ESRCH) and
                // new ones are forked meanwhile; every round catches them.
                listings: vec![vec![10, 21, 22], vec![23, 24], vec![25], vec![]],
                answers: vec![(21, libc::ESRCH), (24, libc::ESRCH)],
                ..case("forks and exits race the move: all done")
            },
            Case {
                // An exiting child: accepted but still listed until it passes cgroup_exit.
                listings: vec![vec![10, 30], vec![30], vec![]],
                populated: vec![true, false],
                waits: 1,
                ..case("an exiting process is waited out on cgroup.events")
            },
            Case {
                listings: vec![vec![10, 30], vec![30]],
                populated: vec![true],
                exiting: vec![30],
                want: Stay {
                    exiting: vec![30],
                    ..Stay::default()
                },
                waits: 5,
                ..case("one that never finishes exiting is reported after the bound")
            },
            Case {
                listings: vec![vec![10, 11], vec![10, 11, 12]],
                answers: vec![(10, libc::EBUSY), (11, libc::EBUSY)],
                want: Stay {
                    refused: vec![(10, busy()), (11, busy())],
                    unmoved: vec![12],
                    ..Stay::default()
                },
                ..case("EBUSY: the refused stay alive, a fork meanwhile too")
            },
            Case {
                listings: vec![vec![10, 11], vec![11]],
                answers: vec![(11, libc::EPERM)],
                populated: vec![true],
                want: Stay {
                    refused: vec![(11, Refusal::Os(Errno::EPERM))],
                    ..Stay::default()
                },
                ..case("one refused among moved ones: named with its errno")
            },
            Case {
                listings: vec![vec![10, 11], vec![11], vec![]],
                answers: vec![(11, libc::EPERM)],
                populated: vec![false],
                ..case("a refused process that exits meanwhile is not reported")
            },
            Case {
                listings: vec![vec![10], vec![]],
                populated: vec![true],
                children: true,
                want: Stay {
                    nested: true,
                    ..Stay::default()
                },
                ..case("processes in child cgroups it made are not moved")
            },
            Case {
                listings: vec![vec![10], vec![]],
                rmdir: Some(libc::EBUSY),
                want: Stay {
                    rmdir: Some(busy()),
                    ..Stay::default()
                },
                ..case("empty but rmdir refused")
            },
            Case {
                listings: vec![vec![]],
                ..case("already empty")
            },
        ];
        for c in cases {
            let mut io = Fake {
                listings: c.listings.into(),
                answers: c.answers.into_iter().collect(),
                populated: c.populated.into(),
                exiting: c.exiting.into_iter().collect(),
                children: c.children,
                rmdir: c.rmdir,
                ..Fake::default()
            };
            let stay = move_back(
                &mut io,
                Path::new("/cg/a"),
                Path::new("/cg/a/procnetmon2-10"),
                EXIT_BOUND,
            );
            assert_eq!(stay, c.want, "{}", c.name);
            assert_eq!(io.waits, c.waits, "{}", c.name);
        }
    }

    #[test]
    fn a_fork_storm_ends_at_the_bound() {
        // A new PID every round, forever: the rounds stop once the bound has passed.
        struct Storm(Fake, u32);
        impl Cgroups for Storm {
            fn procs(&mut self, _: &Path) -> io::Result<Vec<u32>> {
                self.1 += 1;
                // Every listing costs a (fake) tenth of a second.
                let now = self.0.now();
                self.0.clock = Some(now + Duration::from_millis(100));
                Ok(vec![self.1])
            }
            fn send(&mut self, d: &Path, p: u32) -> io::Result<()> {
                self.0.send(d, p)
            }
            fn populated(&mut self, _: &Path) -> io::Result<bool> {
                Ok(true)
            }
            fn has_children(&mut self, _: &Path) -> bool {
                false
            }
            fn wait_change(&mut self, c: &Path, u: Instant) {
                self.0.wait_change(c, u);
            }
            fn exiting(&mut self, _: u32) -> bool {
                false
            }
            fn rmdir(&mut self, _: &Path) -> io::Result<()> {
                Ok(())
            }
            fn now(&mut self) -> Instant {
                self.0.now()
            }
        }
        let mut io = Storm(Fake::default(), 0);
        let stay = move_back(&mut io, Path::new("/a"), Path::new("/a/b"), EXIT_BOUND);
        assert_eq!(stay.unmoved.len(), 1, "{stay:?}");
        assert!(io.0.sent.len() <= 60, "{}", io.0.sent.len());
    }

    #[test]
    fn write_outcomes() {
        let e = |n| Err(io::Error::from_raw_os_error(n));
        assert_eq!(Sent::of(&Ok(())), Sent::Accepted);
        assert_eq!(Sent::of(&e(libc::ESRCH)), Sent::Gone);
        assert_eq!(Sent::of(&e(libc::EBUSY)), Sent::Refused(busy()));
        assert_eq!(
            Sent::of(&Err(io::Error::other("not on cgroup v2"))),
            Sent::Refused(Refusal::Other("not on cgroup v2".into()))
        );
    }

    fn kept(stay: Stay) -> Kept {
        Kept {
            from: Some("/cg/a".into()),
            cgroup: "/cg/a/procnetmon2-10".into(),
            stay,
        }
    }

    #[test]
    fn the_message_names_the_real_cause() {
        let rec = Path::new("/run/procnetmon2/7.json");
        let subtree = "cgroup.subtree_control";
        let alive = "stays, alive";
        // (what stays, must contain, must not contain)
        let cases: Vec<(Stay, Vec<&str>, Vec<&str>)> = vec![
            (
                Stay {
                    refused: vec![(10, busy())],
                    ..Stay::default()
                },
                vec![
                    "process 10 could not be moved back to /cg/a (EBUSY: Device or resource busy): it stays, alive, in /cg/a/procnetmon2-10",
                    subtree,
                    "7.json",
                ],
                vec![],
            ),
            (
                Stay {
                    refused: vec![(10, Refusal::Os(Errno::EPERM)), (12, busy())],
                    ..Stay::default()
                },
                vec![
                    "processes 10 (EPERM",
                    "12 (EBUSY",
                    "they stay, alive",
                    subtree,
                ],
                vec![],
            ),
            (
                Stay {
                    refused: vec![(10, busy())],
                    unmoved: vec![41, 42],
                    ..Stay::default()
                },
                vec![
                    "processes 41, 42 stay, alive, in /cg/a/procnetmon2-10 (forked during the move back, after the others were refused)",
                    subtree,
                ],
                vec![],
            ),
            (
                Stay {
                    refused: vec![(11, Refusal::Os(Errno::EACCES))],
                    ..Stay::default()
                },
                vec!["process 11 could not", "EACCES", "--cleanup to retry"],
                vec![subtree],
            ),
            (
                Stay {
                    exiting: vec![30, 31],
                    ..Stay::default()
                },
                vec![
                    "still held exiting process(es) 30, 31 after 5s",
                    "once they are gone",
                ],
                vec![subtree, alive, "could not be moved"],
            ),
            (
                Stay {
                    nested: true,
                    ..Stay::default()
                },
                vec!["child cgroups of /cg/a/procnetmon2-10"],
                vec![subtree, alive],
            ),
            (
                Stay {
                    rmdir: Some(busy()),
                    ..Stay::default()
                },
                vec!["could not be removed (EBUSY", "--cleanup to retry"],
                vec![subtree, alive, "once they are gone"],
            ),
            (
                Stay {
                    unmoved: vec![40],
                    ..Stay::default()
                },
                vec![
                    "process 40 stays, alive, in /cg/a/procnetmon2-10 (still forking when the 5s bound ran out)",
                ],
                vec![subtree],
            ),
        ];
        for (stay, yes, no) in cases {
            let line = describe(&[kept(stay.clone())], rec);
            for y in yes {
                assert!(line.contains(y), "{stay:?}: want {y:?} in {line}");
            }
            for n in no {
                assert!(!line.contains(n), "{stay:?}: {n:?} in {line}");
            }
            assert!(!line.contains('\n'));
        }
        // The spawn cgroup: its processes are the run's own, never "moved back".
        let spawn = Kept {
            from: None,
            cgroup: "/cg/procnetmon2-spawn-3".into(),
            stay: Stay {
                unmoved: vec![5],
                ..Stay::default()
            },
        };
        let line = describe(&[spawn], rec);
        assert!(
            line.contains("process 5 stays, alive, in /cg/procnetmon2-spawn-3 (the command's"),
            "{line}"
        );
    }

    #[test]
    fn populated_is_parsed() {
        assert_eq!(parse_populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(parse_populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_populated("frozen 0\n"), None);
    }
}
