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
    /// Hand the keys to the command in the pane (Tab; `--view -- CMD`).
    KeysToCommand,
    /// Give the keys back to the view (Ctrl-], while the command has them).
    KeysToView,
    /// A key for the command in the pane.
    ToCommand(KeyEvent),
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
        KeyCode::Tab => Action::KeysToCommand,
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

/// What `key` means while the command in the pane has the keys: Ctrl-] gives them back
/// to the view, every other key (Ctrl-C, Ctrl-Z, Esc, `q` included) is the command's.
pub fn command_key(key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::Redraw;
    }
    // Ctrl-] is byte 0x1d, which crossterm reads as Ctrl-5 (as it reads 0x1c-0x1f as
    // Ctrl-4 to Ctrl-7); a terminal with the kitty protocol sends Ctrl-].
    if key.modifiers.contains(KeyModifiers::CONTROL) && matches!(key.code, KeyCode::Char(']' | '5'))
    {
        return Action::KeysToView;
    }
    Action::ToCommand(key)
}

/// The bytes a terminal sends for `key` (xterm's encoding), for the command's
/// pseudo-terminal; `app_cursor` when the command asked for application cursor keys.
/// Keys a terminal cannot send (media keys, a lone modifier) give nothing.
pub fn encode(key: KeyEvent, app_cursor: bool) -> Vec<u8> {
    let m = key.modifiers;
    let ctrl = m.contains(KeyModifiers::CONTROL);
    let alt = m.contains(KeyModifiers::ALT);
    // xterm's modifier parameter: 1 + shift + 2 alt + 4 ctrl.
    let param =
        1 + u8::from(m.contains(KeyModifiers::SHIFT)) + 2 * u8::from(alt) + 4 * u8::from(ctrl);
    let csi = |last: char| -> Vec<u8> {
        if param > 1 {
            format!("\x1b[1;{param}{last}").into_bytes()
        } else if app_cursor {
            format!("\x1bO{last}").into_bytes()
        } else {
            format!("\x1b[{last}").into_bytes()
        }
    };
    let tilde = |n: u8| -> Vec<u8> {
        if param > 1 {
            format!("\x1b[{n};{param}~").into_bytes()
        } else {
            format!("\x1b[{n}~").into_bytes()
        }
    };
    let body = match key.code {
        KeyCode::Char(c) if ctrl => match control_byte(c) {
            Some(b) => vec![b],
            None => c.to_string().into_bytes(),
        },
        KeyCode::Char(c) => c.to_string().into_bytes(),
        KeyCode::Enter => vec![b'\r'],
        KeyCode::Tab => vec![b'\t'],
        KeyCode::BackTab => b"\x1b[Z".to_vec(),
        KeyCode::Backspace => vec![0x7f],
        KeyCode::Esc => vec![0x1b],
        KeyCode::Up => csi('A'),
        KeyCode::Down => csi('B'),
        KeyCode::Right => csi('C'),
        KeyCode::Left => csi('D'),
        KeyCode::Home => csi('H'),
        KeyCode::End => csi('F'),
        KeyCode::Insert => tilde(2),
        KeyCode::Delete => tilde(3),
        KeyCode::PageUp => tilde(5),
        KeyCode::PageDown => tilde(6),
        KeyCode::F(n @ 1..=4) => format!("\x1bO{}", char::from(b'P' + n - 1)).into_bytes(),
        KeyCode::F(n @ 5..=12) => tilde([15, 17, 18, 19, 20, 21, 23, 24][usize::from(n - 5)]),
        _ => return Vec::new(),
    };
    // Alt prefixes ESC to a character (as xterm's metaSendsEscape); other keys carry it in
    // their modifier parameter.
    if alt
        && matches!(
            key.code,
            KeyCode::Char(_) | KeyCode::Enter | KeyCode::Backspace
        )
    {
        let mut v = vec![0x1b];
        v.extend(body);
        return v;
    }
    body
}

/// The control byte of Ctrl-`c` (Ctrl-A = 1 … Ctrl-Z = 26, Ctrl-[ = ESC, Ctrl-] = 0x1d, …),
/// also for the digits crossterm reads control bytes 0x1c-0x1f and 0 as.
fn control_byte(c: char) -> Option<u8> {
    match c {
        'a'..='z' | 'A'..='Z' => Some((c.to_ascii_lowercase() as u8) & 0x1f),
        ' ' | '@' | '2' => Some(0),
        '[' | '3' => Some(0x1b),
        '\\' | '4' => Some(0x1c),
        ']' | '5' => Some(0x1d),
        '^' | '6' => Some(0x1e),
        '_' | '/' | '7' => Some(0x1f),
        '?' | '8' => Some(0x7f),
        _ => None,
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
    (
        "Tab / Ctrl-]",
        "--view -- CMD: keys to the command in the pane / back to the view",
    ),
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

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    /// Tab hands the keys to the command; then every key is the command's, Ctrl-C and `q`
    /// included, except Ctrl-] (which crossterm may read as Ctrl-5), which gives them back.
    #[test]
    fn keys_handed_to_the_command_and_back() {
        assert_eq!(action(k(KeyCode::Tab), false), Action::KeysToCommand);
        assert_eq!(action(k(KeyCode::Tab), true), Action::Redraw);
        for key in [ctrl(']'), ctrl('5')] {
            assert_eq!(command_key(key), Action::KeysToView, "{key:?}");
        }
        for key in [
            ctrl('c'),
            ctrl('z'),
            k(KeyCode::Char('q')),
            k(KeyCode::Esc),
            k(KeyCode::Tab),
            k(KeyCode::Char(']')),
        ] {
            assert_eq!(command_key(key), Action::ToCommand(key), "{key:?}");
        }
    }

    #[test]
    fn keys_encoded_as_a_terminal_sends_them() {
        let alt = |c: KeyCode| KeyEvent::new(c, KeyModifiers::ALT);
        let shift = |c: KeyCode| KeyEvent::new(c, KeyModifiers::SHIFT);
        let table: &[(KeyEvent, bool, &[u8])] = &[
            (k(KeyCode::Char('x')), false, b"x"),
            (shift(KeyCode::Char('X')), false, b"X"),
            (k(KeyCode::Char('é')), false, "é".as_bytes()),
            (ctrl('c'), false, b"\x03"),
            (ctrl('Z'), false, b"\x1a"),
            (ctrl('d'), false, b"\x04"),
            (ctrl(' '), false, b"\x00"),
            (ctrl('4'), false, b"\x1c"),
            (alt(KeyCode::Char('b')), false, b"\x1bb"),
            (k(KeyCode::Enter), false, b"\r"),
            (k(KeyCode::Tab), false, b"\t"),
            (k(KeyCode::BackTab), false, b"\x1b[Z"),
            (k(KeyCode::Backspace), false, b"\x7f"),
            (k(KeyCode::Esc), false, b"\x1b"),
            (k(KeyCode::Up), false, b"\x1b[A"),
            (k(KeyCode::Up), true, b"\x1bOA"),
            (k(KeyCode::Left), false, b"\x1b[D"),
            (
                KeyEvent::new(KeyCode::Right, KeyModifiers::CONTROL),
                true,
                b"\x1b[1;5C",
            ),
            (k(KeyCode::Home), false, b"\x1b[H"),
            (k(KeyCode::End), true, b"\x1bOF"),
            (k(KeyCode::PageDown), false, b"\x1b[6~"),
            (k(KeyCode::Delete), false, b"\x1b[3~"),
            (shift(KeyCode::Delete), false, b"\x1b[3;2~"),
            (k(KeyCode::F(1)), false, b"\x1bOP"),
            (k(KeyCode::F(5)), false, b"\x1b[15~"),
            (k(KeyCode::F(12)), false, b"\x1b[24~"),
            (k(KeyCode::F(20)), false, b""),
            (k(KeyCode::CapsLock), false, b""),
        ];
        for &(key, app, want) in table {
            assert_eq!(encode(key, app), want, "{key:?} app_cursor={app}");
        }
    }
}
