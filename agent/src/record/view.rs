//! The interactive replay view: the live view (`tui`) showing a recorded moment, with a
//! status line ("REPLAY", the frame's time, a gap before it) and keys of its own to move
//! through time: ← → (or , .) one interval, [ ] one minute, < > the start and end, J to jump
//! to a time (RFC 3339, `03:12`, `+5m`/`-1h` from the frame shown, `3m ago`). Every other
//! key is the live view's (sort, filter, connections, remote hosts, q). `--follow` keeps the
//! view at the end as frames are written.
//!
//! [`Player`] decides where a key leads (pure over a [`Recording`], tested without a
//! terminal); [`run`] is the terminal loop.

use std::{path::PathBuf, time::Duration};

use chrono::{NaiveTime, TimeZone as _};
use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::{
    codec::Frame,
    convert::{report_of, timestamp},
    reader::{Pos, Recording},
};
use crate::{
    model::Report,
    tui::{Tui, keys::Input, state::HISTORY},
};

/// Where the replay is and what it shows.
pub struct Player {
    rec: Recording,
    pos: Pos,
    frame: Frame,
    /// A gap (no frame recorded) just before the frame shown.
    gap: Option<Duration>,
}

/// A move a replay key asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// One interval back.
    Back,
    /// One interval on.
    Forward,
    /// By this many seconds.
    By(i64),
    /// The first frame.
    Start,
    /// The last frame.
    End,
}

impl Player {
    /// Opens at the last frame at or before `at` (None: the recording's end).
    pub fn new(rec: Recording, at: Option<i64>) -> Option<Self> {
        let t = at.unwrap_or(rec.span().1);
        let (pos, frame) = rec.locate(t)?;
        let mut p = Self {
            rec,
            pos,
            frame,
            gap: None,
        };
        p.note_gap(None);
        Some(p)
    }

    /// The frame shown.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// The run's interval at the frame shown.
    fn interval_ns(&self) -> i64 {
        let ns = self.rec.segments[self.pos.seg].meta().interval_ns;
        i64::try_from(ns).unwrap_or(i64::MAX)
    }

    /// Moves; returns false when there is nowhere to go.
    pub fn go(&mut self, m: Move) -> bool {
        let target = match m {
            Move::Back => self.prev_pos(),
            Move::Forward => self.next_pos(),
            Move::By(s) => {
                return self.jump(
                    self.frame
                        .time_ns
                        .saturating_add(s.saturating_mul(1_000_000_000)),
                );
            }
            Move::Start => return self.jump(i64::MIN),
            Move::End => return self.jump(self.rec.span().1),
        };
        let Some(pos) = target else {
            return false;
        };
        let Some(frame) = self.rec.frame_at(pos) else {
            return false;
        };
        let before = self.frame.time_ns;
        self.pos = pos;
        self.frame = frame;
        self.note_gap(Some(before));
        true
    }

    /// Shows the last frame at or before `t` (the first when `t` is earlier).
    pub fn jump(&mut self, t: i64) -> bool {
        let Some((pos, frame)) = self.rec.locate(t) else {
            return false;
        };
        let moved = pos != self.pos;
        self.pos = pos;
        self.frame = frame;
        self.note_gap(None);
        moved
    }

    fn next_pos(&self) -> Option<Pos> {
        let p = self.pos;
        if p.frame + 1 < self.rec.part_len(p.seg, p.part) {
            return Some(Pos {
                frame: p.frame + 1,
                ..p
            });
        }
        let (seg, part) = self.rec.next_part(p.seg, p.part)?;
        Some(Pos {
            seg,
            part,
            frame: 0,
        })
    }

    fn prev_pos(&self) -> Option<Pos> {
        let p = self.pos;
        if p.frame > 0 {
            return Some(Pos {
                frame: p.frame - 1,
                ..p
            });
        }
        let (seg, part) = self.rec.prev_part(p.seg, p.part)?;
        let n = self.rec.part_len(seg, part);
        (n > 0).then(|| Pos {
            seg,
            part,
            frame: n - 1,
        })
    }

    /// Notes a gap before the frame shown: more than one and a half intervals since the frame
    /// before it (`before`, when known; else the frame before it is looked up).
    fn note_gap(&mut self, before: Option<i64>) {
        let t = self.frame.time_ns;
        let prev = match before.filter(|b| *b < t) {
            Some(b) => Some(b),
            None => self
                .prev_pos()
                .and_then(|p| self.rec.frame_at(p))
                .map(|f| f.time_ns),
        };
        self.gap = prev
            .map(|p| t - p)
            .filter(|d| *d * 2 > self.interval_ns() * 3)
            .map(|d| Duration::from_nanos(u64::try_from(d).unwrap_or(0)));
    }

    /// The reports to show: the ones of the last minute (the sparklines), ending with the
    /// frame shown.
    pub fn reports(&self) -> Vec<Report> {
        let t = self.frame.time_ns;
        let from = t - i64::try_from(HISTORY.as_nanos()).unwrap_or(0);
        let run = &self.rec.segments[self.pos.seg].meta().run;
        let mut out: Vec<Report> = self
            .rec
            .frames(Some(from))
            .skip_while(|(_, f)| f.time_ns <= from)
            .take_while(|(_, f)| f.time_ns < t)
            .filter(|(s, _)| &self.rec.segments[*s].meta().run == run)
            .map(|(_, f)| report_of(&f))
            .collect();
        out.push(report_of(&self.frame));
        out
    }

    /// The status line: the frame's time, its run, a gap before it, the keys.
    pub fn status(&self, prompt: Option<&str>) -> String {
        let f = &self.frame;
        // To the millisecond when the interval is not whole seconds.
        let fmt = if self.interval_ns() % 1_000_000_000 == 0 {
            "%Y-%m-%d %H:%M:%S%:z"
        } else {
            "%Y-%m-%d %H:%M:%S%.3f%:z"
        };
        let when = timestamp(f.time_ns, f.offset_s).format(fmt);
        let (first, last) = self.rec.span();
        let mut s = format!("{when}");
        if let Some(g) = self.gap {
            s.push_str(&format!(
                "  (a gap of {} before: nothing recorded)",
                humantime::format_duration(Duration::from_secs(g.as_secs()))
            ));
        }
        if f.time_ns == last {
            s.push_str("  [end]");
        } else if f.time_ns == first {
            s.push_str("  [start]");
        }
        match prompt {
            Some(p) => s.push_str(&format!("  jump to: {p}█")),
            None => s.push_str("  ←→ step  [] minute  <> start/end  J jump"),
        }
        s
    }

    /// `--follow`: reopens the recording and moves to its end when the frame shown was the
    /// end. Returns true when it moved.
    pub fn refresh(&mut self, dir: &std::path::Path) -> bool {
        let at_end = self.frame.time_ns >= self.rec.span().1;
        let Ok(rec) = Recording::open(dir) else {
            return false;
        };
        let t = if at_end {
            rec.span().1
        } else {
            self.frame.time_ns
        };
        let Some((pos, frame)) = rec.locate(t) else {
            return false;
        };
        let moved = frame.time_ns != self.frame.time_ns;
        let before = self.frame.time_ns;
        self.rec = rec;
        self.pos = pos;
        self.frame = frame;
        self.note_gap(Some(before));
        moved
    }
}

/// A time typed at the jump prompt: RFC 3339, `HH:MM[:SS]` (the frame's day, in its UTC
/// offset), `+5m` / `-1h` (from the frame shown), or `3m ago` (from now).
pub fn parse_jump(
    text: &str,
    frame_ns: i64,
    offset_s: i32,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<i64> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix('+').or_else(|| t.strip_prefix('-')) {
        let d = i64::try_from(humantime::parse_duration(rest.trim()).ok()?.as_nanos()).ok()?;
        return Some(if t.starts_with('-') {
            frame_ns - d
        } else {
            frame_ns + d
        });
    }
    if let Ok(ns) = super::replay::parse_time("jump", t, now) {
        return Some(ns);
    }
    let clock = NaiveTime::parse_from_str(t, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(t, "%H:%M"))
        .ok()?;
    let day = timestamp(frame_ns, offset_s).date_naive();
    let local = timestamp(frame_ns, offset_s).timezone();
    local
        .from_local_datetime(&day.and_time(clock))
        .single()?
        .timestamp_nanos_opt()
}

/// What a key does in the replay: a move, the jump prompt, or the live view's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayKey {
    /// Move in time.
    Go(Move),
    /// Open the jump prompt.
    Jump,
    /// Not a replay key: the live view's.
    View,
}

/// The replay meaning of `key` (the live view's filter line takes every key while open).
pub fn replay_key(key: KeyEvent, filtering: bool) -> ReplayKey {
    if filtering
        || key.kind == KeyEventKind::Release
        || key.modifiers.contains(KeyModifiers::CONTROL)
    {
        return ReplayKey::View;
    }
    match key.code {
        KeyCode::Left | KeyCode::Char(',') => ReplayKey::Go(Move::Back),
        KeyCode::Right | KeyCode::Char('.') => ReplayKey::Go(Move::Forward),
        KeyCode::Char('[') => ReplayKey::Go(Move::By(-60)),
        KeyCode::Char(']') => ReplayKey::Go(Move::By(60)),
        KeyCode::Char('<') => ReplayKey::Go(Move::Start),
        KeyCode::Char('>') => ReplayKey::Go(Move::End),
        KeyCode::Char('J') => ReplayKey::Jump,
        _ => ReplayKey::View,
    }
}

/// The view over `rec`, opened at `at` (None: the end). Returns when quit.
pub fn run(rec: Recording, at: Option<i64>) -> anyhow::Result<u8> {
    let dir = rec.dir.clone();
    event_loop(rec, at, None, dir)
}

/// The view kept at the end of a recording being written.
pub fn follow(dir: PathBuf, rec: Recording) -> anyhow::Result<u8> {
    let every = rec
        .segments
        .last()
        .map_or(Duration::from_secs(1), |s| {
            Duration::from_nanos(s.meta().interval_ns)
        })
        .clamp(Duration::from_millis(100), Duration::from_secs(10));
    event_loop(rec, None, Some(every), dir)
}

fn event_loop(
    rec: Recording,
    at: Option<i64>,
    follow: Option<Duration>,
    dir: PathBuf,
) -> anyhow::Result<u8> {
    let Some(mut p) = Player::new(rec, at) else {
        anyhow::bail!("{}: no frame to show", dir.display());
    };
    let interval = Duration::from_nanos(u64::try_from(p.interval_ns()).unwrap_or(1_000_000_000));
    let mut tui = Tui::open(interval, None, None)?;
    tui.replay(p.reports(), p.status(None))?;
    let mut prompt: Option<String> = None;
    loop {
        let wait = follow.unwrap_or(Duration::from_secs(3600));
        if !event::poll(wait)? {
            if follow.is_some() && p.refresh(&dir) {
                tui.replay(p.reports(), p.status(prompt.as_deref()))?;
            }
            continue;
        }
        let key = match event::read()? {
            TermEvent::Key(k) => k,
            TermEvent::Resize(..) => {
                tui.input(Input::Resize)?;
                continue;
            }
            _ => continue,
        };
        if let Some(text) = &mut prompt {
            if key.kind == KeyEventKind::Release {
                continue;
            }
            match key.code {
                KeyCode::Esc => prompt = None,
                KeyCode::Enter => {
                    let now = chrono::Utc::now();
                    let target = parse_jump(text, p.frame().time_ns, p.frame().offset_s, now);
                    prompt = None;
                    if let Some(t) = target {
                        p.jump(t);
                        tui.replay(p.reports(), p.status(None))?;
                        continue;
                    }
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            tui.replay_status(p.status(prompt.as_deref()))?;
            continue;
        }
        match replay_key(key, tui.filtering()) {
            ReplayKey::Go(m) => {
                if p.go(m) {
                    tui.replay(p.reports(), p.status(None))?;
                }
            }
            ReplayKey::Jump => {
                prompt = Some(String::new());
                tui.replay_status(p.status(Some("")))?;
            }
            ReplayKey::View => {
                if tui.input(Input::Key(key))? {
                    return Ok(0);
                }
            }
        }
    }
}
