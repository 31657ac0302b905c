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
    /// Whoever reads the reports went away (a closed pipe).
    OutputClosed,
    /// The interactive view was quit (`q`, or Ctrl-C, which raw mode turns into a key).
    Quit,
    /// A key or a resize for the interactive view: it redraws; the run goes on untouched.
    Input(crate::tui::keys::Input),
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
    } = facts;
    let window_report = window.then_some(ReportKind::Final);
    match event {
        // The command ended first: the last report covers the run so far (the window's
        // report when there is a window, cut short).
        Event::CommandExited => Decision {
            report: Some(if window {
                ReportKind::Final
            } else {
                ReportKind::Interval
            }),
            stop: true,
        },
        // The window's report; also on a signal or quitting the view during a window (the
        // part seen so far).
        Event::WindowEnd | Event::Signal | Event::Quit => Decision {
            report: window_report,
            stop: true,
        },
        // The view handles its own keys; nothing to report, nothing ends.
        Event::Input(_) => Decision {
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
            report: Some(ReportKind::Interval),
            stop: true,
        },
        Event::Tick => Decision {
            report: continuous.then_some(ReportKind::Interval),
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
        ];
        for &(event, window, continuous, daemon, all_gone, report, stop) in table {
            assert_eq!(
                decide(event, facts(window, continuous, daemon, all_gone)),
                Decision { report, stop },
                "{event:?} window={window} continuous={continuous} daemon={daemon} all_gone={all_gone}"
            );
        }
    }
}
