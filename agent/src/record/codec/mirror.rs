//! What the encoder and the decoder both remember between frames: each entity by id with
//! its last increments, and the order of each list.

use std::collections::{HashMap, HashSet};

use super::{Entity, Kind};

/// An entity's list: (parent id, kind); the root's id is 0.
pub type ListKey = (u32, Kind);

/// An entity as both sides remember it.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Its list's parent id (0: the root).
    pub parent: u32,
    /// Its values.
    pub e: Entity,
    /// The last increment of each number (what predicts the next).
    pub last: Vec<i64>,
}

/// The slot of an entity just added: in a key frame its last increments are unknown (zero);
/// later, it counted from zero.
pub fn added(parent: u32, e: Entity, key: bool) -> Slot {
    let last = if key {
        vec![0; e.nums.len()]
    } else {
        e.nums.iter().map(|&n| n as i64).collect()
    };
    Slot { parent, e, last }
}

/// What the encoder and the decoder both remember between frames: entities by id and the
/// order of each list.
#[derive(Debug, Default, Clone)]
pub struct Mirror {
    /// Every entity of the last frame.
    pub by_id: HashMap<u32, Slot>,
    /// Each list's order in the last frame.
    pub orders: HashMap<ListKey, Vec<u32>>,
    /// The last frame's time.
    pub time_ns: i64,
    /// The last frame's UTC offset.
    pub offset_s: i32,
}

impl Mirror {
    /// The order a list takes when no ORDER op says otherwise: remote hosts busiest first
    /// (then by address, `other` last), as reports list them; anything else keeps its
    /// previous order, newcomers last in the order they came.
    pub fn default_order(&self, list: ListKey, members: &[u32]) -> Vec<u32> {
        if list.1 == Kind::Dest {
            let mut v = members.to_vec();
            let ent = |id: &u32| &self.by_id[id].e;
            let volume = |e: &Entity| e.nums[0].saturating_add(e.nums[1]);
            let remote = |e: &Entity| e.strs[0].clone().unwrap_or_default();
            v.sort_by(|a, b| {
                let (ea, eb) = (ent(a), ent(b));
                let (oa, ob) = (remote(ea) == "other", remote(eb) == "other");
                oa.cmp(&ob)
                    .then(volume(eb).cmp(&volume(ea)))
                    .then(remote(ea).cmp(&remote(eb)))
            });
            return v;
        }
        let present: HashSet<u32> = members.iter().copied().collect();
        let mut out: Vec<u32> = self
            .orders
            .get(&list)
            .map(|o| o.iter().copied().filter(|i| present.contains(i)).collect())
            .unwrap_or_default();
        let known: HashSet<u32> = out.iter().copied().collect();
        let mut new: Vec<u32> = members
            .iter()
            .copied()
            .filter(|i| !known.contains(i))
            .collect();
        new.sort_unstable();
        out.extend(new);
        out
    }

    /// Every list's members (unordered).
    pub fn lists(&self) -> HashMap<ListKey, Vec<u32>> {
        let mut lists: HashMap<ListKey, Vec<u32>> = HashMap::new();
        for (&id, slot) in &self.by_id {
            lists
                .entry((slot.parent, slot.e.kind))
                .or_default()
                .push(id);
        }
        lists
    }

    /// Remote hosts by the row they belong to.
    pub fn hosts_by_row(&self) -> HashMap<u32, Vec<u32>> {
        let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
        for (&id, slot) in &self.by_id {
            if slot.e.kind == Kind::Dest {
                out.entry(slot.parent).or_default().push(id);
            }
        }
        out
    }

    /// This interval's increments (bytes in, bytes out, packets in, packets out) summed over
    /// the remote hosts entity `id` is predicted from: a row's hosts, or a class's hosts of
    /// that class. None for other kinds, and when there are none.
    pub fn sums(&self, id: u32, hosts: &HashMap<u32, Vec<u32>>) -> Option<[i64; 4]> {
        let slot = self.by_id.get(&id)?;
        let (row, class) = match slot.e.kind {
            Kind::Process | Kind::Workload => (id, None),
            Kind::Class => (slot.parent, Some(slot.e.strs[0].as_deref())),
            _ => return None,
        };
        let mut sum = [0_i64; 4];
        let mut any = false;
        for h in hosts.get(&row)? {
            let d = &self.by_id[h];
            if class.is_some_and(|c| d.e.strs[2].as_deref() != c) {
                continue;
            }
            any = true;
            for (s, l) in sum.iter_mut().zip(&d.last) {
                *s = s.wrapping_add(*l);
            }
        }
        any.then_some(sum)
    }
}
