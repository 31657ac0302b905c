//! The encoder: a frame as the operations that turn the previous one into it.

use std::collections::{HashMap, HashSet};

use super::{
    Clock, Entity, FLAG_CONN_DT, FLAG_FINAL, FLAG_KEY, FLAG_OFFSET, Frame, OP_ADD, OP_ORDER,
    OP_REMOVE, OP_UPDATE, dt_for,
    mirror::{ListKey, Mirror, Slot, added},
    predict::{field_order, predicted},
    rank, same_rates,
};
use crate::{record::wire::Put, sampling::rate_bps};

/// What the encoder wrote, by sort (for the benchmark and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    /// Entities added.
    pub adds: u64,
    /// Entities updated.
    pub updates: u64,
    /// Entities removed.
    pub removes: u64,
    /// Lists whose order was written.
    pub orders: u64,
    /// Rates written because they could not be derived.
    pub explicit_rates: u64,
}

/// Writes frames as differences from the one before.
#[derive(Debug, Default)]
pub struct Encoder {
    /// Counts of what was written so far.
    pub stats: Stats,
    mirror: Mirror,
    /// key → id, in the current id space (reset at each key frame).
    ids: HashMap<Vec<u8>, u32>,
    next_id: u32,
    /// The previous frame's entities by key, across key frames (for inferring intervals).
    prev_by_key: HashMap<Vec<u8>, Entity>,
    started: bool,
}

impl Encoder {
    /// Encodes `frame`; `key` starts afresh (a key frame). The frame's `dt_ns` and
    /// `conn_dt_ns` are inferred here (see the module doc) and returned as stored.
    pub fn encode(&mut self, frame: &Frame, key: bool) -> (Vec<u8>, u64, u64) {
        let keys = entity_keys(&frame.entities);
        let wall_dt = if self.started {
            u64::try_from(frame.time_ns.saturating_sub(self.mirror.time_ns)).unwrap_or(0)
        } else {
            0
        };
        let (dt, conn_dt) = if frame.is_final {
            (wall_dt, wall_dt)
        } else {
            (
                self.infer_dt(frame, &keys, Clock::Tick).unwrap_or(wall_dt),
                self.infer_dt(frame, &keys, Clock::Snapshot)
                    .unwrap_or(wall_dt),
            )
        };
        if key {
            self.mirror.by_id = Default::default();
            self.mirror.orders.clear();
            self.ids.clear();
            self.next_id = 1;
        }
        let mut p = Put::default();
        p.u(frame.seq);
        let mut flags = 0;
        if key {
            flags |= FLAG_KEY | FLAG_OFFSET;
        }
        if frame.is_final {
            flags |= FLAG_FINAL;
        }
        if conn_dt != dt {
            flags |= FLAG_CONN_DT;
        }
        if frame.offset_s != self.mirror.offset_s {
            flags |= FLAG_OFFSET;
        }
        p.b(flags);
        p.i(if key {
            frame.time_ns
        } else {
            frame.time_ns.wrapping_sub(self.mirror.time_ns)
        });
        p.u(dt);
        if flags & FLAG_CONN_DT != 0 {
            p.u(conn_dt);
        }
        if flags & FLAG_OFFSET != 0 {
            p.i(i64::from(frame.offset_s));
        }
        let ops = self.ops(frame, &keys, key, (dt, conn_dt));
        self.stats.adds += ops.stats.adds;
        self.stats.updates += ops.stats.updates;
        self.stats.removes += ops.stats.removes;
        self.stats.orders += ops.stats.orders;
        self.stats.explicit_rates += ops.stats.explicit_rates;
        ops.write(&mut p);
        self.mirror.time_ns = frame.time_ns;
        self.mirror.offset_s = frame.offset_s;
        self.prev_by_key = keys
            .into_iter()
            .zip(frame.entities.iter().cloned())
            .collect();
        self.started = true;
        (p.0, dt, conn_dt)
    }

    /// The interval that makes the derived rates equal the reported ones, from the first
    /// entity on `clock` that moved.
    fn infer_dt(&self, frame: &Frame, keys: &[Vec<u8>], clock: Clock) -> Option<u64> {
        for (e, k) in frame.entities.iter().zip(keys) {
            let Some((bi, bo, c)) = e.rate_bytes() else {
                continue;
            };
            if c != clock {
                continue;
            }
            let (pi, po) = self
                .prev_by_key
                .get(k)
                .and_then(Entity::rate_bytes)
                .map_or((0, 0), |(a, b, _)| (a, b));
            for (d, rate) in [
                (bi.saturating_sub(pi), e.rates.0),
                (bo.saturating_sub(po), e.rates.1),
            ] {
                if d == 0
                    || rate.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
                    || !rate.is_finite()
                {
                    continue;
                }
                let guess = (d as f64 * 8.0 / rate * 1e9).round();
                if !(1.0..1e18).contains(&guess) {
                    continue;
                }
                let guess = guess as u64;
                for ns in [guess, guess + 1, guess - 1] {
                    if rate_bps(d, std::time::Duration::from_nanos(ns)) == rate {
                        return Some(ns);
                    }
                }
            }
        }
        None
    }

    /// The operations turning the mirror into `frame`: removals, additions (in frame
    /// order: parents first), updates (in [`rank`] order: what predicts others first), then
    /// the orders of lists that differ from what the decoder will assume.
    fn ops(&mut self, frame: &Frame, keys: &[Vec<u8>], key: bool, dts: (u64, u64)) -> Ops {
        let mut ops = Ops::default();
        let mut ids: Vec<u32> = Vec::with_capacity(frame.entities.len());
        let mut new = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let id = match self.ids.get(k) {
                Some(&id) => id,
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.ids.insert(k.clone(), id);
                    new.push(i);
                    id
                }
            };
            ids.push(id);
        }
        let seen: HashSet<u32> = ids.iter().copied().collect();
        let mut gone: Vec<u32> = self
            .mirror
            .by_id
            .keys()
            .filter(|id| !seen.contains(id))
            .collect();
        gone.sort_unstable();
        for id in gone {
            ops.remove(id);
            self.mirror.by_id.remove(&id);
        }
        self.ids.retain(|_, id| seen.contains(id));
        let parent_of = |e: &Entity| e.parent.and_then(|p| ids.get(p).copied()).unwrap_or(0);
        let is_new: HashSet<usize> = new.iter().copied().collect();
        for &i in &new {
            let e = &frame.entities[i];
            let parent = parent_of(e);
            ops.add(ids[i], parent, e, dt_for(e, dts), key);
            self.mirror
                .by_id
                .insert(ids[i], added(parent, e.clone(), key));
        }
        let hosts = self.mirror.hosts_by_row();
        let mut order: Vec<usize> = (0..frame.entities.len())
            .filter(|i| !is_new.contains(i))
            .collect();
        order.sort_by_key(|&i| rank(frame.entities[i].kind));
        for i in order {
            let (e, id) = (&frame.entities[i], ids[i]);
            let sums = self.mirror.sums(id, &hosts);
            let slot = &self.mirror.by_id[&id];
            let last = ops.update(id, slot, e, dt_for(e, dts), sums);
            let parent = slot.parent;
            self.mirror.by_id.insert(
                id,
                Slot {
                    parent,
                    e: e.clone(),
                    last,
                },
            );
        }
        // Lists in the frame's order, compared with what the decoder will assume.
        let mut actual: HashMap<ListKey, Vec<u32>> = HashMap::new();
        for (i, e) in frame.entities.iter().enumerate() {
            actual
                .entry((parent_of(e), e.kind))
                .or_default()
                .push(ids[i]);
        }
        let mut lists: Vec<(ListKey, Vec<u32>)> = actual.into_iter().collect();
        lists.sort_by_key(|(k, _)| *k);
        for (list, order) in &lists {
            if self.mirror.default_order(*list, order) != *order {
                ops.order(*list, order);
            }
        }
        self.mirror.orders = lists.into_iter().collect();
        ops
    }
}

/// Keys of a frame's entities: kind, parent's key and identifying fields; a duplicate
/// among siblings gets its occurrence number.
fn entity_keys(entities: &[Entity]) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::with_capacity(entities.len());
    let mut count: HashMap<Vec<u8>, u64> = HashMap::new();
    for e in entities {
        let mut k = e
            .parent
            .and_then(|p| keys.get(p).cloned())
            .unwrap_or_default();
        k.push(0xff);
        e.key_bytes(&mut k);
        let n = count.entry(k.clone()).or_insert(0);
        if *n > 0 {
            k.extend_from_slice(format!("#{n}").as_bytes());
        }
        *n += 1;
        keys.push(k);
    }
    keys
}

/// Operations being written, in three streams: their structure (ids, masks, kinds), which
/// repeats from frame to frame and compresses to almost nothing; the integers; and the
/// floats and strings.
#[derive(Default)]
struct Ops {
    s: Put,
    v: Put,
    x: Put,
    count: u64,
    stats: Stats,
}

impl Ops {
    fn head(&mut self, id: u32, op: u64) {
        self.s.u((u64::from(id) << 2) | op);
        self.count += 1;
    }

    /// The streams, each after its length (the last runs to the end).
    fn write(&self, p: &mut Put) {
        p.u(self.count);
        p.u(self.s.0.len() as u64);
        p.u(self.v.0.len() as u64);
        p.0.extend_from_slice(&self.s.0);
        p.0.extend_from_slice(&self.v.0);
        p.0.extend_from_slice(&self.x.0);
    }

    fn add(&mut self, id: u32, parent: u32, e: &Entity, dt: u64, key: bool) {
        self.head(id, OP_ADD);
        self.stats.adds += 1;
        self.s.b(e.kind as u8);
        self.s.u(u64::from(parent));
        for &n in &e.nums {
            self.v.u(n);
        }
        for &f in &e.floats {
            self.x.f(f);
        }
        for s in &e.strs {
            self.x.os(s.as_deref());
        }
        // A key frame's additions carry zero rates unless written; later ones derive theirs
        // from zero.
        let assumed = if key {
            (0.0, 0.0)
        } else {
            e.derived_rates(None, dt)
        };
        if same_rates(assumed, e.rates) {
            self.s.b(0);
        } else {
            self.stats.explicit_rates += 1;
            self.s.b(1);
            self.x.f(e.rates.0);
            self.x.f(e.rates.1);
        }
    }

    /// Writes what differs from the prediction; returns the increments.
    fn update(
        &mut self,
        id: u32,
        slot: &Slot,
        e: &Entity,
        dt: u64,
        sums: Option<[i64; 4]>,
    ) -> Vec<i64> {
        let prev = &slot.e;
        // Bit 0 rates, then one per integer, float and string: wider than 64 bits for rows.
        let mut mask: u128 = 0;
        let mut nums = Put::default();
        let mut rest = Put::default();
        if !same_rates(e.derived_rates(Some(prev), dt), e.rates) {
            mask |= 1;
            self.stats.explicit_rates += 1;
            rest.f(e.rates.0);
            rest.f(e.rates.1);
        }
        // The actual increments, and each one's difference from its prediction (a ratio
        // prediction uses this interval's actual increment of its source, as the decoder
        // will have it).
        let inc: Vec<i64> = e
            .nums
            .iter()
            .zip(&prev.nums)
            .map(|(n, p)| n.wrapping_sub(*p) as i64)
            .collect();
        for &i in field_order(e.kind) {
            let r = inc[i].wrapping_sub(predicted(e.kind, i, &inc, &slot.last, sums));
            if r != 0 {
                mask |= 2 << i;
                nums.i(r);
            }
        }
        let mut bit = 2_u128 << inc.len();
        for (f, p) in e.floats.iter().zip(&prev.floats) {
            if f.to_bits() != p.to_bits() {
                mask |= bit;
                rest.f(*f);
            }
            bit <<= 1;
        }
        for (s, p) in e.strs.iter().zip(&prev.strs) {
            if s != p {
                mask |= bit;
                rest.os(s.as_deref());
            }
            bit <<= 1;
        }
        if mask != 0 {
            self.stats.updates += 1;
            self.head(id, OP_UPDATE);
            self.s.w(mask);
            self.v.0.extend_from_slice(&nums.0);
            self.x.0.extend_from_slice(&rest.0);
        }
        inc
    }

    fn remove(&mut self, id: u32) {
        self.stats.removes += 1;
        self.head(id, OP_REMOVE);
    }

    fn order(&mut self, (parent, kind): ListKey, ids: &[u32]) {
        self.stats.orders += 1;
        self.head(parent, OP_ORDER);
        self.s.b(kind as u8);
        self.s.u(ids.len() as u64);
        for &id in ids {
            self.s.u(u64::from(id));
        }
    }
}
