//! Frames as sets of entities, and their delta encoding.
//!
//! A [`Frame`] is what one report holds, flattened into [`Entity`]s (rows, their remote
//! hosts, classes and connections, the aggregate, the `untracked` figures): each entity is a
//! few counters (`nums`), a few exact floats (`floats`: peaks) and a few strings (names).
//! `convert` maps reports to frames and back; this module only diffs them.
//!
//! The [`Encoder`] writes what changed since the previous frame: an entity seen for the first
//! time is added with an id, one that changed is updated with a bit mask of its changed
//! fields (counters as differences, which are small), one that went is removed; nothing is
//! written for what did not change. A key frame (the first of every block) adds everything
//! afresh, so a block decodes on its own. Rates are not stored: the [`Decoder`] derives them
//! from the counters' differences over the frame's interval (`dt_ns`), which the encoder
//! infers from the report so that the derived rates are bit-for-bit the reported ones; a rate
//! that still differs is stored as it is.
//!
//! Counters are not written as plain differences either: `predict` guesses each increment
//! (the same as last interval; packets from bytes by last interval's ratio; a row's and a
//! class's from the sum of their remote hosts') and only the miss is written, so a counter
//! that moves as it moved before costs nothing.

mod decode;
mod encode;
mod mirror;
mod predict;

use std::time::Duration;

pub use decode::{Corrupt, Decoder, Head};
pub use encode::{Encoder, Stats};

use super::wire::Put;
use crate::sampling::rate_bps;

/// What an entity is. The numbers are the format's: never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// The report's `untracked` figures (one per frame).
    Meta = 0,
    /// The `-a` aggregate row.
    Aggregate = 1,
    /// A process row.
    Process = 2,
    /// A workload row (whole cgroup, container, `--all` group).
    Workload = 3,
    /// A remote host of a row.
    Dest = 4,
    /// A destination class of a row.
    Class = 5,
    /// A connection of a row (`--details`).
    Conn = 6,
    /// A time a process row's traffic could not be seen (a move to another cgroup).
    Gap = 7,
}

/// Which clock a kind's rates run on: rows, hosts and classes are sampled at the tick;
/// connections when the report is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `Session::tick`'s instant.
    Tick,
    /// `Session::snapshot`'s (the connection records).
    Snapshot,
}

/// The fixed layout of a kind: how many fields of each sort, and where its rates come from.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Counters and other integers.
    pub nums: usize,
    /// Exact floats (peaks).
    pub floats: usize,
    /// Strings.
    pub strs: usize,
    /// Indices of `nums` summed into the bytes in / bytes out that rates derive from.
    pub rate_from: Option<(&'static [usize], &'static [usize], Clock)>,
    /// Indices of `nums` and `strs` that identify the entity among its siblings.
    pub key: (&'static [usize], &'static [usize]),
}

/// A row's TCP health, appended to its numbers: connect failures, retransmitted segments,
/// the RTT samples' sum (µs), then the RTT histogram's buckets (`model::RTT_BUCKETS`).
pub const HEALTH_NUMS: usize = 3 + crate::model::RTT_BUCKETS;

/// Traffic by protocol: tcp, udp, other × (bytes in, bytes out, packets in, packets out).
const ROW_IN: &[usize] = &[0, 4, 8];
const ROW_OUT: &[usize] = &[1, 5, 9];

impl Kind {
    /// Every kind, by number.
    pub const ALL: [Kind; 8] = [
        Kind::Meta,
        Kind::Aggregate,
        Kind::Process,
        Kind::Workload,
        Kind::Dest,
        Kind::Class,
        Kind::Conn,
        Kind::Gap,
    ];

    /// The kind numbered `b`.
    pub fn from_u8(b: u8) -> Option<Self> {
        Self::ALL.get(usize::from(b)).copied()
    }

    /// Its layout (see `convert` for what each field holds).
    pub const fn shape(self) -> Shape {
        match self {
            Kind::Meta => Shape {
                nums: 6,
                floats: 0,
                strs: 0,
                rate_from: None,
                key: (&[], &[]),
            },
            Kind::Aggregate => Shape {
                nums: 6 + HEALTH_NUMS,
                floats: 2,
                strs: 0,
                rate_from: Some((&[0], &[1], Clock::Tick)),
                key: (&[], &[]),
            },
            Kind::Process => Shape {
                nums: 24 + HEALTH_NUMS,
                floats: 2,
                strs: 9,
                rate_from: Some((ROW_IN, ROW_OUT, Clock::Tick)),
                key: (&[19], &[0]),
            },
            Kind::Workload => Shape {
                nums: 21 + HEALTH_NUMS,
                floats: 2,
                strs: 9,
                rate_from: Some((ROW_IN, ROW_OUT, Clock::Tick)),
                key: (&[], &[0, 1]),
            },
            Kind::Dest => Shape {
                nums: 6,
                floats: 0,
                strs: 3,
                rate_from: Some((&[0], &[1], Clock::Tick)),
                key: (&[], &[0]),
            },
            Kind::Class => Shape {
                nums: 12,
                floats: 0,
                strs: 1,
                rate_from: Some((ROW_IN, ROW_OUT, Clock::Tick)),
                key: (&[], &[0]),
            },
            Kind::Conn => Shape {
                nums: 5,
                floats: 0,
                strs: 4,
                rate_from: Some((&[0], &[1], Clock::Snapshot)),
                key: (&[], &[0, 1, 2]),
            },
            Kind::Gap => Shape {
                nums: 3,
                floats: 0,
                strs: 1,
                rate_from: None,
                key: (&[0], &[0]),
            },
        }
    }
}

impl Kind {
    /// Where a row kind's TCP health starts in its numbers ([`HEALTH_NUMS`] of them, last).
    pub const fn health_at(self) -> Option<usize> {
        match self {
            Kind::Aggregate => Some(6),
            Kind::Process => Some(24),
            Kind::Workload => Some(21),
            Kind::Meta | Kind::Dest | Kind::Class | Kind::Conn | Kind::Gap => None,
        }
    }
}

/// One row, host, class, connection or the frame's meta figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// What it is.
    pub kind: Kind,
    /// The row it belongs to: an index into the frame's entities (always an earlier one).
    pub parent: Option<usize>,
    /// Integers (`kind.shape().nums` of them).
    pub nums: Vec<u64>,
    /// Exact floats.
    pub floats: Vec<f64>,
    /// Strings.
    pub strs: Vec<Option<String>>,
    /// Receive and send rates, bits/s (kinds with rates; else zeros).
    pub rates: (f64, f64),
}

impl Entity {
    /// An entity of `kind` with every field zero or none.
    pub fn new(kind: Kind, parent: Option<usize>) -> Self {
        let s = kind.shape();
        Self {
            kind,
            parent,
            nums: vec![0; s.nums],
            floats: vec![0.0; s.floats],
            strs: vec![None; s.strs],
            rates: (0.0, 0.0),
        }
    }

    /// The bytes in and out its rates derive from.
    pub(crate) fn rate_bytes(&self) -> Option<(u64, u64, Clock)> {
        rate_bytes_of(self.kind, &self.nums)
    }

    /// Rates over `dt_ns` since `prev` (none: since zero), as the session computes them.
    pub(crate) fn derived_rates(&self, prev: Option<&Entity>, dt_ns: u64) -> (f64, f64) {
        self.derived_from(prev.map_or(&[][..], |p| &p.nums), dt_ns)
    }

    /// Rates over `dt_ns` since the numbers were `prev` (empty: zero).
    pub(crate) fn derived_from(&self, prev: &[u64], dt_ns: u64) -> (f64, f64) {
        let Some((bi, bo, _)) = self.rate_bytes() else {
            return (0.0, 0.0);
        };
        let (pi, po) = rate_bytes_of(self.kind, prev).map_or((0, 0), |(a, b, _)| (a, b));
        let dt = Duration::from_nanos(dt_ns);
        (
            rate_bps(bi.saturating_sub(pi), dt),
            rate_bps(bo.saturating_sub(po), dt),
        )
    }

    /// The fields that tell it from its siblings, as bytes.
    pub(crate) fn key_bytes(&self, out: &mut Vec<u8>) {
        out.push(self.kind as u8);
        let (nums, strs) = self.kind.shape().key;
        let mut p = Put(std::mem::take(out));
        for &n in nums {
            p.u(self.nums.get(n).copied().unwrap_or(0));
        }
        for &s in strs {
            p.os(self.strs.get(s).and_then(|s| s.as_deref()));
        }
        *out = p.0;
    }
}

/// The bytes in and out `kind`'s rates derive from, in `nums` (missing fields count 0).
fn rate_bytes_of(kind: Kind, nums: &[u64]) -> Option<(u64, u64, Clock)> {
    let (i, o, clock) = kind.shape().rate_from?;
    let sum = |ix: &[usize]| {
        ix.iter()
            .map(|&k| nums.get(k).copied().unwrap_or(0))
            .fold(0_u64, u64::saturating_add)
    };
    Some((sum(i), sum(o), clock))
}

/// One frame: a report, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Its number within the run (the first frame is 1).
    pub seq: u64,
    /// The report's wall-clock time, nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The report's UTC offset, seconds.
    pub offset_s: i32,
    /// The interval the rows' rates cover, nanoseconds (set by the encoder and decoder).
    pub dt_ns: u64,
    /// The interval the connections' rates cover.
    pub conn_dt_ns: u64,
    /// The report was a window's final one (its rates were averages, not interval rates).
    pub is_final: bool,
    /// Rows first, each followed by its connections, hosts and classes.
    pub entities: Vec<Entity>,
}

const FLAG_KEY: u8 = 1;
const FLAG_FINAL: u8 = 2;
const FLAG_CONN_DT: u8 = 4;
const FLAG_OFFSET: u8 = 8;

const OP_UPDATE: u64 = 0;
const OP_ADD: u64 = 1;
const OP_REMOVE: u64 = 2;
const OP_ORDER: u64 = 3;

/// The order entities are resolved in within a frame: what others are predicted from first
/// (remote hosts before the classes and rows they sum into).
fn rank(kind: Kind) -> u8 {
    match kind {
        Kind::Dest | Kind::Conn | Kind::Meta | Kind::Gap => 0,
        Kind::Class => 1,
        Kind::Process | Kind::Workload => 2,
        Kind::Aggregate => 3,
    }
}

/// The interval `e`'s rates run over.
fn dt_for(e: &Entity, (tick, snapshot): (u64, u64)) -> u64 {
    match e.rate_bytes() {
        Some((_, _, Clock::Snapshot)) => snapshot,
        _ => tick,
    }
}

/// Equal as the same bits (a NaN rate compares equal to itself).
fn same_rates(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0.to_bits() == b.0.to_bits() && a.1.to_bits() == b.1.to_bits()
}
