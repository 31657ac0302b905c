//! The bytes of segment and journal files (docs/recording.md has the picture).
//!
//! A segment: a header (magic, version, the run's description as JSON, CRC), then records:
//! blocks (`B`: a fixed header with the block's times, frame count, sizes and CRCs, then its
//! zstd-compressed frames) and at most one end record (`E`). The block headers are the index:
//! a reader hops from one to the next by their lengths, reading 45 bytes per block, and
//! decompresses only the block it needs. A journal holds the block in progress, frame by
//! frame, uncompressed, so that a killed run loses at most the frame being written.

use std::{fs::File, io, os::unix::fs::FileExt as _};

use serde::{Deserialize, Serialize};

use super::wire::{crc, le32, le64};

/// The first bytes of a segment (PNG-style: a high byte, then a name, then a newline, so a
/// text-mode transfer or a truncated copy is noticed).
pub const MAGIC: [u8; 8] = *b"\x89PNMREC\n";
/// The first bytes of a journal.
pub const JOURNAL_MAGIC: [u8; 8] = *b"\x89PNMJNL\n";
/// The format's major version: a reader refuses a newer one.
pub const MAJOR: u16 = 1;
/// The minor version: additions an older reader of the same major version can ignore.
pub const MINOR: u16 = 0;

/// Block record tag.
pub const TAG_BLOCK: u8 = b'B';
/// End record tag.
pub const TAG_END: u8 = b'E';
/// A block header's size, tag included.
pub const BLOCK_HEAD: usize = 45;
/// An end record's size, tag included.
pub const END_LEN: usize = 22;
/// A frame record's header: length and CRC.
pub const FRAME_HEAD: usize = 8;

/// Who recorded a segment: written as JSON in its header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The run's id (random, hex): segments of one run share it, and their counters.
    pub run: String,
    /// When the run started counting, ns since the epoch (its counters were zero then).
    pub started_ns: i64,
    /// The run's interval, ns.
    pub interval_ns: u64,
    /// The host's name.
    pub host: String,
    /// `procnetmon2 --version` of the writer.
    pub version: String,
    /// What the run watched (`--all`, `-p 1234`, …).
    pub mode: String,
    /// This file's number within the run (0, 1, …).
    pub segment: u32,
}

/// Why a segment end record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndReason {
    /// The run ended.
    Stopped = 0,
    /// The hour turned: the run goes on in the next segment.
    Cut = 1,
}

/// A block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    /// Compressed payload bytes after the header.
    pub comp_len: u32,
    /// Bytes of frame records once decompressed.
    pub raw_len: u32,
    /// Frames in it.
    pub frames: u32,
    /// The first frame's number.
    pub first_seq: u64,
    /// The first frame's time, ns.
    pub first_ns: i64,
    /// The last frame's time, ns.
    pub last_ns: i64,
    /// CRC of the compressed payload.
    pub payload_crc: u32,
}

/// An end record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// Why.
    pub reason: EndReason,
    /// The last frame's number.
    pub last_seq: u64,
    /// The last frame's time.
    pub last_ns: i64,
}

/// Why a header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a recording at all.
    NotRecording,
    /// A newer format than this reader knows.
    Newer(u16, u16),
    /// Cut short or damaged.
    Damaged,
}

/// The header of a segment (or, with `JOURNAL_MAGIC`, a journal) describing `body`.
pub fn header(magic: [u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 20);
    out.extend_from_slice(&magic);
    out.extend_from_slice(&MAJOR.to_le_bytes());
    out.extend_from_slice(&MINOR.to_le_bytes());
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(body);
    let c = crc(&[&out]);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

/// Parses a header at the start of `buf`: its body and total length.
pub fn parse_header(magic: [u8; 8], buf: &[u8]) -> Result<(&[u8], usize), HeaderError> {
    match buf.get(..8) {
        Some(m) if m == magic => {}
        Some(_) => return Err(HeaderError::NotRecording),
        None if magic.starts_with(buf) => return Err(HeaderError::Damaged),
        None => return Err(HeaderError::NotRecording),
    }
    let word = |at: usize| {
        buf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or(HeaderError::Damaged)
    };
    let (major, minor) = (word(8)?, word(10)?);
    if major > MAJOR {
        return Err(HeaderError::Newer(major, minor));
    }
    let len = le32(buf, 12).ok_or(HeaderError::Damaged)? as usize;
    let end = 16 + len;
    let body = buf.get(16..end).ok_or(HeaderError::Damaged)?;
    let stored = le32(buf, end).ok_or(HeaderError::Damaged)?;
    if crc(&[&buf[..end]]) != stored {
        return Err(HeaderError::Damaged);
    }
    Ok((body, end + 4))
}

/// A frame record: length, CRC, payload.
pub fn frame_record(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + FRAME_HEAD);
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&crc(&[payload]).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What a run of frame records holds: the payloads that check out, then how the run ended.
#[derive(Debug, Default)]
pub struct Frames<'a> {
    /// Each good frame's payload, in order; `None` where one was damaged.
    pub payloads: Vec<Option<&'a [u8]>>,
    /// The last record was cut short (a write the process did not finish).
    pub torn: bool,
}

/// Splits `buf` into frame records. A record whose CRC fails is `None` (its length is
/// trusted only if it stays inside the buffer); a record running past the end is torn.
pub fn split_frames(buf: &[u8]) -> Frames<'_> {
    let mut out = Frames::default();
    let mut at = 0;
    while at < buf.len() {
        let (Some(len), Some(c)) = (le32(buf, at), le32(buf, at + 4)) else {
            out.torn = true;
            break;
        };
        let start = at + FRAME_HEAD;
        let Some(payload) = start
            .checked_add(len as usize)
            .and_then(|end| buf.get(start..end))
        else {
            out.torn = true;
            break;
        };
        out.payloads.push((crc(&[payload]) == c).then_some(payload));
        at = start + len as usize;
    }
    out
}

/// A block record: header and compressed payload.
pub fn block_record(head: &BlockHead, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK_HEAD + payload.len());
    out.push(TAG_BLOCK);
    out.extend_from_slice(&head.comp_len.to_le_bytes());
    out.extend_from_slice(&head.raw_len.to_le_bytes());
    out.extend_from_slice(&head.frames.to_le_bytes());
    out.extend_from_slice(&head.first_seq.to_le_bytes());
    out.extend_from_slice(&head.first_ns.to_le_bytes());
    out.extend_from_slice(&head.last_ns.to_le_bytes());
    out.extend_from_slice(&head.payload_crc.to_le_bytes());
    let c = crc(&[&out]);
    out.extend_from_slice(&c.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Parses a block header (45 bytes, tag included).
pub fn parse_block_head(b: &[u8]) -> Option<BlockHead> {
    if b.len() < BLOCK_HEAD || b[0] != TAG_BLOCK || crc(&[&b[..41]]) != le32(b, 41)? {
        return None;
    }
    Some(BlockHead {
        comp_len: le32(b, 1)?,
        raw_len: le32(b, 5)?,
        frames: le32(b, 9)?,
        first_seq: le64(b, 13)?,
        first_ns: le64(b, 21)? as i64,
        last_ns: le64(b, 29)? as i64,
        payload_crc: le32(b, 37)?,
    })
}

/// An end record.
pub fn end_record(end: &End) -> Vec<u8> {
    let mut out = Vec::with_capacity(END_LEN);
    out.push(TAG_END);
    out.push(end.reason as u8);
    out.extend_from_slice(&end.last_seq.to_le_bytes());
    out.extend_from_slice(&end.last_ns.to_le_bytes());
    let c = crc(&[&out]);
    out.extend_from_slice(&c.to_le_bytes());
    out
}

/// Parses an end record.
pub fn parse_end(b: &[u8]) -> Option<End> {
    if b.len() < END_LEN || b[0] != TAG_END || crc(&[&b[..18]]) != le32(b, 18)? {
        return None;
    }
    Some(End {
        reason: match b[1] {
            0 => EndReason::Stopped,
            1 => EndReason::Cut,
            _ => return None,
        },
        last_seq: le64(b, 2)?,
        last_ns: le64(b, 10)? as i64,
    })
}

/// A block found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockAt {
    /// Where its header starts.
    pub offset: u64,
    /// Its header.
    pub head: BlockHead,
}

/// A segment's index: its run, its blocks, its end, and where it was found damaged.
#[derive(Debug, Clone)]
pub struct Index {
    /// The run's description.
    pub meta: RunMeta,
    /// Blocks in file order.
    pub blocks: Vec<BlockAt>,
    /// The end record, if the run wrote one.
    pub end: Option<End>,
    /// Byte ranges skipped as damaged.
    pub damaged: Vec<(u64, u64)>,
}

/// Reads the header and walks the block headers of a segment (45 bytes read per block; the
/// payloads are skipped). Where a header does not check out, scans forward for the next one
/// that does.
pub fn index(file: &File) -> io::Result<Result<Index, HeaderError>> {
    let size = file.metadata()?.len();
    let mut head = vec![0_u8; usize::try_from(size.min(64 * 1024)).unwrap_or(0)];
    file.read_exact_at(&mut head, 0)?;
    let (body, mut at) = match parse_header(MAGIC, &head) {
        Ok((body, len)) => (body, len as u64),
        Err(e) => return Ok(Err(e)),
    };
    let Ok(meta) = serde_json::from_slice::<RunMeta>(body) else {
        return Ok(Err(HeaderError::Damaged));
    };
    let mut ix = Index {
        meta,
        blocks: Vec::new(),
        end: None,
        damaged: Vec::new(),
    };
    let mut buf = [0_u8; BLOCK_HEAD];
    while at < size {
        let n = usize::try_from((size - at).min(BLOCK_HEAD as u64)).unwrap_or(0);
        file.read_exact_at(&mut buf[..n], at)?;
        if let Some(h) = parse_block_head(&buf[..n]) {
            let next = at + BLOCK_HEAD as u64 + u64::from(h.comp_len);
            if next > size {
                // The block being written when the run was killed: its frames are in the
                // journal.
                ix.damaged.push((at, size));
                break;
            }
            ix.blocks.push(BlockAt {
                offset: at,
                head: h,
            });
            at = next;
        } else if let Some(e) = parse_end(&buf[..n]) {
            ix.end = Some(e);
            at += END_LEN as u64;
        } else {
            let resume = resync(file, at + 1, size)?;
            ix.damaged.push((at, resume));
            at = resume;
        }
    }
    Ok(Ok(ix))
}

/// The offset of the next record header that checks out at or after `from` (or `size`).
fn resync(file: &File, from: u64, size: u64) -> io::Result<u64> {
    let mut rest = vec![0_u8; usize::try_from(size - from.min(size)).unwrap_or(0)];
    file.read_exact_at(&mut rest, from)?;
    for i in 0..rest.len() {
        let b = &rest[i..];
        let ok = match b[0] {
            TAG_BLOCK => parse_block_head(b).is_some(),
            TAG_END => parse_end(b).is_some(),
            _ => false,
        };
        if ok {
            return Ok(from + i as u64);
        }
    }
    Ok(size)
}

/// Reads and checks a block's payload; decompresses it into frame records.
pub fn read_block(file: &File, b: &BlockAt) -> io::Result<Option<Vec<u8>>> {
    let mut payload = vec![0_u8; b.head.comp_len as usize];
    file.read_exact_at(&mut payload, b.offset + BLOCK_HEAD as u64)?;
    if crc(&[&payload]) != b.head.payload_crc {
        return Ok(None);
    }
    Ok(decompress(&payload, b.head.raw_len as usize))
}

/// zstd-decompresses `payload`, expecting `raw_len` bytes (None when it does not decode).
pub fn decompress(payload: &[u8], raw_len: usize) -> Option<Vec<u8>> {
    let mut dec = ruzstd::decoding::StreamingDecoder::new(payload).ok()?;
    let mut out = Vec::with_capacity(raw_len.min(64 << 20));
    io::Read::read_to_end(&mut dec, &mut out).ok()?;
    (out.len() == raw_len).then_some(out)
}

/// zstd-compresses `raw`.
pub fn compress(raw: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest)
}
