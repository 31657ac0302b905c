//! The pane of `--view -- CMD`: the last lines of what the command writes on its
//! pseudo-terminal, below the view. The bytes go through a terminal emulator (`vt100`: the
//! parser and screen of a VT100/xterm of the pane's size), never to the real terminal, so
//! whatever the command writes — escape sequences, a progress bar's `\r`, a thousand lines
//! at once — changes only the pane's own cells. Keys go to the view until Tab hands them to
//! the command (`keys::command_key`), and Ctrl-] gives them back.

use std::os::fd::OwnedFd;

use ratatui::{
    Frame,
    layout::{Position, Rect},
    style::{Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Borders, Paragraph},
};

/// The fewest rows the view keeps for itself (header 2, a table of 3, footer 1).
const VIEW_MIN: u16 = 6;
/// The fewest rows of the pane (its title line and one of output).
const PANE_MIN: u16 = 2;

/// Rows of the pane (its title line included) on a terminal `height` rows high: a third,
/// at least 4, leaving the view its [`VIEW_MIN`] rows while it can.
pub fn height_for(height: u16) -> u16 {
    let want = (height / 3).max(4);
    want.min(height.saturating_sub(VIEW_MIN)).max(PANE_MIN)
}

/// The pseudo-terminal's size (rows, columns) for a terminal of `cols` × `rows`: the pane's
/// inside.
pub fn pty_size(cols: u16, rows: u16) -> (u16, u16) {
    ((height_for(rows) - 1).max(1), cols.max(1))
}

/// [`pty_size`] of the terminal procnetmon2 runs on (80×24 when it cannot tell).
pub fn pty_size_now() -> (u16, u16) {
    let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
    pty_size(cols, rows)
}

/// What the command shows, and who gets the keys.
pub struct Pane {
    /// The command line, shown in the title.
    title: String,
    screen: vt100::Parser,
    /// Keys go to the command (else to the view).
    keys: bool,
    /// The pseudo-terminal's master: keys are written to it, its size set (None in tests).
    pty: Option<OwnedFd>,
}

impl Pane {
    /// A pane for `command` on a pseudo-terminal of `size` (rows, columns).
    pub fn new(command: &[String], size: (u16, u16), pty: Option<OwnedFd>) -> Self {
        let title: String = command
            .join(" ")
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let (rows, cols) = nonzero(size);
        Self {
            title,
            screen: vt100::Parser::new(rows, cols, 0),
            keys: false,
            pty,
        }
    }

    /// What the command wrote.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.screen.process(bytes);
    }

    /// The terminal is now `cols` × `rows`: the pane and its pseudo-terminal follow (the
    /// command gets SIGWINCH).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        let size = pty_size(cols, rows);
        let (r, c) = nonzero(size);
        if self.screen.screen().size() == (r, c) {
            return;
        }
        self.screen.screen_mut().set_size(r, c);
        if let Some(fd) = &self.pty {
            let ws = rustix::termios::Winsize {
                ws_row: size.0,
                ws_col: size.1,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if let Err(e) = rustix::termios::tcsetwinsize(fd, ws) {
                log::debug!("resize the command's pseudo-terminal: {e}");
            }
        }
    }

    /// The screen's rows, top to bottom (as many as the pane is high).
    pub fn rows(&self) -> Vec<String> {
        let (_, cols) = self.screen.screen().size();
        self.screen.screen().rows(0, cols.get()).collect()
    }

    /// The rows down to the last one with text (what is printed when the view closes).
    pub fn last_lines(&self) -> Vec<String> {
        let mut rows: Vec<String> = self
            .rows()
            .into_iter()
            .map(|r| r.trim_end().to_owned())
            .collect();
        while rows.last().is_some_and(String::is_empty) {
            rows.pop();
        }
        rows
    }

    /// True while keys go to the command.
    pub fn has_keys(&self) -> bool {
        self.keys
    }

    /// Keys go to the command (`true`) or to the view.
    pub fn give_keys(&mut self, to_command: bool) {
        self.keys = to_command;
    }

    /// True when the command asked for application cursor keys (`ESC O A` for Up).
    pub fn application_cursor(&self) -> bool {
        self.screen.screen().application_cursor()
    }

    /// Writes `bytes` (a key) to the command. A command that does not read its input lets
    /// the pseudo-terminal's buffer fill: then the key is dropped rather than block the view.
    pub fn send(&mut self, bytes: &[u8]) {
        let Some(fd) = &self.pty else {
            return;
        };
        if let Err(e) = nix::unistd::write(fd, bytes) {
            log::debug!("a key for the command: {e}");
        }
    }

    /// Reads what the command wrote and the loop has not read yet (its last words before
    /// it exited), without waiting.
    pub fn drain(&mut self) {
        let mut buf = [0_u8; 16 * 1024];
        for _ in 0..64 {
            let n = match &self.pty {
                Some(fd) => nix::unistd::read(fd, &mut buf).unwrap_or(0),
                None => 0,
            };
            if n == 0 {
                break;
            }
            self.screen.process(&buf[..n]);
        }
    }

    /// Draws the pane in `area`: a title line, then the screen's rows; with the keys, the
    /// cursor where the command's is.
    pub fn draw(&self, f: &mut Frame<'_>, area: Rect) {
        let bold = Style::new().add_modifier(Modifier::BOLD);
        // The hint first: a long command line is cut at the pane's width.
        let title = if self.keys {
            Line::from(vec![
                Span::styled(
                    " keys go to the command (Ctrl-] gives them back) ",
                    bold.add_modifier(Modifier::REVERSED),
                ),
                Span::styled(format!(" {} ", self.title), bold),
            ])
        } else {
            Line::from(vec![
                Span::raw(" Tab: keys to the command "),
                Span::styled(format!(" {} ", self.title), bold),
            ])
        };
        let block = Block::new().borders(Borders::TOP).title(title);
        let inner = block.inner(area);
        let lines: Vec<Line<'_>> = self.rows().into_iter().map(Line::from).collect();
        f.render_widget(Paragraph::new(lines).block(block), area);
        let screen = self.screen.screen();
        if self.keys && !screen.hide_cursor() {
            let (row, col) = screen.cursor_position();
            if row < inner.height && col < inner.width {
                f.set_cursor_position(Position::new(inner.x + col, inner.y + row));
            }
        }
    }
}

fn nonzero((rows, cols): (u16, u16)) -> (std::num::NonZeroU16, std::num::NonZeroU16) {
    let one = std::num::NonZeroU16::MIN;
    (
        std::num::NonZeroU16::new(rows).unwrap_or(one),
        std::num::NonZeroU16::new(cols).unwrap_or(one),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pane(rows: u16, cols: u16) -> Pane {
        Pane::new(
            &["sh".into(), "-c".into(), "x\x1b".into()],
            (rows, cols),
            None,
        )
    }

    #[test]
    fn the_pane_takes_a_third_and_leaves_the_view_its_rows() {
        // (terminal rows) → pane rows, title included
        for (h, want) in [(30, 10), (24, 8), (12, 4), (9, 3), (7, 2), (4, 2), (60, 20)] {
            assert_eq!(height_for(h), want, "{h}");
        }
        assert_eq!(pty_size(150, 30), (9, 150));
        assert_eq!(pty_size(0, 0), (1, 1));
    }

    /// The last lines show; what scrolled off is gone; escape sequences, colours and
    /// carriage returns act on the pane's own screen and never appear as text.
    #[test]
    fn the_last_lines_of_what_the_command_wrote() {
        let mut p = pane(3, 20);
        for i in 0..1000 {
            p.feed(format!("line {i}\r\n").as_bytes());
        }
        assert_eq!(p.last_lines(), ["line 998", "line 999"]);
        assert_eq!(p.rows().len(), 3);
        let mut p = pane(3, 20);
        p.feed(b"\x1b[31mred\x1b[0m \x1b]0;title\x07ok\r\n");
        p.feed(b"10%\r50%\r100%\r\n");
        p.feed(b"\x1b[2J\x1b[Hcleared");
        assert_eq!(p.last_lines(), ["cleared"]);
        let mut p = pane(3, 20);
        p.feed(b"\x1b[31mred\x1b[0m \x1b]0;title\x07ok\r\n10%\r50%\r100%\r\n");
        assert_eq!(p.last_lines(), ["red ok", "100%"]);
        for row in p.rows() {
            assert!(!row.chars().any(char::is_control), "{row:?}");
        }
        // A line longer than the pane wraps inside it.
        let mut p = pane(3, 4);
        p.feed(b"abcdefgh");
        assert_eq!(p.last_lines(), ["abcd", "efgh"]);
    }

    #[test]
    fn resizing_keeps_the_screen_and_the_title_is_printable() {
        let mut p = pane(8, 40);
        p.feed(b"hello\r\n");
        p.resize(100, 30);
        assert_eq!(p.rows().len(), 9);
        assert_eq!(p.last_lines(), ["hello"]);
        assert!(!p.title.chars().any(char::is_control), "{}", p.title);
        assert!(!p.has_keys());
        p.give_keys(true);
        assert!(p.has_keys());
    }
}
