//! A player session's durable state, its events, and the pure `apply`.

use crate::clock::utc_day;
use crate::grant::{GrantMark, SpinKey};
use crate::store::Entity;
use playtree_protocol::fairness::{Commitment, ServerSeed, commitment};
use playtree_protocol::{FairnessInfo, GrantId, RoomId, RoomKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub balance: u64,
    /// Sum of every grant ever credited (the balance, before any future spending).
    pub credited_total: u64,
    /// Per grant source, which of its grants are credited: exact, with no window.
    pub grant_marks: BTreeMap<String, GrantMark>,
    pub wheels: BTreeMap<String, WheelFairness>,
    /// Rooms the player is in.
    pub rooms: BTreeMap<RoomId, Membership>,
    /// Spins drawn but not yet settled by their room.
    pub pending_spins: BTreeMap<SpinKey, PendingSpin>,
    /// The player's place in the referral system.
    pub referral: ReferralLink,
}

/// A player's place in the referral system, as their session knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferralLink {
    /// When the player first connected: the attribution window starts here (0: never).
    pub first_seen_ms: u64,
    /// The player's own code, once made.
    pub code: Option<String>,
    /// Who referred the player, once their claim is recorded in the tree.
    pub referrer: Option<String>,
    /// The root of the tree the player is in (as a referee or as a referrer).
    pub tree_root: Option<String>,
    /// The player has accepted a referee, so may no longer claim a code.
    pub has_referees: bool,
    /// A claim under way, recorded before the tree is asked: a claim interrupted by a
    /// crash is taken up again with the same referrer and tree, never another.
    pub claiming: Option<Claim>,
    /// The player finished a first game.
    pub activated: bool,
    /// The player's tree has recorded the activation (and paid for it).
    pub activation_reported: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub referrer: String,
    /// Made from an address past its hourly claims limit: its rewards are flagged.
    pub suspect: bool,
}

impl ReferralLink {
    /// Whether the tree should still hear of the player's activation.
    pub fn activation_unreported(&self) -> bool {
        self.activated && self.referrer.is_some() && !self.activation_reported
    }

    /// Whether the session owes work to others that it must finish by itself (a claim
    /// under way, an activation to report): it is listed for activation at start-up
    /// and does not passivate until done.
    pub fn owes_work(&self) -> bool {
        self.claiming.is_some() || self.activation_unreported()
    }
}

/// A room the player is in: its kind and variant (the wheel id, or "quiz").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub kind: RoomKind,
    pub variant: String,
}

/// The player's provably fair state on one wheel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WheelFairness {
    pub server_seed: ServerSeed,
    pub commitment: Commitment,
    /// The nonce of the next spin; it never goes back, across rotations too.
    pub next_nonce: u64,
    /// UTC day of `spins_today`.
    pub day: u32,
    pub spins_today: u32,
}

impl WheelFairness {
    pub fn spins_on(&self, day: u32) -> u32 {
        if self.day == day { self.spins_today } else { 0 }
    }

    pub fn info(&self, now_ms: u64) -> FairnessInfo {
        FairnessInfo {
            commitment: self.commitment,
            next_nonce: self.next_nonce,
            spins_today: self.spins_on(utc_day(now_ms)),
        }
    }
}

/// A drawn spin: its outcome is fixed, its prize is for the room to settle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingSpin {
    pub room: RoomId,
    pub wheel: String,
    pub nonce: u64,
    pub client_seed: String,
    pub commitment: Commitment,
    pub segment: u32,
}

impl PendingSpin {
    pub fn key(&self) -> SpinKey {
        (self.wheel.clone(), self.nonce)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEvent {
    /// A fresh server seed for a wheel (the first one, or after a rotation).
    SeedCommitted {
        wheel: String,
        server_seed: ServerSeed,
    },
    /// A spin was drawn on UTC day `day`.
    SpinDrawn {
        spin: PendingSpin,
        day: u32,
    },
    /// A grant reached the wallet. `previous` is the source's grant to this player
    /// before it (see [`crate::grant::Grant`]).
    Credited {
        grant: GrantId,
        previous: u64,
        amount: u64,
        settles: Option<SpinKey>,
    },
    /// A drawn spin that can never be settled (its room or wheel is gone): it stops
    /// waiting, and a dead letter records it.
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
    /// The player's first connection: the referral attribution window starts.
    FirstSeen {
        at_ms: u64,
    },
    /// The player's referral code was made (its index entry is in the same commit).
    CodeAssigned {
        code: String,
    },
    /// The player accepted a referee: their tree is rooted at `root`.
    RefereeAccepted {
        root: String,
    },
    /// The player claims `referrer`'s code (before the referrer is asked: meanwhile
    /// the player accepts no referee).
    ClaimStarted {
        referrer: String,
        suspect: bool,
    },
    /// The tree rooted at `root` recorded the claim under way.
    ClaimRecorded {
        root: String,
    },
    /// The tree refused the claim under way for good.
    ClaimDropped,
    /// The player finished a first game.
    GameFinished,
    /// The player's tree recorded the activation.
    ActivationReported,
}

#[derive(Debug)]
pub struct SessionEntity;

impl Entity for SessionEntity {
    const KIND: &'static str = "session";
    type State = SessionState;
    type Event = SessionEvent;

    fn owes_grants(state: &SessionState) -> bool {
        state.referral.owes_work()
    }

    fn apply(state: &mut SessionState, event: &SessionEvent) {
        match event {
            SessionEvent::SeedCommitted { wheel, server_seed } => {
                let fairness = state.wheels.entry(wheel.clone()).or_insert(WheelFairness {
                    server_seed: *server_seed,
                    commitment: [0; 32],
                    next_nonce: 0,
                    day: 0,
                    spins_today: 0,
                });
                fairness.server_seed = *server_seed;
                fairness.commitment = commitment(server_seed);
            }
            SessionEvent::SpinDrawn { spin, day } => {
                if let Some(fairness) = state.wheels.get_mut(&spin.wheel) {
                    fairness.next_nonce = fairness.next_nonce.max(spin.nonce + 1);
                    if fairness.day != *day {
                        fairness.day = *day;
                        fairness.spins_today = 0;
                    }
                    fairness.spins_today += 1;
                }
                state.pending_spins.insert(spin.key(), spin.clone());
            }
            SessionEvent::Credited {
                grant,
                previous,
                amount,
                settles,
            } => {
                if let Some(key) = settles {
                    state.pending_spins.remove(key);
                }
                let mark = state.grant_marks.entry(grant.source.clone()).or_default();
                if !mark.record(grant.seq, *previous) {
                    return;
                }
                state.balance = state.balance.saturating_add(*amount);
                state.credited_total = state.credited_total.saturating_add(*amount);
            }
            SessionEvent::SpinAbandoned { spin } => {
                state.pending_spins.remove(spin);
            }
            SessionEvent::JoinedRoom { room, membership } => {
                state.rooms.insert(*room, membership.clone());
            }
            SessionEvent::LeftRoom { room } => {
                state.rooms.remove(room);
            }
            SessionEvent::FirstSeen { at_ms } => {
                if state.referral.first_seen_ms == 0 {
                    state.referral.first_seen_ms = *at_ms;
                }
            }
            SessionEvent::CodeAssigned { code } => {
                state.referral.code.get_or_insert_with(|| code.clone());
            }
            SessionEvent::RefereeAccepted { root } => {
                state.referral.has_referees = true;
                state.referral.tree_root.get_or_insert_with(|| root.clone());
            }
            SessionEvent::ClaimStarted { referrer, suspect } => {
                state.referral.claiming = Some(Claim {
                    referrer: referrer.clone(),
                    suspect: *suspect,
                });
            }
            SessionEvent::ClaimRecorded { root } => {
                if let Some(Claim { referrer, .. }) = state.referral.claiming.take() {
                    state.referral.referrer = Some(referrer);
                    state.referral.tree_root = Some(root.clone());
                }
            }
            SessionEvent::ClaimDropped => {
                state.referral.claiming = None;
            }
            SessionEvent::GameFinished => state.referral.activated = true,
            SessionEvent::ActivationReported => state.referral.activation_reported = true,
        }
    }
}

impl SessionState {
    pub fn has_credited(&self, grant: &GrantId) -> bool {
        self.grant_marks
            .get(&grant.source)
            .is_some_and(|mark| mark.has_credited(grant.seq))
    }

    /// The room of `kind` (and `variant`, if given) the player is in, if any.
    pub fn room_of(&self, kind: RoomKind, variant: Option<&str>) -> Option<RoomId> {
        self.rooms
            .iter()
            .find(|(_, m)| m.kind == kind && variant.is_none_or(|v| v == m.variant))
            .map(|(room, _)| *room)
    }
}
