//! When to report and when to stop: a pure function of what just happened and a few facts
//! about the run, so every exit path is a row in a table test.

use super::ReportKind;

/// What woke the main loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The interval elapsed.
    Tick,
    /// The `-t` window ended.
    WindowEnd,
    /// A fatal signal (INT, TERM, HUP, QUIT, USR1, USR2, ALRM).
    Signal,
    /// The command of spawn mode exited.
    CommandExited,
    /// The command of spawn mode, which has the terminal, was stopped (Ctrl-Z, or a read
    /// from the terminal while in the background).
    CommandStopped,
    /// Whoever reads the reports went away (a closed pipe).
    OutputClosed,
    /// The interactive view was quit (`q`, or Ctrl-C, which raw mode turns into a key).
    Quit,
    /// The kernel saw a target's process move to another cgroup (followed at once).
    Moved,
}

/// Facts about the run that the decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// A `-t` window was given.
    pub window: bool,
    /// A report every interval (`-c`, or no `-t`).
    pub continuous: bool,
    /// A metrics endpoint is served (`--metrics-addr`): the run is a daemon.
    pub daemon: bool,
    /// Every target has ended (never true without targets).
    pub all_gone: bool,
    /// The last report covers the whole run, like a window's (a command that has the
    /// terminal: its life is the window).
    pub whole_run: bool,
}

/// What to do about an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Write a report now, of this kind.
    pub report: Option<ReportKind>,
    /// End the run after that.
    pub stop: bool,
}

/// Decides what `event` means for a run with `facts`.
pub fn decide(event: Event, facts: Facts) -> Decision {
    let Facts {
        window,
        continuous,
        daemon,
        all_gone,
        whole_run,
    } = facts;
    // The report of a window: of `-t`, or of the whole run (a command with the terminal).
    let window_report = (window || whole_run).then_some(ReportKind::Final);
    let last_report = window_report.or(Some(ReportKind::Interval));
    match event {
        // The command ended first: the last report covers the run so far (the window's
        // report when there is a window, cut short).
        Event::CommandExited => Decision {
            report: last_report,
            stop: true,
        },
        // The window's report; also on a signal or quitting the view during a window (the
        // part seen so far).
        Event::WindowEnd | Event::Signal | Event::Quit => Decision {
            report: window_report,
            stop: true,
        },
        // The command stopped with the terminal: the run stops with it (`step`), and
        // goes on when continued.
        Event::CommandStopped => Decision {
            report: None,
            stop: false,
        },
        // Nobody reads reports any more: end quietly.
        Event::OutputClosed => Decision {
            report: None,
            stop: true,
        },
        // Every target ended and nothing else keeps the run: a last report, then stop. With a
        // window the run waits for it; a daemon keeps serving metrics.
        Event::Tick if all_gone && !window && !daemon => Decision {
            report: last_report,
            stop: true,
        },
        Event::Tick => Decision {
            report: continuous.then_some(ReportKind::Interval),
            stop: false,
        },
        // Followed without a tick: no report, the run goes on.
        Event::Moved => Decision {
            report: None,
            stop: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, Event, Facts, ReportKind, decide};

    const I: Option<ReportKind> = Some(ReportKind::Interval);
    const F: Option<ReportKind> = Some(ReportKind::Final);
    const N: Option<ReportKind> = None;

    fn facts(window: bool, continuous: bool, daemon: bool, all_gone: bool) -> Facts {
        Facts {
            window,
            continuous,
            daemon,
            all_gone,
            whole_run: false,
        }
    }

    #[test]
    fn every_exit_path() {
        // (event, window, continuous, daemon, all_gone) → (report, stop)
        #[rustfmt::skip]
        type Row = (Event, bool, bool, bool, bool, Option<ReportKind>, bool);
        let table: &[Row] = &[
            // live table / JSON lines: a report per tick, forever
            (Event::Tick, false, true, false, false, I, false),
            // -t window: quiet ticks, one final report at its end
            (Event::Tick, true, false, false, false, N, false),
            (Event::WindowEnd, true, false, false, false, F, true),
            // -t -c: interval reports, then the window's
            (Event::Tick, true, true, false, false, I, false),
            (Event::WindowEnd, true, true, false, false, F, true),
            // a signal: the window's report so far, or nothing more without a window
            (Event::Signal, true, false, false, false, F, true),
            (Event::Signal, false, true, false, false, N, true),
            (Event::Signal, false, false, true, false, N, true),
            // spawn mode: the command's exit ends the run with a last report
            (Event::CommandExited, false, true, false, false, I, true),
            (Event::CommandExited, true, false, false, false, F, true),
            // a command without the terminal stopping is not the run's business
            (Event::CommandStopped, false, true, false, false, N, false),
            // every target gone: last report and stop ...
            (Event::Tick, false, true, false, true, I, true),
            // ... unless a window is running (its report comes at its end)
            (Event::Tick, true, false, false, true, N, false),
            // ... or the run is a metrics daemon (series expire on their own)
            (Event::Tick, false, false, true, true, N, false),
            (Event::Tick, false, true, true, true, I, false),
            // metrics daemon without reports: nothing written, runs on
            (Event::Tick, false, false, true, false, N, false),
            // quitting the interactive view: like a signal (the window's report so far)
            (Event::Quit, false, true, false, false, N, true),
            (Event::Quit, true, false, false, false, F, true),
            (Event::Quit, false, true, true, false, N, true),
            // stdout closed: stop quietly, whatever the mode
            (Event::OutputClosed, false, true, false, false, N, true),
            (Event::OutputClosed, true, true, true, false, N, true),
            // a target moved: followed at once, nothing reported, the run goes on
            (Event::Moved, false, true, false, false, N, false),
            (Event::Moved, true, false, false, true, N, false),
        ];
        for &(event, window, continuous, daemon, all_gone, report, stop) in table {
            assert_eq!(
                decide(event, facts(window, continuous, daemon, all_gone)),
                Decision { report, stop },
                "{event:?} window={window} continuous={continuous} daemon={daemon} all_gone={all_gone}"
            );
        }
    }

    /// A command that has the terminal: its life is the window. One report of the whole
    /// run at its end, whatever ends it; `-c` adds one every interval; a stop (Ctrl-Z)
    /// neither reports nor ends the run.
    #[test]
    fn a_command_with_the_terminal() {
        // (event, window, continuous, all_gone) → (report, stop)
        type Row = (Event, bool, bool, bool, Option<ReportKind>, bool);
        #[rustfmt::skip]
        let table: &[Row] = &[
            (Event::Tick, false, false, false, N, false),
            (Event::Tick, false, true, false, I, false),
            (Event::CommandStopped, false, false, false, N, false),
            (Event::CommandStopped, true, true, false, N, false),
            (Event::CommandExited, false, false, false, F, true),
            (Event::CommandExited, false, true, false, F, true),
            (Event::CommandExited, true, false, false, F, true),
            // the command gone at a tick, before its pidfd was read
            (Event::Tick, false, false, true, F, true),
            // a signal to procnetmon2 itself (SIGTERM, or SIGINT from elsewhere)
            (Event::Signal, false, false, false, F, true),
            (Event::WindowEnd, true, false, false, F, true),
            (Event::OutputClosed, false, false, false, N, true),
        ];
        for &(event, window, continuous, all_gone, report, stop) in table {
            let f = Facts {
                whole_run: true,
                ..facts(window, continuous, false, all_gone)
            };
            assert_eq!(
                decide(event, f),
                Decision { report, stop },
                "{event:?} window={window} continuous={continuous} all_gone={all_gone}"
            );
        }
    }
}
