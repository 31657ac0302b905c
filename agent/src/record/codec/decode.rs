//! The decoder: rebuilds each frame from the previous one and its operations.

use std::collections::{HashMap, HashSet};

use super::{
    Entity, FLAG_CONN_DT, FLAG_FINAL, FLAG_KEY, FLAG_OFFSET, Frame, Kind, OP_ADD, OP_REMOVE,
    OP_UPDATE, dt_for,
    mirror::{ListKey, Mirror, added},
    predict::{field_order, step},
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
    residuals: HashMap<usize, i64>,
    explicit: Option<(f64, f64)>,
    floats: Vec<(usize, f64)>,
    strs: Vec<(usize, Option<String>)>,
}

/// A frame's header fields.
struct Head {
    seq: u64,
    flags: u8,
    time_ns: i64,
    dts: (u64, u64),
    offset_s: i32,
}

impl Decoder {
    /// True once a key frame was decoded: delta frames can follow.
    pub fn ready(&self) -> bool {
        self.started
    }

    /// Decodes one frame. A delta frame before any key frame, or bytes that do not parse,
    /// are [`Corrupt`]; the decoder then waits for the next key frame.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Frame, Corrupt> {
        let r = self.decode_inner(bytes);
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

    fn decode_inner(&mut self, bytes: &[u8]) -> Result<Frame, Corrupt> {
        let mut g = Get::new(bytes);
        let h = self.head(&mut g)?;
        let key = h.flags & FLAG_KEY != 0;
        // Work on a copy: a frame that fails half-way leaves the state as it was.
        let mut m = if key {
            Mirror::default()
        } else {
            self.mirror.clone()
        };
        let n_ops = g.u().ok_or(BAD)?;
        let s_len = usize::try_from(g.u().ok_or(BAD)?).map_err(|_| BAD)?;
        let v_len = usize::try_from(g.u().ok_or(BAD)?).map_err(|_| BAD)?;
        let mut st = Streams {
            s: Get::new(g.take(s_len).ok_or(BAD)?),
            v: Get::new(g.take(v_len).ok_or(BAD)?),
            x: g,
        };
        let mut orders: HashMap<ListKey, Vec<u32>> = HashMap::new();
        let mut pending: HashMap<u32, Pending> = HashMap::new();
        let mut new: HashSet<u32> = HashSet::new();
        for _ in 0..n_ops {
            read_op(
                &mut st,
                &mut m,
                &mut orders,
                &mut pending,
                &mut new,
                key,
                h.dts,
            )
            .ok_or(BAD)?;
        }
        if !(st.s.done() && st.v.done() && st.x.done()) {
            return Err(BAD);
        }
        resolve(&mut m, &mut pending, &new, h.dts).ok_or(BAD)?;
        m.time_ns = h.time_ns;
        m.offset_s = h.offset_s;
        let entities = order_entities(&mut m, &orders).ok_or(BAD)?;
        self.mirror = m;
        self.started = true;
        Ok(Frame {
            seq: h.seq,
            time_ns: h.time_ns,
            offset_s: h.offset_s,
            dt_ns: h.dts.0,
            conn_dt_ns: h.dts.1,
            is_final: h.flags & FLAG_FINAL != 0,
            entities,
        })
    }
}

/// Reads one operation: removals and additions apply at once, updates wait in `pending`,
/// orders in `orders`.
fn read_op(
    g: &mut Streams<'_>,
    m: &mut Mirror,
    orders: &mut HashMap<ListKey, Vec<u32>>,
    pending: &mut HashMap<u32, Pending>,
    new: &mut HashSet<u32>,
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
            m.by_id.insert(id, added(parent, e, key));
            new.insert(id);
        }
        OP_UPDATE => {
            let e = &m.by_id.get(&id)?.e;
            if pending.contains_key(&id) || new.contains(&id) {
                return None;
            }
            let mask = g.s.u()?;
            let mut p = Pending::default();
            if mask & 1 != 0 {
                p.explicit = Some((g.x.f()?, g.x.f()?));
            }
            for &i in field_order(e.kind) {
                if mask & (2 << i) != 0 {
                    p.residuals.insert(i, g.v.i()?);
                }
            }
            let mut bit = 2_u64 << e.nums.len();
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
            pending.insert(id, p);
        }
        OP_REMOVE => {
            m.by_id.remove(&id)?;
        }
        _ => {
            let kind = Kind::from_u8(g.s.b()?)?;
            let n = usize::try_from(g.s.u()?).ok()?;
            let mut ids = Vec::with_capacity(n.min(1 << 16));
            for _ in 0..n {
                ids.push(u32::try_from(g.s.u()?).ok()?);
            }
            orders.insert((id, kind), ids);
        }
    }
    Some(())
}

/// Moves every entity not added in this frame on by its prediction plus what its update
/// (if any) wrote, in `rank` order, and sets its rates.
fn resolve(
    m: &mut Mirror,
    pending: &mut HashMap<u32, Pending>,
    new: &HashSet<u32>,
    dts: (u64, u64),
) -> Option<()> {
    let hosts = m.hosts_by_row();
    let mut ids: Vec<(u8, u32)> = m
        .by_id
        .iter()
        .filter(|(id, _)| !new.contains(id))
        .map(|(id, s)| (rank(s.e.kind), *id))
        .collect();
    ids.sort_unstable();
    for (_, id) in ids {
        let sums = m.sums(id, &hosts);
        let p = pending.remove(&id).unwrap_or_default();
        let slot = m.by_id.get_mut(&id)?;
        let (nums, last) = step(slot.e.kind, &slot.e.nums, &slot.last, sums, |i| {
            Some(p.residuals.get(&i).copied().unwrap_or(0))
        })?;
        let prev = std::mem::replace(&mut slot.e.nums, nums);
        slot.last = last;
        for (i, f) in p.floats {
            slot.e.floats[i] = f;
        }
        for (i, s) in p.strs {
            slot.e.strs[i] = s;
        }
        let dt = dt_for(&slot.e, dts);
        slot.e.rates = p.explicit.unwrap_or_else(|| slot.e.derived_from(&prev, dt));
    }
    Some(())
}

/// The frame's entities in report order (rows, each followed by its lists) after setting
/// the lists' orders.
fn order_entities(m: &mut Mirror, orders: &HashMap<ListKey, Vec<u32>>) -> Option<Vec<Entity>> {
    let lists = m.lists();
    let mut resolved: HashMap<ListKey, Vec<u32>> = HashMap::with_capacity(lists.len());
    for (list, members) in &lists {
        let order = match orders.get(list) {
            Some(o) => {
                let mut a = o.clone();
                let mut b = members.clone();
                a.sort_unstable();
                b.sort_unstable();
                if a != b {
                    return None;
                }
                o.clone()
            }
            None => m.default_order(*list, members),
        };
        resolved.insert(*list, order);
    }
    let mut out = Vec::with_capacity(m.by_id.len());
    visit(m, &resolved, 0, None, &mut out);
    m.orders = resolved;
    Some(out)
}

/// Depth-first: a list's entities, each followed by its own lists, kind by kind.
fn visit(
    m: &Mirror,
    resolved: &HashMap<ListKey, Vec<u32>>,
    parent: u32,
    parent_ix: Option<usize>,
    out: &mut Vec<Entity>,
) {
    for kind in Kind::ALL {
        let Some(ids) = resolved.get(&(parent, kind)) else {
            continue;
        };
        for id in ids {
            let mut e = m.by_id[id].e.clone();
            e.parent = parent_ix;
            out.push(e);
            let ix = out.len() - 1;
            visit(m, resolved, *id, Some(ix), out);
        }
    }
}
