//! Reading a recording: its segments (by their indexes: block headers only), the frames of
//! one block at a time, and where a time falls. Memory stays bounded by one block, however
//! long the recording. Damage is reported once and skipped: a block whose CRC fails, or
//! the rest of a block after a damaged frame (its deltas cannot be applied without it).

use std::{
    fs::File,
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::{
    codec::{Decoder, Frame, Head},
    segment::{
        self, HeaderError, Index, JOURNAL_MAGIC, MAJOR, MINOR, RunMeta, parse_header, split_frames,
    },
    store::{LOCK, Role, role},
    wire::Get,
};
use crate::error::UsageError;

/// One segment file and what its journal adds.
#[derive(Debug)]
pub struct Segment {
    /// Its file name.
    pub name: String,
    file: File,
    /// Its header and blocks.
    pub index: Index,
    /// Frame records of its journal not yet in a block (the block in progress).
    journal: Vec<u8>,
    /// The journal's frames (payloads' offsets into `journal`), in order.
    journal_frames: usize,
    /// The journal's last record was cut short.
    pub torn: bool,
    /// The first and last frame's time.
    pub span: (i64, i64),
}

impl Segment {
    /// Its run's description.
    pub fn meta(&self) -> &RunMeta {
        &self.index.meta
    }

    /// Blocks, the journal counting as one more when it holds frames.
    pub fn parts(&self) -> usize {
        self.index.blocks.len() + usize::from(self.journal_frames > 0)
    }

    /// The first frame time of part `i`.
    fn part_start(&self, i: usize) -> i64 {
        match self.index.blocks.get(i) {
            Some(b) => b.head.first_ns,
            None => self
                .span
                .1
                .min(journal_start(&self.journal).unwrap_or(self.span.1)),
        }
    }
}

/// A recording directory, opened for reading.
#[derive(Debug)]
pub struct Recording {
    /// Its path.
    pub dir: PathBuf,
    /// Segments in time order.
    pub segments: Vec<Segment>,
    /// What was found wrong or notable while opening (each printed once).
    pub notices: Vec<String>,
    /// A run holds the directory's lock: the recording is being written.
    pub live: bool,
}

/// Where a frame is: segment, part (block, or the journal after the last block), frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Segment index.
    pub seg: usize,
    /// Block index (`blocks.len()`: the journal).
    pub part: usize,
    /// Frame index within the part.
    pub frame: usize,
}

/// The decoded frames of one part, and what was wrong with it.
#[derive(Debug, Default)]
pub struct Part {
    /// Frames, in order.
    pub frames: Vec<Frame>,
    /// A notice when frames were lost.
    pub notice: Option<String>,
}

fn fmt_ns(ns: i64) -> String {
    super::convert::timestamp(ns, 0).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The frame number and time a frame record starts with (`time` absolute for a key frame,
/// else relative to the previous frame's).
fn peek(payload: &[u8]) -> Option<(u64, bool, i64)> {
    let mut g = Get::new(payload);
    let seq = g.u()?;
    let flags = g.b()?;
    Some((seq, flags & 1 != 0, g.i()?))
}

/// The time of a journal's first frame.
fn journal_start(records: &[u8]) -> Option<i64> {
    let f = split_frames(records);
    let (_, key, t) = peek(f.payloads.first().copied().flatten()?)?;
    key.then_some(t)
}

impl Recording {
    /// Opens `dir`: indexes every segment and reads the journals. A segment of a newer
    /// major version refuses the whole directory, in one line.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            UsageError::new(format!(
                "{}: cannot read it ({e}); give the directory a run recorded into with --record",
                dir.display()
            ))
        })?;
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut rec = Self {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            notices: Vec::new(),
            live: is_locked(dir),
        };
        for name in names.iter().filter(|n| role(n) == Some(Role::Segment)) {
            rec.open_segment(name)?;
        }
        for name in names.iter().filter(|n| role(n) == Some(Role::Journal)) {
            rec.attach_journal(name);
        }
        rec.segments
            .retain(|s| s.parts() > 0 || s.index.end.is_some());
        rec.segments.sort_by_key(|s| s.span.0);
        for name in names
            .iter()
            .filter(|n| role(n).is_none() && *n != "lost+found")
        {
            rec.notices
                .push(format!("{name} is not part of a recording: ignored"));
        }
        rec.note_unclean_ends();
        anyhow::ensure!(
            rec.segments.iter().any(|s| s.parts() > 0),
            UsageError::new(format!(
                "{} holds no recording; give the directory a run recorded into with --record DIR",
                dir.display()
            ))
        );
        Ok(rec)
    }

    fn open_segment(&mut self, name: &str) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        let file = match File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                self.notices
                    .push(format!("{name}: cannot open it ({e}): skipped"));
                return Ok(());
            }
        };
        let index = match segment::index(&file)
            .with_context(|| format!("read {}", path.display()))?
        {
            Ok(ix) => ix,
            Err(HeaderError::Newer(major, minor)) => {
                return Err(UsageError::new(format!(
                    "{}: recording format {major}.{minor} is newer than this procnetmon2 reads ({MAJOR}.{MINOR}); replay it with a newer procnetmon2",
                    path.display()
                ))
                .into());
            }
            Err(HeaderError::NotRecording) => {
                self.notices
                    .push(format!("{name} is not a procnetmon2 recording: skipped"));
                return Ok(());
            }
            Err(HeaderError::Damaged) => {
                self.notices.push(format!(
                    "{name}: its header is damaged or cut short: skipped"
                ));
                return Ok(());
            }
        };
        for (from, to) in &index.damaged {
            self.notices.push(format!(
                "{name}: bytes {from}..{to} are damaged or cut short: skipped (their frames are lost)"
            ));
        }
        let span = (
            index.blocks.first().map_or(i64::MAX, |b| b.head.first_ns),
            index.blocks.last().map_or(i64::MIN, |b| b.head.last_ns),
        );
        self.segments.push(Segment {
            name: name.to_string(),
            file,
            index,
            journal: Vec::new(),
            journal_frames: 0,
            torn: false,
            span,
        });
        Ok(())
    }

    /// Reads a journal into its segment: the frames after the segment's last block.
    fn attach_journal(&mut self, name: &str) {
        let mut buf = Vec::new();
        let read = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.dir.join(name))
            .and_then(|mut f| f.read_to_end(&mut buf));
        if let Err(e) = read {
            self.notices
                .push(format!("{name}: cannot read it ({e}): skipped"));
            return;
        }
        let (seg_name, len) = match parse_header(JOURNAL_MAGIC, &buf) {
            Ok((body, len)) => (String::from_utf8_lossy(body).into_owned(), len),
            Err(HeaderError::Newer(a, b)) => {
                self.notices.push(format!(
                    "{name}: journal format {a}.{b} is newer than this procnetmon2 reads: skipped"
                ));
                return;
            }
            Err(_) => {
                self.notices.push(format!(
                    "{name}: not a journal, or its header is damaged: skipped"
                ));
                return;
            }
        };
        let Some(seg) = self.segments.iter_mut().find(|s| s.name == seg_name) else {
            self.notices.push(format!(
                "{name}: its segment {seg_name} is missing: skipped"
            ));
            return;
        };
        let after = seg
            .index
            .blocks
            .last()
            .map_or(0, |b| b.head.first_seq + u64::from(b.head.frames) - 1);
        let records = &buf[len..];
        let frames = split_frames(records);
        // Keep the records after the last block's last frame (a run killed between writing
        // a block and cutting its journal leaves frames in both).
        let mut at = 0;
        let mut keep_from = None;
        let mut kept = 0;
        let mut time = 0_i64;
        let mut last_time = None;
        for p in &frames.payloads {
            let Some(payload) = p else {
                break;
            };
            let rec_len = payload.len() + segment::FRAME_HEAD;
            if let Some((seq, key, t)) = peek(payload) {
                time = if key { t } else { time.wrapping_add(t) };
                if seq > after {
                    keep_from.get_or_insert(at);
                    kept += 1;
                    last_time = Some(time);
                }
            }
            at += rec_len;
        }
        if frames.payloads.iter().any(Option::is_none) {
            self.notices.push(format!(
                "{name}: a damaged frame: it and the frames after it in this journal are lost"
            ));
        }
        seg.torn = frames.torn;
        if let Some(from) = keep_from {
            seg.journal = records[from..at].to_vec();
            seg.journal_frames = kept;
            if let Some(first) = journal_start(&seg.journal) {
                seg.span.0 = seg.span.0.min(first);
            }
            if let Some(t) = last_time {
                seg.span.1 = seg.span.1.max(t);
            }
        }
    }

    /// Notes each run that ended without its end record (killed, or the disk filled), unless
    /// it is still being written.
    fn note_unclean_ends(&mut self) {
        if self.live {
            return;
        }
        let mut runs: Vec<&str> = self
            .segments
            .iter()
            .map(|s| s.meta().run.as_str())
            .collect();
        runs.dedup();
        let mut notes = Vec::new();
        for run in runs {
            let Some(last) = self.segments.iter().rev().find(|s| s.meta().run == run) else {
                continue;
            };
            if last.index.end.is_some() || last.parts() == 0 {
                continue;
            }
            let mut n = format!(
                "the run recorded in {} ended without a clean stop (killed, or the disk filled) after {}: the interval after it was not recorded",
                last.name,
                fmt_ns(last.span.1)
            );
            if last.torn {
                n.push_str("; the frame being written then was cut short and is lost");
            }
            notes.push(n);
        }
        self.notices.extend(notes);
    }

    /// The runs recorded, in time order: their descriptions and the time of their first and
    /// last frames.
    pub fn runs(&self) -> Vec<(RunMeta, (i64, i64))> {
        let mut out: Vec<(RunMeta, (i64, i64))> = Vec::new();
        for s in self.segments.iter().filter(|s| s.parts() > 0) {
            match out.iter_mut().find(|(m, _)| m.run == s.meta().run) {
                Some((_, span)) => *span = (span.0.min(s.span.0), span.1.max(s.span.1)),
                None => out.push((s.meta().clone(), s.span)),
            }
        }
        out
    }

    /// The first and last frame's time.
    pub fn span(&self) -> (i64, i64) {
        let first = self.segments.iter().map(|s| s.span.0).min().unwrap_or(0);
        let last = self.segments.iter().map(|s| s.span.1).max().unwrap_or(0);
        (first, last)
    }

    /// The frame records of part `part` of segment `seg` (a block, decompressed; or the
    /// journal), or a notice why there are none.
    fn raw_part(&self, seg: usize, part: usize) -> Result<Vec<u8>, String> {
        let Some(s) = self.segments.get(seg) else {
            return Ok(Vec::new());
        };
        match s.index.blocks.get(part) {
            Some(b) => match segment::read_block(&s.file, b) {
                Ok(Some(raw)) => Ok(raw),
                Ok(None) | Err(_) => Err(format!(
                    "{}: a damaged block ({} frames from {} to {}) was skipped",
                    s.name,
                    b.head.frames,
                    fmt_ns(b.head.first_ns),
                    fmt_ns(b.head.last_ns)
                )),
            },
            None => Ok(s.journal.clone()),
        }
    }

    /// Decodes part `part` of segment `seg` (a block, or the journal).
    pub fn part(&self, seg: usize, part: usize) -> Part {
        match self.raw_part(seg, part) {
            Ok(raw) => decode_records(&self.segments[seg].name, &raw),
            Err(notice) => Part {
                frames: Vec::new(),
                notice: Some(notice),
            },
        }
    }

    /// The frame at `pos`: the part's frames are applied up to it, and only it is built.
    pub fn frame_at(&self, pos: Pos) -> Option<Frame> {
        self.scan_part(pos.seg, pos.part, |i, _| i <= pos.frame)
            .filter(|(i, _)| *i == pos.frame)
            .map(|(_, f)| f)
    }

    /// Applies the part's frames while `take(index, time)` holds; builds the last one taken.
    fn scan_part(
        &self,
        seg: usize,
        part: usize,
        mut take: impl FnMut(usize, i64) -> bool,
    ) -> Option<(usize, Frame)> {
        let raw = self.raw_part(seg, part).ok()?;
        let split = split_frames(&raw);
        let mut dec = Decoder::default();
        let mut time = 0_i64;
        let mut last = None;
        for (i, p) in split.payloads.iter().enumerate() {
            let p = (*p)?;
            let (_, key, t) = peek(p)?;
            time = if key { t } else { time.wrapping_add(t) };
            if !take(i, time) {
                break;
            }
            last = Some((i, dec.apply(p).ok()?));
        }
        let (i, head) = last?;
        Some((i, dec.frame(&head)?))
    }

    /// Frames in part `part` of segment `seg` (as its header or journal says).
    pub fn part_len(&self, seg: usize, part: usize) -> usize {
        let Some(s) = self.segments.get(seg) else {
            return 0;
        };
        match s.index.blocks.get(part) {
            Some(b) => b.head.frames as usize,
            None => s.journal_frames,
        }
    }

    /// The last frame at or before `t` (the first frame when `t` is earlier), and where.
    pub fn locate(&self, t: i64) -> Option<(Pos, Frame)> {
        self.locate_in(t, |_| true)
    }

    /// As [`Self::locate`], among the segments `pick` accepts (a run's).
    pub fn locate_in(&self, t: i64, pick: impl Fn(&Segment) -> bool) -> Option<(Pos, Frame)> {
        let seg = self
            .segments
            .iter()
            .rposition(|s| s.span.0 <= t && s.parts() > 0 && pick(s))
            .or_else(|| self.segments.iter().position(|s| s.parts() > 0 && pick(s)))?;
        let s = &self.segments[seg];
        let first = (0..s.parts()).rev().find(|&p| s.part_start(p) <= t);
        for part in (0..=first.unwrap_or(0)).rev() {
            let found = self.scan_part(seg, part, |i, time| {
                time <= t || (i == 0 && first.is_none())
            });
            if let Some((frame, f)) = found {
                return Some((Pos { seg, part, frame }, f));
            }
        }
        None
    }

    /// The part after `p`'s (in the same segment, or the next segment's first).
    pub fn next_part(&self, seg: usize, part: usize) -> Option<(usize, usize)> {
        if part + 1 < self.segments.get(seg)?.parts() {
            return Some((seg, part + 1));
        }
        (seg + 1..self.segments.len())
            .find(|&s| self.segments[s].parts() > 0)
            .map(|s| (s, 0))
    }

    /// The part before.
    pub fn prev_part(&self, seg: usize, part: usize) -> Option<(usize, usize)> {
        if part > 0 {
            return Some((seg, part - 1));
        }
        (0..seg)
            .rev()
            .find(|&s| self.segments[s].parts() > 0)
            .map(|s| (s, self.segments[s].parts() - 1))
    }

    /// Applies every frame from the part holding `from` (or the start) on without building
    /// them, calling `f(segment, header, decoder, first of its part)` after each until it
    /// returns false: for what needs only the rows' figures (peaks, the plot). Damage is
    /// logged once per part as a warning.
    pub fn scan(&self, from: Option<i64>, mut f: impl FnMut(usize, &Head, &Decoder, bool) -> bool) {
        let mut next = match from {
            Some(t) => self.locate(t).map(|(p, _)| (p.seg, p.part)),
            None => self
                .segments
                .iter()
                .position(|s| s.parts() > 0)
                .map(|s| (s, 0)),
        };
        while let Some((seg, part)) = next {
            next = self.next_part(seg, part);
            let raw = match self.raw_part(seg, part) {
                Ok(raw) => raw,
                Err(notice) => {
                    log::warn!("{notice}");
                    continue;
                }
            };
            let mut dec = Decoder::default();
            for (i, p) in split_frames(&raw).payloads.iter().enumerate() {
                let Some(head) = p.and_then(|p| dec.apply(p).ok()) else {
                    log::warn!(
                        "{}: a damaged frame was skipped, with the frames after it in its block",
                        self.segments[seg].name
                    );
                    break;
                };
                if !f(seg, &head, &dec, i == 0) {
                    return;
                }
            }
        }
    }

    /// Every frame from the part holding `from` (or the start) on, one part in memory at a
    /// time; damage is logged once per part as a warning.
    pub fn frames(&self, from: Option<i64>) -> FrameIter<'_> {
        let start = match from {
            Some(t) => self.locate(t).map(|(p, _)| (p.seg, p.part)),
            None => self
                .segments
                .iter()
                .position(|s| s.parts() > 0)
                .map(|s| (s, 0)),
        };
        FrameIter {
            rec: self,
            next: start,
            buf: std::collections::VecDeque::new(),
            seg: 0,
        }
    }
}

/// Frames in order with the segment each comes from.
pub struct FrameIter<'a> {
    rec: &'a Recording,
    next: Option<(usize, usize)>,
    buf: std::collections::VecDeque<Frame>,
    seg: usize,
}

impl Iterator for FrameIter<'_> {
    type Item = (usize, Frame);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(f) = self.buf.pop_front() {
                return Some((self.seg, f));
            }
            let (seg, part) = self.next?;
            self.next = self.rec.next_part(seg, part);
            let decoded = self.rec.part(seg, part);
            if let Some(n) = decoded.notice {
                log::warn!("{n}");
            }
            self.seg = seg;
            self.buf = decoded.frames.into();
        }
    }
}

/// Decodes a run of frame records (a block's or a journal's).
pub fn decode_records(name: &str, raw: &[u8]) -> Part {
    let split = split_frames(raw);
    let mut dec = Decoder::default();
    let mut out = Part::default();
    let total = split.payloads.len();
    for (i, p) in split.payloads.iter().enumerate() {
        let decoded = p.ok_or(()).and_then(|p| dec.decode(p).map_err(|_| ()));
        match decoded {
            Ok(f) => out.frames.push(f),
            Err(()) => {
                let at = out
                    .frames
                    .last()
                    .map_or_else(|| "its start".to_string(), |f| fmt_ns(f.time_ns));
                out.notice = Some(format!(
                    "{name}: a damaged frame after {at} was skipped, with the {} frames after it in its block (they are deltas on it)",
                    total - i - 1
                ));
                break;
            }
        }
    }
    out
}

/// True when a run holds the directory's lock (it is recording there now).
fn is_locked(dir: &Path) -> bool {
    let Ok(f) = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(LOCK))
    else {
        return false;
    };
    match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == nix::errno::Errno::EWOULDBLOCK,
    }
}
