//! A player session's durable state, its events, and the pure `apply`.

use super::keys::Keys;
use crate::claim::{Claiming, Link};
use crate::clock::utc_day;
use crate::mail::{Membership, PlayerNews, SpinDraw, SpinKey, StoredAnswer};
use crate::rate::SlidingCount;
use crate::seeds::SeedMaker;
use crate::store::Entity;
use playtree_protocol::fairness::commitment;
use playtree_protocol::{Event, FairnessInfo, RoomId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub balance: u64,
    /// Sum of every credit ever taken (the balance, before any future spending).
    pub credited_total: u64,
    /// The player's provably fair state per wheel they ever joined.
    pub wheels: BTreeMap<String, WheelState>,
    /// Rooms the player is in.
    pub rooms: BTreeMap<RoomId, Membership>,
    /// Spins drawn and not yet paid by their room.
    pub pending_spins: BTreeMap<SpinKey, SpinDraw>,
    /// The player's place in the referral system.
    pub link: Link,
    /// The player's own stream, kept durably (see [`PlayerStream`]).
    pub stream: PlayerStream,
    /// Idempotency keys of the player's requests and their answers.
    pub keys: Keys,
    /// Private rooms opened lately (`rooms.private_creates_per_hour`).
    pub private_creates: SlidingCount,
    /// Private codes tried lately that matched no room
    /// (`rooms.private_code_misses_per_hour`).
    pub code_misses: SlidingCount,
}

/// The player's provably fair state on one wheel. The server seed is derived (see
/// [`crate::seeds`]), so only its generation is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelState {
    /// Seed rotations so far.
    pub generation: u32,
    /// The nonce of the next spin; it never goes back, across rotations too.
    pub next_nonce: u64,
    /// UTC day of `spins_today`.
    pub day: u32,
    pub spins_today: u32,
}

impl WheelState {
    pub fn spins_on(&self, day: u32) -> u32 {
        if self.day == day { self.spins_today } else { 0 }
    }

    pub fn info(&self, seeds: &SeedMaker, player: &str, wheel: &str, now_ms: u64) -> FairnessInfo {
        FairnessInfo {
            commitment: commitment(&seeds.server_seed(player, wheel, self.generation)),
            next_nonce: self.next_nonce,
            spins_today: self.spins_on(utc_day(now_ms)),
        }
    }
}

/// The player's stream, durable: its epoch stays while the session passivates and
/// comes back, and its latest events are kept, so that a client that resumes gets
/// what it missed, news of friends and rewards included, however long it was away
/// (within `session.stream_history_len` events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerStream {
    pub epoch: u64,
    pub seq: u64,
    /// The latest events, oldest first, with their seqs.
    pub recent: VecDeque<(u64, PlayerItem)>,
}

impl Default for PlayerStream {
    fn default() -> Self {
        PlayerStream {
            epoch: 1,
            seq: 0,
            recent: VecDeque::new(),
        }
    }
}

impl PlayerStream {
    fn push(&mut self, item: PlayerItem, kept: u32) {
        self.seq += 1;
        self.recent.push_back((self.seq, item));
        while self.recent.len() > kept.max(1) as usize {
            self.recent.pop_front();
        }
    }
}

/// One event of the player's stream, as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlayerItem {
    Credited {
        grant_id: String,
        amount: u64,
        balance: u64,
        reason: String,
    },
    News(PlayerNews),
}

impl PlayerItem {
    pub fn event(&self) -> Event {
        match self {
            PlayerItem::Credited {
                grant_id,
                amount,
                balance,
                reason,
            } => Event::WalletCredited {
                grant_id: grant_id.clone(),
                amount: *amount,
                balance: *balance,
                reason: reason.clone(),
            },
            PlayerItem::News(news) => news.event(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEvent {
    /// The player's first connection: the referral attribution window starts.
    FirstSeen {
        at_ms: u64,
    },
    /// A spin was drawn on UTC day `day`.
    SpinDrawn {
        spin: SpinDraw,
        day: u32,
    },
    /// A credit reached the wallet (and the player's stream, with its news); it pays
    /// `settles`, a drawn spin, when it is one's prize. `kept` is how many stream events
    /// are kept.
    Credited {
        grant_id: String,
        amount: u64,
        reason: String,
        settles: Option<SpinKey>,
        news: Vec<PlayerNews>,
        kept: u32,
    },
    /// A drawn spin that can never be paid (its room is gone).
    SpinAbandoned {
        spin: SpinKey,
    },
    JoinedRoom {
        room: RoomId,
        membership: Membership,
    },
    LeftRoom {
        room: RoomId,
    },
    /// The seed of `wheel` was revealed; the next generation's is committed.
    SeedRotated {
        wheel: String,
    },
    /// The player's referral code was made (its index entry is in the same commit).
    CodeAssigned {
        code: String,
    },
    /// The player claims `referrer`'s code (step 1 of a claim); `request_key` is the
    /// keyed request's, whose answer the claim's is.
    ClaimStarted {
        referrer: String,
        suspect: bool,
        request_key: Option<u64>,
    },
    /// The player's tree attached them below `referrer` (step 4).
    ClaimRecorded {
        referrer: String,
        root: String,
    },
    /// The player's claim was refused (step 4).
    ClaimDropped,
    /// The player accepted `referee` (step 2): no claim of theirs until answered.
    RefereeAccepting {
        referee: String,
    },
    /// The tree answered for `referee` (step 4, the referrer's side); `root` is the
    /// player's tree.
    RefereeAnswered {
        referee: String,
        attached: bool,
        root: String,
    },
    /// The player finished a first game.
    GameFinished,
    /// News from the player's tree, for their stream.
    NewsReceived {
        news: Vec<PlayerNews>,
        kept: u32,
    },
    /// A keyed request was taken (`digest` names the request).
    KeyTaken {
        key: u64,
        digest: u64,
        at_ms: u64,
        keep: super::keys::Keep,
    },
    /// A keyed request's first answer.
    KeyAnswered {
        key: u64,
        answer: StoredAnswer,
        at_ms: u64,
    },
    /// The player opened a private room (counted against the hourly allowance).
    PrivateCreated {
        at_ms: u64,
        kept: u32,
    },
    /// A private code the player tried matched no room.
    CodeMissed {
        at_ms: u64,
        kept: u32,
    },
}

pub const HOUR_MS: u64 = 3_600_000;

#[derive(Debug)]
pub struct SessionEntity;

impl Entity for SessionEntity {
    const KIND: &'static str = "session";
    type State = SessionState;
    type Event = SessionEvent;
    type Part = ();

    fn apply(state: &mut SessionState, event: &SessionEvent) {
        match event {
            SessionEvent::FirstSeen { at_ms } => {
                if state.link.first_seen_ms == 0 {
                    state.link.first_seen_ms = *at_ms;
                }
            }
            SessionEvent::SpinDrawn { spin, day } => {
                let wheel = state.wheels.entry(spin.wheel.clone()).or_default();
                // Invariant: nonces only rise.
                assert!(
                    spin.nonce >= wheel.next_nonce,
                    "spin nonce {} drawn after {}",
                    spin.nonce,
                    wheel.next_nonce
                );
                wheel.next_nonce = spin.nonce + 1;
                if wheel.day != *day {
                    wheel.day = *day;
                    wheel.spins_today = 0;
                }
                wheel.spins_today += 1;
                state.pending_spins.insert(spin.key(), spin.clone());
            }
            SessionEvent::Credited {
                grant_id,
                amount,
                reason,
                settles,
                news,
                kept,
            } => {
                if let Some(key) = settles {
                    state.pending_spins.remove(key);
                }
                state.balance = state.balance.saturating_add(*amount);
                state.credited_total = state.credited_total.saturating_add(*amount);
                if *amount > 0 {
                    state.stream.push(
                        PlayerItem::Credited {
                            grant_id: grant_id.clone(),
                            amount: *amount,
                            balance: state.balance,
                            reason: reason.clone(),
                        },
                        *kept,
                    );
                }
                for news in news {
                    state.stream.push(PlayerItem::News(news.clone()), *kept);
                }
            }
            SessionEvent::SpinAbandoned { spin } => {
                state.pending_spins.remove(spin);
            }
            SessionEvent::JoinedRoom { room, membership } => {
                state.wheels_for(membership);
                state.rooms.insert(*room, membership.clone());
            }
            SessionEvent::LeftRoom { room } => {
                state.rooms.remove(room);
            }
            SessionEvent::SeedRotated { wheel } => {
                let wheel = state.wheels.entry(wheel.clone()).or_default();
                wheel.generation += 1;
            }
            SessionEvent::CodeAssigned { code } => {
                state.link.code.get_or_insert_with(|| code.clone());
            }
            SessionEvent::ClaimStarted {
                referrer,
                suspect,
                request_key,
            } => {
                state.link.claiming = Some(Claiming {
                    referrer: referrer.clone(),
                    suspect: *suspect,
                    request_key: *request_key,
                });
            }
            SessionEvent::ClaimRecorded { referrer, root } => {
                state.link.claiming = None;
                state.link.referrer = Some(referrer.clone());
                state.link.root = Some(root.clone());
            }
            SessionEvent::ClaimDropped => state.link.claiming = None,
            SessionEvent::RefereeAccepting { referee } => {
                state.link.accepting.insert(referee.clone());
            }
            SessionEvent::RefereeAnswered {
                referee,
                attached,
                root,
            } => {
                state.link.accepting.remove(referee);
                if *attached {
                    state.link.has_referees = true;
                    state.link.root.get_or_insert_with(|| root.clone());
                }
            }
            SessionEvent::GameFinished => state.link.activated = true,
            SessionEvent::NewsReceived { news, kept } => {
                for news in news {
                    state.stream.push(PlayerItem::News(news.clone()), *kept);
                }
            }
            SessionEvent::KeyTaken {
                key,
                digest,
                at_ms,
                keep,
            } => state.keys.take(*key, *digest, *at_ms, *keep),
            SessionEvent::KeyAnswered { key, answer, at_ms } => {
                state.keys.answer(*key, answer.clone(), *at_ms)
            }
            SessionEvent::PrivateCreated { at_ms, kept } => {
                state
                    .private_creates
                    .record(*at_ms, HOUR_MS, *kept as usize);
            }
            SessionEvent::CodeMissed { at_ms, kept } => {
                state.code_misses.record(*at_ms, HOUR_MS, *kept as usize);
            }
        }
    }
}

impl SessionState {
    /// The room of `kind` (and `variant`, if given) the player is in, if any.
    pub fn room_of(
        &self,
        kind: playtree_protocol::RoomKind,
        variant: Option<&str>,
    ) -> Option<RoomId> {
        self.rooms
            .iter()
            .find(|(_, m)| m.kind == kind && variant.is_none_or(|v| v == m.variant))
            .map(|(room, _)| *room)
    }

    /// A wheel the player joins gets its state (generation 0) on joining.
    fn wheels_for(&mut self, membership: &Membership) {
        if membership.kind == playtree_protocol::RoomKind::Wheel {
            self.wheels.entry(membership.variant.clone()).or_default();
        }
    }

    /// The player's fairness on `wheel` (generation 0 if never joined).
    pub fn wheel(&self, wheel: &str) -> WheelState {
        self.wheels.get(wheel).cloned().unwrap_or_default()
    }
}
