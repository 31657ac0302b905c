//! The interactive view (`procnetmon2 -p …` on a terminal): a live table of processes and
//! workloads, the connections of one row, and the remote hosts they talk to, driven by keys.
//!
//! It renders from [`Report`] — what `Session::snapshot` returns each interval, the same
//! value the table and JSON are written from — plus its own [`state::State`] (sparkline
//! history, closed connections, sort, filter, pause). Keys arrive as `Event::Input` from
//! `events`; quitting is `Event::Quit`, which stops the run through `session::decide` like
//! any other stop, so every clean-up still happens. `render/` (the scripts' contract) is
//! untouched; the view is chosen in `config` (`Output::View`). With `--view -- CMD` the
//! command's pseudo-terminal shows in a [`pane::Pane`] below the view, which gets the keys
//! after Tab.

pub mod keys;
pub mod pane;
pub mod state;
pub mod terminal;
pub mod view;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod view_tests;

use std::time::{Duration, Instant};

use keys::{Action, Input};
use pane::Pane;
use ratatui::layout::{Constraint, Layout};
use state::State;
use terminal::Screen;

use crate::model::Report;

/// The open view: the terminal and what is shown on it.
pub struct Tui {
    screen: Screen,
    state: State,
    /// The command's pane (`--view -- CMD`).
    pane: Option<Pane>,
}

impl Tui {
    /// Opens the view for a run reporting every `interval`, with a `-t` window of `window`,
    /// and the pane of a command on a pseudo-terminal, if any.
    pub fn open(
        interval: Duration,
        window: Option<Duration>,
        pane: Option<Pane>,
    ) -> anyhow::Result<Self> {
        let screen = Screen::enter()?;
        let mut tui = Self {
            screen,
            state: State::new(interval, window.map(|w| Instant::now() + w)),
            pane,
        };
        tui.draw()?;
        Ok(tui)
    }

    /// Shows a new snapshot.
    pub fn show(&mut self, report: Report) -> anyhow::Result<()> {
        self.state.ingest(report, Instant::now());
        self.draw()
    }

    /// Shows what the command wrote on its pseudo-terminal, in its pane.
    pub fn command_output(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match &mut self.pane {
            Some(p) => p.feed(bytes),
            None => return Ok(()),
        }
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
        let action = match (input, &self.pane) {
            (Input::Key(k), Some(p)) if p.has_keys() => keys::command_key(k),
            (Input::Key(k), _) => keys::action(k, self.state.editing),
            (Input::Resize, _) => Action::Redraw,
        };
        match (action, &mut self.pane) {
            (Action::Quit, _) => return Ok(true),
            (Action::KeysToCommand | Action::KeysToView, Some(p)) => {
                p.give_keys(action == Action::KeysToCommand);
            }
            (Action::ToCommand(k), Some(p)) => {
                let bytes = keys::encode(k, p.application_cursor());
                p.send(&bytes);
                // The command's echo redraws the pane.
                return Ok(false);
            }
            (Action::KeysToCommand | Action::KeysToView | Action::ToCommand(_), None) => {}
            (action, _) => self.state.apply(action),
        }
        self.draw()?;
        Ok(false)
    }

    /// Closes the view (the terminal is given back) and returns the last lines the
    /// command's pane showed, with what it wrote last, to print after it.
    pub fn close(self) -> Vec<String> {
        let Self { screen, pane, .. } = self;
        drop(screen);
        pane.map(|mut p| {
            p.drain();
            p.last_lines()
        })
        .unwrap_or_default()
    }

    fn draw(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let size = self.screen.term.size()?;
        let pane_rows = self
            .pane
            .as_ref()
            .map_or(0, |_| pane::height_for(size.height));
        if let Some(p) = &mut self.pane {
            p.resize(size.width, size.height);
        }
        self.state.page = view::page_for(size.height - pane_rows);
        let (state, pane) = (&self.state, self.pane.as_ref());
        self.screen.term.draw(|f| {
            let [main, below] =
                Layout::vertical([Constraint::Min(0), Constraint::Length(pane_rows)])
                    .areas(f.area());
            view::draw_in(f, main, state, now);
            if let Some(p) = pane {
                p.draw(f, below);
            }
        })?;
        Ok(())
    }
}
