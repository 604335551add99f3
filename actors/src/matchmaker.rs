//! The index of open rooms that `QuickJoin` picks from. Rooms keep their own listing up to
//! date as members come and go; a listing is a hint, and the room itself has the last
//! word on whether a join fits.

use playtree_protocol::{RoomId, RoomKind};
use ractor::ActorId;
use std::collections::{BTreeMap, HashMap};
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

#[derive(Debug, Default)]
pub struct Matchmaker {
    rooms: Mutex<BTreeMap<RoomId, Listing>>,
    codes: Mutex<HashMap<String, RoomId>>,
}

impl Matchmaker {
    fn rooms(&self) -> std::sync::MutexGuard<'_, BTreeMap<RoomId, Listing>> {
        // A panic while holding this lock leaves only a stale listing behind, which the
        // rooms rewrite on their next change; keep serving.
        self.rooms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The fullest open room of this kind and variant that still has space, so that
    /// players gather instead of spreading over many half-empty rooms.
    pub fn find_open(&self, kind: RoomKind, variant: &str, excluding: &[RoomId]) -> Option<RoomId> {
        self.rooms()
            .iter()
            .filter(|(id, listing)| {
                listing.open
                    && listing.kind == kind
                    && listing.variant == variant
                    && listing.members < listing.capacity
                    && !excluding.contains(id)
            })
            .max_by_key(|(id, listing)| (listing.members, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    pub fn update(&self, room: RoomId, listing: Listing) {
        self.rooms().insert(room, listing);
    }

    /// Unlists a room if `owner` wrote its listing; returns the listing removed.
    pub fn remove(&self, room: RoomId, owner: ActorId) -> Option<Listing> {
        let mut rooms = self.rooms();
        if rooms
            .get(&room)
            .is_none_or(|listing| listing.owner != owner)
        {
            return None;
        }
        let listing = rooms.remove(&room);
        drop(rooms);
        lock(&self.codes).retain(|_, id| *id != room);
        listing
    }

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

    pub fn open_rooms(&self) -> usize {
        self.rooms().len()
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
