//! `--record DIR`: the [`Recorder`] the run loop hands one report per interval.
//!
//! Each frame is appended to the journal of the block in progress as soon as it is encoded
//! (one `write`: a killed run loses at most the frame being written); every
//! [`Options::block_frames`] frames (or [`Options::block_span`], or at the hour and at the
//! end) the block is compressed into the segment and the journal is cut back to its header.
//! A segment holds one hour (UTC) of one run. An I/O fault (a full disk, a directory gone
//! read-only) pauses recording with one warning and never stops the run; the next interval
//! that can be written starts a new segment with a key frame, and the intervals in between
//! are a gap. Retention removes whole old segments (oldest first) when one is started.

use std::{
    collections::HashMap,
    io,
    time::{Duration, Instant, SystemTime},
};

use super::{
    codec::Encoder,
    convert::frame_of,
    segment::{
        BlockHead, End, EndReason, JOURNAL_MAGIC, MAGIC, RunMeta, block_record, compress,
        end_record, frame_record, header,
    },
    store::{JOURNAL_EXT, SEGMENT_EXT, Storage},
};
use crate::model::Report;

/// How the recorder cuts blocks and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Frames per block (a block starts with a key frame; seeking decodes one block).
    pub block_frames: u32,
    /// Longest time one block spans.
    pub block_span: Duration,
    /// Most uncompressed bytes one block holds (bounds memory and the journal).
    pub block_bytes: usize,
    /// `--retain`: segments whose last write is older are removed.
    pub retain: Option<Duration>,
    /// `--retain-size`: oldest segments are removed while all of them take more.
    pub retain_size: Option<u64>,
    /// How long a paused recorder waits between attempts to write again.
    pub retry: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            block_frames: 120,
            block_span: Duration::from_secs(300),
            block_bytes: 4 << 20,
            retain: Some(crate::config::DEFAULT_RETAIN),
            retain_size: Some(crate::config::DEFAULT_RETAIN_SIZE),
            retry: Duration::from_secs(5),
        }
    }
}

/// The segment being written.
#[derive(Debug)]
struct Open {
    stem: String,
    hour: i64,
    journal_head: u64,
    block: Vec<u8>,
    frames: u32,
    first_seq: u64,
    first_ns: i64,
    last_ns: i64,
    last_seq: u64,
}

impl Open {
    fn segment(&self) -> String {
        format!("{}{SEGMENT_EXT}", self.stem)
    }

    fn journal(&self) -> String {
        format!("{}{JOURNAL_EXT}", self.stem)
    }
}

/// Records a run's reports into a directory.
pub struct Recorder<S: Storage> {
    store: S,
    label: String,
    opts: Options,
    meta: RunMeta,
    units: HashMap<u32, String>,
    enc: Encoder,
    seq: u64,
    seg: Option<Open>,
    /// Since when recording is paused by a fault (wall time of the first lost frame), and
    /// when it was last tried.
    paused: Option<(i64, Instant)>,
    /// Bytes written, for the benchmark.
    pub written: u64,
}

/// Nanoseconds in an hour.
const HOUR_NS: i64 = 3_600_000_000_000;

impl<S: Storage> Recorder<S> {
    /// A recorder writing into `store` (named `label` in messages) for the run `meta`
    /// describes (its `segment` is counted here). `units`: each process target's workload
    /// as `/metrics` names it.
    pub fn new(
        store: S,
        label: String,
        meta: RunMeta,
        opts: Options,
        units: HashMap<u32, String>,
    ) -> Self {
        Self {
            store,
            label,
            opts,
            meta,
            units,
            enc: Encoder::default(),
            seq: 0,
            seg: None,
            paused: None,
            written: 0,
        }
    }

    /// Appends one interval's report. Never fails: a fault pauses recording with one
    /// warning (see the module doc).
    pub fn append(&mut self, report: &Report) {
        self.seq += 1;
        let frame = frame_of(report, self.seq, &self.units);
        if let Some((_, tried)) = self.paused
            && tried.elapsed() < self.opts.retry
        {
            return;
        }
        match self.try_append(&frame) {
            Ok(()) => {
                if let Some((since, _)) = self.paused.take() {
                    let gap = Duration::from_nanos(
                        u64::try_from(frame.time_ns.saturating_sub(since)).unwrap_or(0),
                    );
                    log::warn!(
                        "recording to {} resumed; the {} before are a gap in it",
                        self.label,
                        humantime::format_duration(Duration::from_secs(gap.as_secs()))
                    );
                }
            }
            Err(e) => {
                match &mut self.paused {
                    Some((_, tried)) => *tried = Instant::now(),
                    None => {
                        log::warn!(
                            "recording to {} paused: {e}; counting and every other output go on, and recording resumes when it can",
                            self.label
                        );
                        self.paused = Some((frame.time_ns, Instant::now()));
                    }
                }
                // What was open is left as it is (readable up to the fault); the next
                // attempt starts a new segment with a key frame.
                self.seg = None;
                self.store.reset();
            }
        }
    }

    fn try_append(&mut self, frame: &super::codec::Frame) -> io::Result<()> {
        let hour = frame.time_ns.div_euclid(HOUR_NS);
        if self.seg.as_ref().is_some_and(|s| s.hour != hour) {
            self.finish(EndReason::Cut)?;
        }
        if self.seg.is_none() {
            self.start_segment(frame.time_ns)?;
        }
        let Some(seg) = self.seg.as_mut() else {
            return Err(io::Error::other("no segment"));
        };
        let key = seg.frames == 0;
        let (payload, _, _) = self.enc.encode(frame, key);
        let rec = frame_record(&payload);
        self.store.append(&seg.journal(), &rec)?;
        self.written += rec.len() as u64;
        if key {
            seg.first_seq = frame.seq;
            seg.first_ns = frame.time_ns;
        }
        seg.last_ns = frame.time_ns;
        seg.last_seq = frame.seq;
        seg.block.extend_from_slice(&rec);
        seg.frames += 1;
        let span = u64::try_from(seg.last_ns.saturating_sub(seg.first_ns)).unwrap_or(0);
        if seg.frames >= self.opts.block_frames
            || seg.block.len() >= self.opts.block_bytes
            || Duration::from_nanos(span) >= self.opts.block_span
        {
            self.commit_block()?;
        }
        Ok(())
    }

    /// Compresses the block in progress into the segment; cuts the journal back.
    fn commit_block(&mut self) -> io::Result<()> {
        let Some(seg) = self.seg.as_mut() else {
            return Ok(());
        };
        if seg.frames == 0 {
            return Ok(());
        }
        let comp = compress(&seg.block);
        let head = BlockHead {
            comp_len: u32::try_from(comp.len()).map_err(io::Error::other)?,
            raw_len: u32::try_from(seg.block.len()).map_err(io::Error::other)?,
            frames: seg.frames,
            first_seq: seg.first_seq,
            first_ns: seg.first_ns,
            last_ns: seg.last_ns,
            payload_crc: super::wire::crc(&[&comp]),
        };
        let rec = block_record(&head, &comp);
        self.store.append(&seg.segment(), &rec)?;
        self.written += rec.len() as u64;
        self.store.truncate(&seg.journal(), seg.journal_head)?;
        seg.block.clear();
        seg.frames = 0;
        Ok(())
    }

    /// Ends the open segment: its last block, an end record, and no journal.
    fn finish(&mut self, reason: EndReason) -> io::Result<()> {
        self.commit_block()?;
        let Some(seg) = self.seg.take() else {
            return Ok(());
        };
        let rec = end_record(&End {
            reason,
            last_seq: seg.last_seq,
            last_ns: seg.last_ns,
        });
        self.store.append(&seg.segment(), &rec)?;
        self.store.remove(&seg.journal())
    }

    /// Starts a segment (and its journal) for a frame at `time_ns`, after retention.
    fn start_segment(&mut self, time_ns: i64) -> io::Result<()> {
        let base = super::convert::timestamp(time_ns, 0)
            .format("%Y%m%dT%H%M%SZ")
            .to_string();
        let taken: Vec<String> = self.store.list()?.into_iter().map(|e| e.name).collect();
        let stem = (0..)
            .map(|n| {
                if n == 0 {
                    base.clone()
                } else {
                    format!("{base}-{n}")
                }
            })
            .find(|s| {
                !taken.contains(&format!("{s}{SEGMENT_EXT}"))
                    && !taken.contains(&format!("{s}{JOURNAL_EXT}"))
            })
            .unwrap_or(base);
        self.retain(&stem)?;
        let body = serde_json::to_vec(&self.meta).map_err(io::Error::other)?;
        let seg_name = format!("{stem}{SEGMENT_EXT}");
        let jnl_name = format!("{stem}{JOURNAL_EXT}");
        let jhead = header(JOURNAL_MAGIC, seg_name.as_bytes());
        let made = (|| {
            self.store.create(&seg_name)?;
            self.store.append(&seg_name, &header(MAGIC, &body))?;
            self.store.create(&jnl_name)?;
            self.store.append(&jnl_name, &jhead)
        })();
        if let Err(e) = made {
            // Nothing half-made is left behind (a full disk can still create empty files).
            let _ = self.store.remove(&jnl_name);
            let _ = self.store.remove(&seg_name);
            return Err(e);
        }
        self.meta.segment += 1;
        self.seg = Some(Open {
            stem,
            hour: time_ns.div_euclid(HOUR_NS),
            journal_head: jhead.len() as u64,
            block: Vec::new(),
            frames: 0,
            first_seq: 0,
            first_ns: 0,
            last_ns: 0,
            last_seq: 0,
        });
        Ok(())
    }

    /// Removes whole segments (with their journals), oldest first, that are older than
    /// `--retain` or while all of them take more than `--retain-size`. Never `keep`.
    fn retain(&mut self, keep: &str) -> io::Result<()> {
        let entries = self.store.list()?;
        let mut stems: Vec<(String, u64, i64)> = Vec::new();
        for e in &entries {
            let stem = e
                .name
                .strip_suffix(SEGMENT_EXT)
                .or_else(|| e.name.strip_suffix(JOURNAL_EXT))
                .unwrap_or(&e.name);
            match stems.iter_mut().find(|(s, _, _)| s == stem) {
                Some((_, size, mtime)) => {
                    *size += e.size;
                    *mtime = (*mtime).max(e.mtime);
                }
                None => stems.push((stem.to_string(), e.size, e.mtime)),
            }
        }
        stems.sort();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
        let mut total: u64 = stems.iter().map(|(_, s, _)| *s).sum();
        for (stem, size, mtime) in stems {
            if stem == keep {
                continue;
            }
            let too_old = self.opts.retain.is_some_and(|r| {
                now.saturating_sub(mtime) > i64::try_from(r.as_secs()).unwrap_or(i64::MAX)
            });
            let too_big = self.opts.retain_size.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                continue;
            }
            for name in [
                format!("{stem}{JOURNAL_EXT}"),
                format!("{stem}{SEGMENT_EXT}"),
            ] {
                match self.store.remove(&name) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            log::info!("recording: removed {stem} (retention)");
            total = total.saturating_sub(size);
        }
        Ok(())
    }

    /// Ends the recording: the last block and an end record, so that a reader knows the
    /// run stopped (rather than was killed).
    pub fn close(&mut self) {
        if self.paused.is_some() {
            return;
        }
        if let Err(e) = self.finish(EndReason::Stopped) {
            log::warn!("recording to {}: could not finish it ({e})", self.label);
        }
    }
}

#[cfg(test)]
impl<S: Storage> Recorder<S> {
    /// Ends like a run killed with SIGKILL: nothing more is written, files are closed.
    pub fn kill(mut self) {
        self.seg = None;
    }
}

impl<S: Storage> Drop for Recorder<S> {
    fn drop(&mut self) {
        self.close();
    }
}
