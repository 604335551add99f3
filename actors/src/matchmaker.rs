//! The index of open rooms that `QuickJoin` picks from. Rooms keep their own listing up to
//! date as members come and go; a listing is a hint, and the room itself has the last
//! word on whether a join fits.

use dashmap::DashMap;
use playtree_protocol::{RoomId, RoomKind};
use ractor::ActorId;
use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves only a stale listing behind, which the
    // rooms rewrite on their next change; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub kind: RoomKind,
    pub variant: String,
    pub members: usize,
    pub capacity: usize,
    /// Whether QuickJoin may pick it (public, and for quizzes still in the lobby).
    pub open: bool,
    /// The incarnation that wrote the listing: only it (or its supervisor, for it)
    /// may remove it, so an old incarnation's exit never unlists its successor.
    pub owner: ActorId,
}

/// The open rooms of one kind and variant.
#[derive(Debug, Default)]
struct Pool {
    rooms: HashMap<RoomId, Entry>,
    /// The rooms with a free seat, fullest first (seats taken or promised; then the
    /// oldest room): QuickJoin takes the first, in O(log n), without scanning.
    with_space: BTreeSet<(Reverse<usize>, RoomId)>,
}

#[derive(Debug)]
struct Entry {
    /// The room's own listing; `None` while a room opened by a QuickJoin has not listed
    /// itself yet (it is being created).
    listing: Option<Listing>,
    /// Seats promised to joins on their way to the room.
    promised: usize,
    capacity: usize,
}

impl Entry {
    fn taken(&self) -> usize {
        self.listing.as_ref().map_or(0, |listing| listing.members) + self.promised
    }

    fn has_space(&self) -> bool {
        self.listing.as_ref().is_none_or(|listing| listing.open) && self.taken() < self.capacity
    }

    fn key(&self, room: RoomId) -> Option<(Reverse<usize>, RoomId)> {
        self.has_space().then_some((Reverse(self.taken()), room))
    }
}

impl Pool {
    /// Changes one room's entry, keeping `with_space` in step.
    fn change<T>(&mut self, room: RoomId, change: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let entry = self.rooms.get_mut(&room)?;
        let before = entry.key(room);
        let result = change(entry);
        let after = entry.key(room);
        if before != after {
            if let Some(key) = before {
                self.with_space.remove(&key);
            }
            if let Some(key) = after {
                self.with_space.insert(key);
            }
        }
        Some(result)
    }

    fn insert(&mut self, room: RoomId, entry: Entry) {
        if let Some(old) = self.rooms.remove(&room)
            && let Some(key) = old.key(room)
        {
            self.with_space.remove(&key);
        }
        if let Some(key) = entry.key(room) {
            self.with_space.insert(key);
        }
        self.rooms.insert(room, entry);
    }

    fn remove(&mut self, room: RoomId) -> Option<Entry> {
        let entry = self.rooms.remove(&room)?;
        if let Some(key) = entry.key(room) {
            self.with_space.remove(&key);
        }
        Some(entry)
    }
}

/// A seat a QuickJoin was promised; hand it back with [`Matchmaker::settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub room: RoomId,
    /// The room may not exist yet: the join must carry its spec (it creates the room).
    pub create: bool,
}

type PoolKey = (RoomKind, String);

/// Open rooms by kind and variant, each pool behind its own lock.
#[derive(Debug, Default)]
pub struct Matchmaker {
    pools: DashMap<PoolKey, Pool>,
    /// The pool each room is in.
    pool_of: DashMap<RoomId, PoolKey>,
    codes: Mutex<HashMap<String, RoomId>>,
}

impl Matchmaker {
    /// Promises a seat to a QuickJoin: in the fullest open room of this kind and
    /// variant with a free seat (counting seats promised to joins still on their way),
    /// or, when there is none, in a new room whose id `open_new` draws (`create`). The
    /// promise makes concurrent joins fill one room before the next is opened.
    pub fn claim<E>(
        &self,
        kind: RoomKind,
        variant: &str,
        capacity: usize,
        excluding: &[RoomId],
        open_new: impl FnOnce() -> Result<RoomId, E>,
    ) -> Result<Claim, E> {
        let key = (kind, variant.to_owned());
        let mut pool = self.pools.entry(key.clone()).or_default();
        let found = pool
            .with_space
            .iter()
            .map(|(_, room)| *room)
            .find(|room| !excluding.contains(room));
        if let Some(room) = found {
            let create = pool
                .change(room, |entry| {
                    entry.promised += 1;
                    entry.listing.is_none()
                })
                .unwrap_or(false);
            return Ok(Claim { room, create });
        }
        let room = open_new()?;
        pool.insert(
            room,
            Entry {
                listing: None,
                promised: 1,
                capacity,
            },
        );
        drop(pool);
        self.pool_of.insert(room, key);
        Ok(Claim { room, create: true })
    }

    /// The join a claim was for has its answer: the seat is taken (the room's listing
    /// says so now) or was not. A room that never listed itself (its creation failed)
    /// is forgotten once no join waits for it.
    pub fn settle(&self, claim: Claim) {
        let Some(key) = self.pool_of.get(&claim.room).map(|key| key.clone()) else {
            return;
        };
        let Some(mut pool) = self.pools.get_mut(&key) else {
            return;
        };
        let abandoned = pool
            .change(claim.room, |entry| {
                entry.promised = entry.promised.saturating_sub(1);
                entry.listing.is_none() && entry.promised == 0
            })
            .unwrap_or(false);
        if abandoned {
            pool.remove(claim.room);
            drop(pool);
            self.pool_of.remove(&claim.room);
        }
    }

    /// The fullest open room of this kind and variant that still has space (no seat is
    /// promised: for looking, not joining).
    pub fn find_open(&self, kind: RoomKind, variant: &str, excluding: &[RoomId]) -> Option<RoomId> {
        let pool = self.pools.get(&(kind, variant.to_owned()))?;
        pool.with_space
            .iter()
            .map(|(_, room)| *room)
            .find(|room| !excluding.contains(room))
    }

    /// A room's own listing, as it changes.
    pub fn update(&self, room: RoomId, listing: Listing) {
        let key = (listing.kind, listing.variant.clone());
        let capacity = listing.capacity;
        let mut pool = self.pools.entry(key.clone()).or_default();
        let listed = pool.change(room, |entry| {
            entry.capacity = capacity;
            entry.listing = Some(listing.clone());
        });
        if listed.is_none() {
            pool.insert(
                room,
                Entry {
                    listing: Some(listing),
                    promised: 0,
                    capacity,
                },
            );
            drop(pool);
            self.pool_of.insert(room, key);
        }
    }

    /// Unlists a room if `owner` wrote its listing; returns the listing removed.
    pub fn remove(&self, room: RoomId, owner: ActorId) -> Option<Listing> {
        let key = self.pool_of.get(&room).map(|key| key.clone())?;
        let listing = {
            let mut pool = self.pools.get_mut(&key)?;
            let owned = pool
                .rooms
                .get(&room)
                .and_then(|entry| entry.listing.as_ref())
                .is_some_and(|listing| listing.owner == owner);
            if !owned {
                return None;
            }
            pool.remove(room)?.listing
        };
        self.pool_of.remove(&room);
        lock(&self.codes).retain(|_, id| *id != room);
        listing
    }
}

impl Matchmaker {
    /// Gives `code` to `room` unless another room holds it; says whether `room` holds it
    /// now. A code is never taken from a room that has it: a collision is refused.
    pub fn register_code(&self, code: &str, room: RoomId) -> bool {
        let mut codes = lock(&self.codes);
        match codes.get(code) {
            Some(holder) => *holder == room,
            None => {
                codes.insert(code.to_owned(), room);
                true
            }
        }
    }

    /// The room of a private code, while that room is active.
    pub fn room_for_code(&self, code: &str) -> Option<RoomId> {
        lock(&self.codes).get(code).copied()
    }

    /// Rooms listed (open or not).
    pub fn open_rooms(&self) -> usize {
        self.pool_of.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(members: usize) -> Listing {
        Listing {
            kind: RoomKind::Wheel,
            variant: "classic".into(),
            members,
            capacity: 3,
            open: true,
            owner: ActorId::Local(members as u64),
        }
    }

    #[test]
    fn picks_the_fullest_room_with_space() {
        let matchmaker = Matchmaker::default();
        matchmaker.update(1, listing(1));
        matchmaker.update(2, listing(2));
        matchmaker.update(3, listing(3));
        assert_eq!(
            matchmaker.find_open(RoomKind::Wheel, "classic", &[]),
            Some(2)
        );
        assert_eq!(
            matchmaker.find_open(RoomKind::Wheel, "classic", &[2]),
            Some(1)
        );
        assert_eq!(matchmaker.find_open(RoomKind::Wheel, "other", &[]), None);
        // Only the incarnation that listed a room unlists it.
        assert!(matchmaker.remove(2, ActorId::Local(99)).is_none());
        assert!(matchmaker.remove(2, ActorId::Local(2)).is_some());
        assert_eq!(
            matchmaker.find_open(RoomKind::Wheel, "classic", &[]),
            Some(1)
        );
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn a_private_code_is_never_taken_from_the_room_that_holds_it() {
        let matchmaker = Matchmaker::default();
        assert!(matchmaker.register_code("ABCDEF", 1));
        assert!(matchmaker.register_code("ABCDEF", 1), "again, same room");
        assert!(
            !matchmaker.register_code("ABCDEF", 2),
            "a collision is refused"
        );
        assert_eq!(matchmaker.room_for_code("ABCDEF"), Some(1));
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    fn listing(members: usize, capacity: usize, owner: u64) -> Listing {
        Listing {
            kind: RoomKind::Wheel,
            variant: "classic".into(),
            members,
            capacity,
            open: true,
            owner: ActorId::Local(owner),
        }
    }

    fn claim(matchmaker: &Matchmaker, next_id: &mut u64, excluding: &[RoomId]) -> Claim {
        matchmaker
            .claim(RoomKind::Wheel, "classic", 2, excluding, || {
                *next_id += 1;
                Ok::<_, ()>(*next_id)
            })
            .expect("claims")
    }

    #[test]
    fn promised_seats_fill_a_new_room_before_the_next_is_opened() {
        let matchmaker = Matchmaker::default();
        let mut ids = 100;
        // Two joins at once, before the room exists: one new room, both create it.
        let first = claim(&matchmaker, &mut ids, &[]);
        let second = claim(&matchmaker, &mut ids, &[]);
        assert_eq!((first.room, first.create), (101, true));
        assert_eq!((second.room, second.create), (101, true));
        // The room is full by promise: the third opens another.
        let third = claim(&matchmaker, &mut ids, &[]);
        assert_eq!(third.room, 102);
        // The room lists itself (two members); the promises are settled.
        matchmaker.update(101, listing(2, 2, 1));
        matchmaker.settle(first);
        matchmaker.settle(second);
        assert_eq!(
            matchmaker.find_open(RoomKind::Wheel, "classic", &[]),
            Some(102)
        );
        // A join that left frees a seat: the fullest room with space is chosen.
        matchmaker.update(101, listing(1, 2, 1));
        let fourth = claim(&matchmaker, &mut ids, &[]);
        assert_eq!((fourth.room, fourth.create), (101, false));
    }

    #[test]
    fn a_room_whose_creation_failed_is_forgotten() {
        let matchmaker = Matchmaker::default();
        let mut ids = 0;
        let claimed = claim(&matchmaker, &mut ids, &[]);
        matchmaker.settle(claimed);
        assert_eq!(matchmaker.find_open(RoomKind::Wheel, "classic", &[]), None);
        assert_eq!(matchmaker.open_rooms(), 0);
        // Excluded rooms (tried and found full) are skipped.
        matchmaker.update(7, listing(0, 2, 1));
        let other = claim(&matchmaker, &mut ids, &[7]);
        assert_ne!(other.room, 7);
    }
}
