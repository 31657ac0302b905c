//! The interactive view (`procnetmon2 -p …` on a terminal): a live table of processes and
//! workloads, the connections of one row, and the remote hosts they talk to, driven by keys.
//!
//! It renders from [`Report`] — what `Session::snapshot` returns each interval, the same
//! value the table and JSON are written from — plus its own [`state::State`] (sparkline
//! history, closed connections, sort, filter, pause). Keys arrive as `Event::Input` from
//! `events`; quitting is `Event::Quit`, which stops the run through `session::decide` like
//! any other stop, so every clean-up still happens. `render/` (the scripts' contract) is
//! untouched; the view is chosen in `config` (`Config::wants_tui`).

pub mod keys;
pub mod state;
pub mod terminal;
pub mod view;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod view_tests;

use std::time::{Duration, Instant};

use keys::{Action, Input};
use state::State;
use terminal::Screen;

use crate::model::Report;

/// The open view: the terminal and what is shown on it.
pub struct Tui {
    screen: Screen,
    state: State,
}

impl Tui {
    /// Opens the view for a run reporting every `interval`, with a `-t` window of `window`.
    pub fn open(interval: Duration, window: Option<Duration>) -> anyhow::Result<Self> {
        let screen = Screen::enter()?;
        let mut tui = Self {
            screen,
            state: State::new(interval, window.map(|w| Instant::now() + w)),
        };
        tui.draw()?;
        Ok(tui)
    }

    /// Shows a new snapshot.
    pub fn show(&mut self, report: Report) -> anyhow::Result<()> {
        self.state.ingest(report, Instant::now());
        self.draw()
    }

    /// Replay: shows `reports` (the moment replayed, after the ones before it that fill the
    /// sparklines) with `status` on the header; sort, filter and selection are kept.
    pub fn replay(&mut self, reports: Vec<Report>, status: String) -> anyhow::Result<()> {
        self.state.forget_reports();
        let now = Instant::now();
        for r in reports {
            self.state.ingest(r, now);
        }
        self.state.replay = Some(status);
        self.draw()
    }

    /// Replay: changes the header's status line only.
    pub fn replay_status(&mut self, status: String) -> anyhow::Result<()> {
        self.state.replay = Some(status);
        self.draw()
    }

    /// True while the filter line takes keys.
    pub fn filtering(&self) -> bool {
        self.state.editing
    }

    /// Handles a key or a resize; returns true when it asks to quit.
    pub fn input(&mut self, input: Input) -> anyhow::Result<bool> {
        let action = match input {
            Input::Key(k) => keys::action(k, self.state.editing),
            Input::Resize => Action::Redraw,
        };
        if action == Action::Quit {
            return Ok(true);
        }
        self.state.apply(action);
        self.draw()?;
        Ok(false)
    }

    fn draw(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let size = self.screen.term.size()?;
        self.state.page = view::page_for(size.height);
        let state = &self.state;
        self.screen.term.draw(|f| view::draw(f, state, now))?;
        Ok(())
    }
}
