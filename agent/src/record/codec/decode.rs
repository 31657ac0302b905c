//! The decoder: rebuilds each frame from the previous one and its operations.

use std::collections::{HashMap, HashSet};

use super::{
    Entity, FLAG_CONN_DT, FLAG_FINAL, FLAG_KEY, FLAG_OFFSET, Frame, Kind, OP_ADD, OP_REMOVE,
    OP_UPDATE, dt_for,
    mirror::{ListKey, Mirror, added},
    predict::{MAX_NUMS, field_order, step},
    rank,
};
use crate::record::wire::Get;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Corrupt {}

const BAD: Corrupt = Corrupt("frame does not parse");

/// Rebuilds frames from their encodings, in order.
#[derive(Debug, Default, Clone)]
pub struct Decoder {
    mirror: Mirror,
    started: bool,
    /// The last frame's written orders of remote hosts' lists, by row id.
    dest_orders: HashMap<u32, Vec<u32>>,
}

/// The three streams of a frame's operations: structure, integers, the rest.
struct Streams<'a> {
    s: Get<'a>,
    v: Get<'a>,
    x: Get<'a>,
}

/// An update read but not applied yet (entities are resolved in `rank` order).
#[derive(Default)]
struct Pending {
    residuals: Vec<(usize, i64)>,
    explicit: Option<(f64, f64)>,
    floats: Vec<(usize, f64)>,
    strs: Vec<(usize, Option<String>)>,
}

/// A frame's header fields.
#[derive(Debug, Clone, Copy)]
pub struct Head {
    /// Its number.
    pub seq: u64,
    flags: u8,
    /// Its time, ns since the epoch.
    pub time_ns: i64,
    /// Its intervals (rows', connections'), ns.
    pub dts: (u64, u64),
    /// Its UTC offset.
    pub offset_s: i32,
}

impl Decoder {
    /// True once a key frame was decoded: delta frames can follow.
    pub fn ready(&self) -> bool {
        self.started
    }

    /// Decodes one frame. A delta frame before any key frame, or bytes that do not parse,
    /// are [`Corrupt`]; the decoder then waits for the next key frame.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Frame, Corrupt> {
        let h = self.apply(bytes)?;
        self.frame(&h).ok_or(BAD)
    }

    /// Moves the state on by one frame without building it (seeking passes frames so);
    /// returns the frame's header.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<Head, Corrupt> {
        let r = self.apply_inner(bytes);
        if r.is_err() {
            self.started = false;
        }
        r
    }

    fn head(&self, g: &mut Get<'_>) -> Result<Head, Corrupt> {
        let seq = g.u().ok_or(BAD)?;
        let flags = g.b().ok_or(BAD)?;
        let key = flags & FLAG_KEY != 0;
        if !key && !self.started {
            return Err(Corrupt("delta frame without its key frame"));
        }
        let t = g.i().ok_or(BAD)?;
        let time_ns = if key {
            t
        } else {
            self.mirror.time_ns.wrapping_add(t)
        };
        let dt_ns = g.u().ok_or(BAD)?;
        let conn_dt_ns = if flags & FLAG_CONN_DT != 0 {
            g.u().ok_or(BAD)?
        } else {
            dt_ns
        };
        let offset_s = if flags & FLAG_OFFSET != 0 {
            i32::try_from(g.i().ok_or(BAD)?).map_err(|_| BAD)?
        } else {
            self.mirror.offset_s
        };
        Ok(Head {
            seq,
            flags,
            time_ns,
            dts: (dt_ns, conn_dt_ns),
            offset_s,
        })
    }

    fn apply_inner(&mut self, bytes: &[u8]) -> Result<Head, Corrupt> {
        let mut g = Get::new(bytes);
        let h = self.head(&mut g)?;
        let key = h.flags & FLAG_KEY != 0;
        // Applied in place: a frame that fails half-way leaves the state unusable, and the
        // decoder waits for the next key frame (`apply` clears `started`).
        if key {
            self.mirror = Mirror::default();
        }
        let m = &mut self.mirror;
        let n_ops = g.u().ok_or(BAD)?;
        let s_len = usize::try_from(g.u().ok_or(BAD)?).map_err(|_| BAD)?;
        let v_len = usize::try_from(g.u().ok_or(BAD)?).map_err(|_| BAD)?;
        let mut st = Streams {
            s: Get::new(g.take(s_len).ok_or(BAD)?),
            v: Get::new(g.take(v_len).ok_or(BAD)?),
            x: g,
        };
        let mut ops = Ops::default();
        for _ in 0..n_ops {
            read_op(&mut st, m, &mut ops, key, h.dts).ok_or(BAD)?;
        }
        if !(st.s.done() && st.v.done() && st.x.done()) {
            return Err(BAD);
        }
        resolve(m, &mut ops, h.dts).ok_or(BAD)?;
        update_orders(m, &ops).ok_or(BAD)?;
        self.dest_orders = ops.dest_orders;
        m.time_ns = h.time_ns;
        m.offset_s = h.offset_s;
        self.started = true;
        Ok(h)
    }

    /// The rows (processes, workloads, the aggregate) of the state, by id, without building
    /// the frame: ids stay the same within a block.
    pub fn rows(&self) -> impl Iterator<Item = (u32, &Entity)> {
        self.mirror
            .by_id
            .iter()
            .filter(|(_, s)| matches!(s.e.kind, Kind::Process | Kind::Workload | Kind::Aggregate))
            .map(|(id, s)| (id, &s.e))
    }

    /// The frame the state holds after [`Self::apply`] returned `h`.
    pub fn frame(&self, h: &Head) -> Option<Frame> {
        let m = &self.mirror;
        let mut out = Vec::with_capacity(m.by_id.count());
        let hosts = m.hosts_by_row();
        visit(m, &hosts, &self.dest_orders, 0, None, &mut out)?;
        Some(Frame {
            seq: h.seq,
            time_ns: h.time_ns,
            offset_s: h.offset_s,
            dt_ns: h.dts.0,
            conn_dt_ns: h.dts.1,
            is_final: h.flags & FLAG_FINAL != 0,
            entities: out,
        })
    }
}

/// What one frame's operations left to do after reading: updates to resolve, lists whose
/// members changed, orders given.
#[derive(Default)]
struct Ops {
    /// Updates by id (resolved in `rank` order).
    pending: HashMap<u32, Pending>,
    /// Ids added in this frame.
    new: HashSet<u32>,
    /// Lists that gained or lost members.
    changed: HashSet<ListKey>,
    /// Orders written for lists other than remote hosts'.
    orders: Vec<(ListKey, Vec<u32>)>,
    /// Orders written for remote hosts' lists (they hold for this frame only: otherwise
    /// hosts are listed busiest first).
    dest_orders: HashMap<u32, Vec<u32>>,
}

/// Reads one operation: removals and additions apply at once, updates wait in `ops`, and
/// so do orders.
fn read_op(
    g: &mut Streams<'_>,
    m: &mut Mirror,
    ops: &mut Ops,
    key: bool,
    dts: (u64, u64),
) -> Option<()> {
    let head = g.s.u()?;
    let id = u32::try_from(head >> 2).ok()?;
    match head & 3 {
        OP_ADD => {
            let kind = Kind::from_u8(g.s.b()?)?;
            let parent = u32::try_from(g.s.u()?).ok()?;
            // Rows hang from the root, everything else from a row: two levels at most.
            let row = |k: Kind| matches!(k, Kind::Process | Kind::Workload);
            let fits = match m.by_id.get(&parent) {
                None => parent == 0 && (row(kind) || kind <= Kind::Aggregate),
                Some(p) => row(p.e.kind) && kind >= Kind::Dest,
            };
            if !fits || m.by_id.contains_key(&id) || id == 0 {
                return None;
            }
            let mut e = Entity::new(kind, None);
            for n in &mut e.nums {
                *n = g.v.u()?;
            }
            for f in &mut e.floats {
                *f = g.x.f()?;
            }
            for s in &mut e.strs {
                *s = g.x.os()?;
            }
            e.rates = match g.s.b()? {
                0 if key => (0.0, 0.0),
                0 => e.derived_rates(None, dt_for(&e, dts)),
                _ => (g.x.f()?, g.x.f()?),
            };
            ops.changed.insert((parent, kind));
            if !m.by_id.insert(id, added(parent, e, key)) {
                return None;
            }
            ops.new.insert(id);
        }
        OP_UPDATE => {
            let e = &m.by_id.get(&id)?.e;
            if ops.pending.contains_key(&id) || ops.new.contains(&id) {
                return None;
            }
            let mask = g.s.w()?;
            let mut p = Pending::default();
            if mask & 1 != 0 {
                p.explicit = Some((g.x.f()?, g.x.f()?));
            }
            for &i in field_order(e.kind) {
                if mask & (2 << i) != 0 {
                    p.residuals.push((i, g.v.i()?));
                }
            }
            let mut bit = 2_u128 << e.nums.len();
            for i in 0..e.floats.len() {
                if mask & bit != 0 {
                    p.floats.push((i, g.x.f()?));
                }
                bit <<= 1;
            }
            for i in 0..e.strs.len() {
                if mask & bit != 0 {
                    p.strs.push((i, g.x.os()?));
                }
                bit <<= 1;
            }
            ops.pending.insert(id, p);
        }
        OP_REMOVE => {
            let gone = m.by_id.remove(&id)?;
            ops.changed.insert((gone.parent, gone.e.kind));
        }
        _ => {
            let kind = Kind::from_u8(g.s.b()?)?;
            let n = usize::try_from(g.s.u()?).ok()?;
            let mut ids = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                ids.push(u32::try_from(g.s.u()?).ok()?);
            }
            if kind == Kind::Dest {
                ops.dest_orders.insert(id, ids);
            } else {
                ops.orders.push(((id, kind), ids));
            }
        }
    }
    Some(())
}

/// Moves every entity not added in this frame on by its prediction plus what its update
/// (if any) wrote, in `rank` order, and sets its rates.
fn resolve(m: &mut Mirror, ops: &mut Ops, dts: (u64, u64)) -> Option<()> {
    let hosts = m.hosts_by_row();
    let mut ids: Vec<(u8, u32)> = m
        .by_id
        .iter()
        .filter(|(id, _)| !ops.new.contains(id))
        .map(|(id, s)| (rank(s.e.kind), id))
        .collect();
    ids.sort_unstable();
    let mut prev = [0_u64; MAX_NUMS];
    for (_, id) in ids {
        let sums = m.sums(id, &hosts);
        let p = ops.pending.remove(&id).unwrap_or_default();
        let slot = m.by_id.get_mut(&id)?;
        let n = slot.e.nums.len().min(MAX_NUMS);
        prev[..n].copy_from_slice(&slot.e.nums[..n]);
        step(slot.e.kind, &mut slot.e.nums, &mut slot.last, sums, |i| {
            Some(
                p.residuals
                    .iter()
                    .find(|(k, _)| *k == i)
                    .map_or(0, |(_, r)| *r),
            )
        })?;
        for (i, f) in p.floats {
            slot.e.floats[i] = f;
        }
        for (i, s) in p.strs {
            slot.e.strs[i] = s;
        }
        let dt = dt_for(&slot.e, dts);
        slot.e.rates = p
            .explicit
            .unwrap_or_else(|| slot.e.derived_from(&prev[..n], dt));
    }
    Some(())
}

/// Keeps each list's order (other than remote hosts', which are sorted when a frame is
/// built): as written, or the previous order with newcomers last, for lists whose members
/// changed. A written order must name exactly the list's members.
fn update_orders(m: &mut Mirror, ops: &Ops) -> Option<()> {
    if ops.changed.is_empty() && ops.orders.is_empty() && ops.dest_orders.is_empty() {
        return Some(());
    }
    let lists = m.lists();
    for list in &ops.changed {
        if list.1 == Kind::Dest {
            continue;
        }
        match lists.get(list) {
            Some(members) => {
                let order = m.default_order(*list, members);
                m.orders.insert(*list, order);
            }
            None => {
                m.orders.remove(list);
            }
        }
    }
    let same = |written: &[u32], list: &ListKey| {
        let mut a = written.to_vec();
        let mut b = lists.get(list).cloned().unwrap_or_default();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    };
    for (list, order) in &ops.orders {
        if !same(order, list) {
            return None;
        }
        m.orders.insert(*list, order.clone());
    }
    for (parent, order) in &ops.dest_orders {
        if !same(order, &(*parent, Kind::Dest)) {
            return None;
        }
    }
    Some(())
}

/// Depth-first from `parent`: its lists kind by kind (remote hosts busiest first unless
/// this frame wrote their order), each entity followed by its own lists.
fn visit(
    m: &Mirror,
    hosts: &HashMap<u32, Vec<u32>>,
    dest_orders: &HashMap<u32, Vec<u32>>,
    parent: u32,
    parent_ix: Option<usize>,
    out: &mut Vec<Entity>,
) -> Option<()> {
    for kind in Kind::ALL {
        let sorted;
        let ids: &[u32] = if kind == Kind::Dest {
            match (dest_orders.get(&parent), hosts.get(&parent)) {
                (Some(o), _) => o,
                (None, Some(members)) => {
                    sorted = m.default_order((parent, kind), members);
                    &sorted
                }
                (None, None) => continue,
            }
        } else {
            match m.orders.get(&(parent, kind)) {
                Some(o) => o,
                None => continue,
            }
        };
        for id in ids {
            let mut e = m.by_id.get(id)?.e.clone();
            e.parent = parent_ix;
            out.push(e);
            let ix = out.len() - 1;
            if parent == 0 {
                visit(m, hosts, dest_orders, *id, Some(ix), out)?;
            }
        }
    }
    Some(())
}
