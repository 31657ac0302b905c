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

/// Ids are small (numbered from 1 within a block, never reused in it): slots live in a
/// vector indexed by id. A larger id than this is corrupt input.
pub const MAX_ID: u32 = 1 << 24;

/// Entities by id.
#[derive(Debug, Default, Clone)]
pub struct Slots {
    v: Vec<Option<Slot>>,
    len: usize,
}

impl Slots {
    /// The slot of `id`.
    pub fn get(&self, id: &u32) -> Option<&Slot> {
        self.v.get(*id as usize).and_then(Option::as_ref)
    }

    /// The slot of `id`, to change.
    pub fn get_mut(&mut self, id: &u32) -> Option<&mut Slot> {
        self.v.get_mut(*id as usize).and_then(Option::as_mut)
    }

    /// True when `id` has a slot.
    pub fn contains_key(&self, id: &u32) -> bool {
        self.get(id).is_some()
    }

    /// Sets `id`'s slot (ids up to [`MAX_ID`]; false for a larger one).
    pub fn insert(&mut self, id: u32, slot: Slot) -> bool {
        if id >= MAX_ID {
            return false;
        }
        let i = id as usize;
        if i >= self.v.len() {
            self.v.resize_with(i + 1, || None);
        }
        if self.v[i].replace(slot).is_none() {
            self.len += 1;
        }
        true
    }

    /// Removes `id`'s slot.
    pub fn remove(&mut self, id: &u32) -> Option<Slot> {
        let s = self.v.get_mut(*id as usize)?.take();
        if s.is_some() {
            self.len -= 1;
        }
        s
    }

    /// Every (id, slot), by id.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Slot)> {
        self.v
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u32, s.as_ref()?)))
    }

    /// Every id, in order.
    pub fn keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.iter().map(|(i, _)| i)
    }

    /// How many.
    pub fn count(&self) -> usize {
        self.len
    }
}

impl std::ops::Index<&u32> for Slots {
    type Output = Slot;

    fn index(&self, id: &u32) -> &Slot {
        self.get(id).unwrap_or_else(|| panic!("no entity {id}"))
    }
}

/// What the encoder and the decoder both remember between frames: entities by id and the
/// order of each list.
#[derive(Debug, Default, Clone)]
pub struct Mirror {
    /// Every entity of the last frame.
    pub by_id: Slots,
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
            fn remote(e: &Entity) -> &str {
                e.strs[0].as_deref().unwrap_or_default()
            }
            v.sort_by(|a, b| {
                let (ea, eb) = (ent(a), ent(b));
                let (oa, ob) = (remote(ea) == "other", remote(eb) == "other");
                oa.cmp(&ob)
                    .then(volume(eb).cmp(&volume(ea)))
                    .then(remote(ea).cmp(remote(eb)))
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
        for (id, slot) in self.by_id.iter() {
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
        for (id, slot) in self.by_id.iter() {
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
