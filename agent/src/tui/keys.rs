//! Keys of the interactive view: what the terminal sends ([`Input`]) and what it means
//! ([`Action`]). The meaning depends on one bit of state — whether the filter line is being
//! edited — so that typing `q` into a filter does not quit. Pure and table-tested.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What the terminal sent that the view cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// A key press.
    Key(KeyEvent),
    /// The terminal changed size.
    Resize,
}

/// Which list a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum View {
    /// Processes / workloads.
    #[default]
    Rows,
    /// Connections of the selected row.
    Connections,
    /// Remote hosts of the selected row (or of every row).
    Hosts,
}

/// What a key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the view and end the run (`q`, Ctrl-C).
    Quit,
    /// Next sort column (`s`).
    SortNext,
    /// Reverse the sort (`S`).
    SortReverse,
    /// Start editing the filter (`/`).
    FilterStart,
    /// A character typed into the filter.
    FilterChar(char),
    /// Delete the filter's last character.
    FilterBackspace,
    /// Keep the filter and stop editing (Enter).
    FilterDone,
    /// Drop the filter (Esc while editing).
    FilterCancel,
    /// Freeze / unfreeze the figures shown (space); counting goes on.
    Pause,
    /// Rates in bits or bytes per second (`b`).
    Bits,
    /// Sparklines of rates or of running totals (`t`).
    RatesTotals,
    /// Remote hosts with or without the port (`p`).
    Ports,
    /// Remote hosts of the selected row or of every row (`a`).
    AllRows,
    /// Forget ended processes and closed connections (`c`).
    ClearEnded,
    /// Switch to a view (`1`, `2`, `3`).
    Show(View),
    /// Open the selected row's connections (Enter).
    Open,
    /// Back to the rows (Esc).
    Back,
    /// Move the selection by this many lines.
    Move(i32),
    /// One page up / down.
    Page(i32),
    /// First line.
    Home,
    /// Last line.
    End,
    /// Show / hide the key help (`?`).
    Help,
    /// Only redraw (a resize, or a key without meaning).
    Redraw,
}

/// What `key` means; `editing` while the filter line takes text.
pub fn action(key: KeyEvent, editing: bool) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Redraw;
    }
    // Raw mode turns Ctrl-C into a key: it quits like `q`, whatever the mode.
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        return Action::Quit;
    }
    if editing {
        return match key.code {
            KeyCode::Char(c) => Action::FilterChar(c),
            KeyCode::Backspace => Action::FilterBackspace,
            KeyCode::Enter => Action::FilterDone,
            KeyCode::Esc => Action::FilterCancel,
            _ => Action::Redraw,
        };
    }
    match key.code {
        KeyCode::Char('q') => Action::Quit,
        KeyCode::Char('s') => Action::SortNext,
        KeyCode::Char('S') => Action::SortReverse,
        KeyCode::Char('/') => Action::FilterStart,
        KeyCode::Char(' ') => Action::Pause,
        KeyCode::Char('b') => Action::Bits,
        KeyCode::Char('t') => Action::RatesTotals,
        KeyCode::Char('p') => Action::Ports,
        KeyCode::Char('a') => Action::AllRows,
        KeyCode::Char('c') => Action::ClearEnded,
        KeyCode::Char('1') => Action::Show(View::Rows),
        KeyCode::Char('2') => Action::Show(View::Connections),
        KeyCode::Char('3') => Action::Show(View::Hosts),
        KeyCode::Char('?') => Action::Help,
        KeyCode::Enter => Action::Open,
        KeyCode::Esc => Action::Back,
        KeyCode::Up | KeyCode::Char('k') => Action::Move(-1),
        KeyCode::Down | KeyCode::Char('j') => Action::Move(1),
        KeyCode::PageUp => Action::Page(-1),
        KeyCode::PageDown => Action::Page(1),
        KeyCode::Home | KeyCode::Char('g') => Action::Home,
        KeyCode::End | KeyCode::Char('G') => Action::End,
        _ => Action::Redraw,
    }
}

/// The help text: one line per key (shown with `?`, and in README).
pub const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit (the run ends, every clean-up happens)"),
    ("s / S", "next sort column / reverse the sort"),
    (
        "/",
        "filter: name, pid, pod:NAME, ns:NAMESPACE, port:N, host:ADDR",
    ),
    ("space", "pause the figures (counting goes on)"),
    ("b", "rates in bits or bytes per second"),
    ("t", "sparklines of rates or of running totals"),
    ("Enter / Esc", "connections of the selected row / back"),
    ("1 2 3", "processes, connections, remote hosts"),
    ("p", "remote hosts with or without the port"),
    ("a", "remote hosts of the selected row or of every row"),
    ("c", "forget ended processes and closed connections"),
    ("arrows PgUp PgDn Home End", "move"),
    ("?", "this help"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn k(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn keys_mean_what_help_says() {
        let table = [
            (k(KeyCode::Char('q')), false, Action::Quit),
            (k(KeyCode::Char('q')), true, Action::FilterChar('q')),
            (
                KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
                true,
                Action::Quit,
            ),
            (k(KeyCode::Char('c')), false, Action::ClearEnded),
            (k(KeyCode::Char('s')), false, Action::SortNext),
            (k(KeyCode::Char('S')), false, Action::SortReverse),
            (k(KeyCode::Char('/')), false, Action::FilterStart),
            (k(KeyCode::Enter), true, Action::FilterDone),
            (k(KeyCode::Esc), true, Action::FilterCancel),
            (k(KeyCode::Backspace), true, Action::FilterBackspace),
            (k(KeyCode::Char(' ')), false, Action::Pause),
            (
                k(KeyCode::Char('2')),
                false,
                Action::Show(View::Connections),
            ),
            (k(KeyCode::Enter), false, Action::Open),
            (k(KeyCode::Esc), false, Action::Back),
            (k(KeyCode::Down), false, Action::Move(1)),
            (k(KeyCode::PageUp), false, Action::Page(-1)),
            (k(KeyCode::End), false, Action::End),
            (k(KeyCode::F(5)), false, Action::Redraw),
        ];
        for (key, editing, want) in table {
            assert_eq!(action(key, editing), want, "{key:?} editing={editing}");
        }
    }
}
