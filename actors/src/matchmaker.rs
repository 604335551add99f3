//! The index of open rooms that `QuickJoin` picks from. Rooms keep their own listing up to
//! date as members come and go; a listing is a hint, and the room itself has the last
//! word on whether a join fits.

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

/// A claimed seat, settled when dropped, whatever becomes of the join (an answer from
/// the room, an error, a hand-off lost on its way): a promised seat is never lost. The
/// room that decides the join settles it in the same step as it lists its new member
/// count ([`Matchmaker::update_settling`]), so that the seat is never counted twice,
/// promised and taken, which would make a concurrent join open a needless room.
#[derive(Debug)]
pub struct Promise {
    matchmaker: std::sync::Arc<Matchmaker>,
    claim: Option<Claim>,
}

impl Promise {
    pub fn claim(&self) -> Option<Claim> {
        self.claim
    }

    /// The claim, no longer settled on drop: the caller settles it.
    fn take(mut self) -> Option<Claim> {
        self.claim.take()
    }
}

impl Drop for Promise {
    fn drop(&mut self) {
        if let Some(claim) = self.claim.take() {
            self.matchmaker.settle(claim);
        }
    }
}

type PoolKey = (RoomKind, String);

/// Every listed room, by kind and variant, and the pool each room is in: one lock, so
/// that the two never disagree. Every operation is a map lookup or a step through the
/// ordered set of rooms with space (O(log n)); none scans the rooms.
#[derive(Debug, Default)]
struct Index {
    pools: HashMap<PoolKey, Pool>,
    pool_of: HashMap<RoomId, PoolKey>,
    /// Private codes, both ways.
    codes: HashMap<String, RoomId>,
    code_of: HashMap<RoomId, String>,
}

impl Index {
    /// The fullest room of `key` with a free seat, not in `excluding`; promises it.
    fn promise(&mut self, key: &PoolKey, excluding: &[RoomId]) -> Option<Claim> {
        let pool = self.pools.get_mut(key)?;
        let room = pool
            .with_space
            .iter()
            .map(|(_, room)| *room)
            .find(|room| !excluding.contains(room))?;
        let create = pool
            .change(room, |entry| {
                entry.promised += 1;
                entry.listing.is_none()
            })
            .unwrap_or(false);
        Some(Claim { room, create })
    }

    /// A promise's join has its answer (see [`Matchmaker::settle`]).
    fn settle(&mut self, claim: Claim) {
        let Some(key) = self.pool_of.get(&claim.room).cloned() else {
            return;
        };
        let abandoned = self
            .pools
            .get_mut(&key)
            .and_then(|pool| {
                pool.change(claim.room, |entry| {
                    entry.promised = entry.promised.saturating_sub(1);
                    entry.listing.is_none() && entry.promised == 0
                })
            })
            .unwrap_or(false);
        if abandoned {
            self.forget(claim.room);
        }
    }

    fn forget(&mut self, room: RoomId) -> Option<Entry> {
        let key = self.pool_of.remove(&room)?;
        let entry = self.pools.get_mut(&key)?.remove(room);
        if let Some(code) = self.code_of.remove(&room) {
            self.codes.remove(&code);
        }
        entry
    }
}

#[derive(Debug, Default)]
pub struct Matchmaker {
    index: Mutex<Index>,
}

impl Matchmaker {
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        lock(&self.index)
    }

    /// Promises a seat to a QuickJoin: in the fullest open room of this kind and
    /// variant with a free seat (counting seats promised to joins still on their way),
    /// or, when there is none, in a new room whose id `open_new` draws (`create`). The
    /// promise makes concurrent joins fill one room before the next is opened. The
    /// [`Promise`] settles it.
    pub fn claim<E>(
        self: &std::sync::Arc<Self>,
        kind: RoomKind,
        variant: &str,
        capacity: usize,
        excluding: &[RoomId],
        open_new: impl FnOnce() -> Result<RoomId, E>,
    ) -> Result<Promise, E> {
        let key = (kind, variant.to_owned());
        let guard = |claim| Promise {
            matchmaker: self.clone(),
            claim: Some(claim),
        };
        if let Some(claim) = self.index().promise(&key, excluding) {
            return Ok(guard(claim));
        }
        // Drawn without the lock held (it may touch the store).
        let room = open_new()?;
        let mut index = self.index();
        // Another join may have opened a room meanwhile: it is filled first.
        if let Some(claim) = index.promise(&key, excluding) {
            return Ok(guard(claim));
        }
        index.pools.entry(key.clone()).or_default().insert(
            room,
            Entry {
                listing: None,
                promised: 1,
                capacity,
            },
        );
        index.pool_of.insert(room, key);
        Ok(guard(Claim { room, create: true }))
    }

    /// The join a claim was for has its answer: the seat is taken (the room's listing
    /// says so now) or was not. A room that never listed itself (its creation failed)
    /// is forgotten once no join waits for it.
    pub fn settle(&self, claim: Claim) {
        self.index().settle(claim);
    }

    /// The fullest open room of this kind and variant that still has space (no seat is
    /// promised: for looking, not joining).
    pub fn find_open(&self, kind: RoomKind, variant: &str, excluding: &[RoomId]) -> Option<RoomId> {
        let index = self.index();
        let pool = index.pools.get(&(kind, variant.to_owned()))?;
        pool.with_space
            .iter()
            .map(|(_, room)| *room)
            .find(|room| !excluding.contains(room))
    }

    /// A room's own listing, as it changes.
    pub fn update(&self, room: RoomId, listing: Listing) {
        self.update_settling(room, listing, None);
    }

    /// A room's own listing, and the promise of the join it has just decided, settled
    /// under the same lock: the seat counts once, as taken or as free, never as both.
    pub fn update_settling(&self, room: RoomId, listing: Listing, promise: Option<Promise>) {
        let settled = promise.and_then(Promise::take);
        let key = (listing.kind, listing.variant.clone());
        let capacity = listing.capacity;
        let mut index = self.index();
        if let Some(claim) = settled {
            index.settle(claim);
        }
        let pool = index.pools.entry(key.clone()).or_default();
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
            index.pool_of.insert(room, key);
        }
    }

    /// Unlists a room if `owner` wrote its listing; returns the listing removed.
    pub fn remove(&self, room: RoomId, owner: ActorId) -> Option<Listing> {
        let mut index = self.index();
        let key = index.pool_of.get(&room)?;
        let owned = index
            .pools
            .get(key)
            .and_then(|pool| pool.rooms.get(&room))
            .and_then(|entry| entry.listing.as_ref())
            .is_some_and(|listing| listing.owner == owner);
        if !owned {
            return None;
        }
        index.forget(room)?.listing
    }

    /// Gives `code` to `room` unless another room holds it; says whether `room` holds it
    /// now. A code is never taken from a room that has it: a collision is refused.
    pub fn register_code(&self, code: &str, room: RoomId) -> bool {
        let mut index = self.index();
        match index.codes.get(code) {
            Some(holder) => *holder == room,
            None => {
                index.codes.insert(code.to_owned(), room);
                index.code_of.insert(room, code.to_owned());
                true
            }
        }
    }

    /// The room of a private code, while that room is active.
    pub fn room_for_code(&self, code: &str) -> Option<RoomId> {
        self.index().codes.get(code).copied()
    }

    /// Rooms listed (open or not).
    pub fn open_rooms(&self) -> usize {
        self.index().pool_of.len()
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
    use std::sync::Arc;

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

    fn claim(matchmaker: &Arc<Matchmaker>, next_id: &mut u64, excluding: &[RoomId]) -> Claim {
        let promise = matchmaker
            .claim(RoomKind::Wheel, "classic", 2, excluding, || {
                *next_id += 1;
                Ok::<_, ()>(*next_id)
            })
            .expect("claims");
        // Settled by hand below, as the join would be.
        promise.take().expect("a promise holds its claim")
    }

    #[test]
    fn promised_seats_fill_a_new_room_before_the_next_is_opened() {
        let matchmaker = Arc::new(Matchmaker::default());
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
    fn a_claim_dropped_unsettled_gives_its_seat_back() {
        let matchmaker = Arc::new(Matchmaker::default());
        matchmaker.update(5, listing(1, 2, 1));
        {
            let promise = matchmaker
                .claim(RoomKind::Wheel, "classic", 2, &[], || Err::<RoomId, ()>(()))
                .expect("room 5 has a seat");
            assert_eq!(promise.claim().map(|claim| claim.room), Some(5));
            // Room 5 is full by promise meanwhile.
            assert_eq!(matchmaker.find_open(RoomKind::Wheel, "classic", &[]), None);
            // The join's task panics or is cancelled here.
        }
        assert_eq!(
            matchmaker.find_open(RoomKind::Wheel, "classic", &[]),
            Some(5)
        );
    }

    #[test]
    fn a_room_whose_creation_failed_is_forgotten() {
        let matchmaker = Arc::new(Matchmaker::default());
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

#[cfg(test)]
mod settling_tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_seat_taken_and_its_promise_settled_in_one_step_never_opens_a_needless_room() {
        let matchmaker = Arc::new(Matchmaker::default());
        let listing = |members| Listing {
            kind: RoomKind::Wheel,
            variant: "classic".into(),
            members,
            capacity: 2,
            open: true,
            owner: ActorId::Local(1),
        };
        matchmaker.update(1, listing(0));
        let first = matchmaker
            .claim(RoomKind::Wheel, "classic", 2, &[], || Err::<RoomId, ()>(()))
            .expect("a seat in room 1");
        // The room seats the first join: one member, its promise settled at once. A
        // second join still finds the last seat (counted twice, taken and promised, it
        // would have been refused and a second room opened).
        matchmaker.update_settling(1, listing(1), Some(first));
        let second = matchmaker
            .claim(RoomKind::Wheel, "classic", 2, &[], || Err::<RoomId, ()>(()))
            .expect("the second seat of room 1");
        assert_eq!(second.claim().map(|claim| claim.room), Some(1));
    }
}
