//! A referral tree's durable state, its events, and the pure `apply`.
//!
//! One tree per root player: who referred whom (parent links and depths), per-player
//! counters kept as players join and activate (so stats never need a recount), and the
//! rewards not final yet. (Rewards paid are letters: credits in the tree's outbox until
//! the wallets have them.) The nodes are snapshotted one by one, and a snapshot writes
//! only the nodes changed since the last: a tree of a hundred thousand players costs
//! what changed, not the whole tree.

use crate::claim::TreeView;
use crate::rate::SlidingCount;
use crate::store::Entity;
use playtree_protocol::{ReferralStats, RewardState, RewardTrigger};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Levels below a player that their counters track (referees by level, activated).
/// Rewards go only as deep as their configured lists; stats stop here.
pub const LEVELS_TRACKED: usize = 8;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeState {
    /// The root player (empty until the first referral).
    pub root: String,
    pub nodes: BTreeMap<String, Node>,
    /// Rewards made so far (the next one's number follows).
    pub rewards_made: u64,
    /// Rewards not final yet (held): a credited reward lives on only in its letter and
    /// the counters, so the state does not grow with every payment.
    pub held: BTreeMap<u64, Reward>,
    /// Rewards on hold, by the time the hold ends: `(until_ms, reward)`.
    pub holds: BTreeSet<(u64, u64)>,
    /// Rewards a partner approved or voided lately, with the state it gave them (so
    /// that asking again gets the same answer).
    pub decided: Answers<u64, RewardState>,
    /// Conversions reported lately, by [`conversion_key`]: how many rewards each made.
    pub conversions: Answers<ConversionKey, u32>,
}

/// A conversion report's `(player, idempotency key)`, as a 128-bit digest: 16 bytes
/// whatever the key's length (up to 256 bytes), and collisions beyond reach
/// (SHA-256 truncated).
pub type ConversionKey = [u8; 16];

pub fn conversion_key(player: &str, key: &str) -> ConversionKey {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    // Length-prefixed: ("ab", "c") and ("a", "bc") are different reports.
    hasher.update((player.len() as u64).to_le_bytes());
    hasher.update(player.as_bytes());
    hasher.update(key.as_bytes());
    let digest = hasher.finalize();
    let mut short = [0u8; 16];
    short.copy_from_slice(&digest[..16]);
    short
}

/// How long a tree keeps its answers to partners, and how many: the event that records
/// an answer carries these (from `referral.partner_answers_kept_ms` and
/// `referral.partner_answers_max`), so that replaying it forgets the same ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    /// Answers given this long before the new one are forgotten.
    pub span_ms: u64,
    /// At most this many are kept (the oldest forgotten first).
    pub max: usize,
}

/// Answers given to partners, kept for repeated requests for a while and up to a
/// number, so that a tree's state does not grow with every request ever made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answers<K: Ord, V> {
    by_key: BTreeMap<K, V>,
    /// Keys in the order their answers were given, with when.
    given: VecDeque<(u64, K)>,
}

impl<K: Ord, V> Default for Answers<K, V> {
    fn default() -> Self {
        Answers {
            by_key: BTreeMap::new(),
            given: VecDeque::new(),
        }
    }
}

impl<K: Ord + Clone, V> Answers<K, V> {
    pub fn get(&self, key: &K) -> Option<&V> {
        self.by_key.get(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Whether a new answer at `at_ms` would have to forget one given within the span:
    /// the tree then refuses the request instead, so that a key is never forgotten
    /// before its time.
    pub fn is_full_at(&self, at_ms: u64, keep: Keep) -> bool {
        self.given.len() >= keep.max.max(1)
            && self
                .given
                .front()
                .is_some_and(|(given_ms, _)| given_ms.saturating_add(keep.span_ms) > at_ms)
    }

    /// Keeps `value` for `key` (a key answered already keeps its first answer), then
    /// forgets what `keep` lets go (the oldest past the span; past the number too,
    /// which the tree avoids by refusing requests while [`Self::is_full_at`]).
    fn remember(&mut self, key: K, value: V, at_ms: u64, keep: Keep) {
        if !self.by_key.contains_key(&key) {
            self.by_key.insert(key.clone(), value);
            self.given.push_back((at_ms, key));
        }
        while let Some((given_ms, _)) = self.given.front()
            && (self.given.len() > keep.max.max(1)
                || given_ms.saturating_add(keep.span_ms) <= at_ms)
        {
            if let Some((_, key)) = self.given.pop_front() {
                self.by_key.remove(&key);
            }
        }
    }
}

/// Hours: the window of the claims velocity limit. Days: of the rewards limit.
pub const HOUR_MS: u64 = 3_600_000;
pub const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The player's referrer (none for the root).
    pub parent: Option<String>,
    /// Steps below the root (0 for the root).
    pub depth: u32,
    pub joined_ms: u64,
    /// The player finished a first game (and their ancestors were paid for it).
    pub activated: bool,
    /// Referees at each level below this player: index 0 counts level 1.
    pub referees_by_level: Vec<u64>,
    /// Referees within [`LEVELS_TRACKED`] levels who activated.
    pub activated_referees: u64,
    /// Coins of rewards to this player by state.
    pub earned: u64,
    pub pending: u64,
    pub flagged: u64,
    /// Referees this player gained lately (the claims velocity limit).
    pub claims: SlidingCount,
    /// When this player's latest own referee joined (the leaderboard's tie-break).
    pub last_referee_ms: u64,
    /// The player joined past their referrer's claims limit: every reward their
    /// activity earns anyone is flagged too.
    pub suspect: bool,
    /// Rewards made for this player lately (the rewards velocity limit).
    pub rewards: SlidingCount,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    pub beneficiary: String,
    /// The player whose signup or activation earned it.
    pub friend: String,
    pub level: u32,
    pub trigger: RewardTrigger,
    pub amount: u64,
    pub state: RewardState,
    /// When the reward was made.
    pub at_ms: u64,
}

/// What becomes of a reward when it is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RewardOutcome {
    /// Credited at once: its credit is a letter in the same commit.
    Credited,
    /// Held until `until_ms` (`referral.hold_ms` after it was made).
    Pending { until_ms: u64 },
    /// Held by a velocity limit until a partner approves or voids it.
    Flagged,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TreeEvent {
    /// The tree's first referral: its root joins as the top node.
    Rooted { root: String, at_ms: u64 },
    /// `referee` joined below `referrer` (`suspect`: past the referrer's claims limit,
    /// or otherwise flagged). A claim that is paid counts towards the referrer's claims
    /// limit, which keeps the times of at most `claims_kept` of them (the limit then; 0:
    /// no limit, nothing kept).
    Attached {
        referrer: String,
        referee: String,
        at_ms: u64,
        suspect: bool,
        claims_kept: u32,
    },
    /// `player` finished a first game.
    Activated { player: String },
    /// A reward was made for `beneficiary`. One that is not flagged counts towards
    /// the beneficiary's rewards limit, which keeps at most `rewards_kept` (the limit
    /// then; 0: no limit, nothing kept).
    Rewarded {
        reward: u64,
        beneficiary: String,
        friend: String,
        level: u32,
        trigger: RewardTrigger,
        amount: u64,
        at_ms: u64,
        outcome: RewardOutcome,
        rewards_kept: u32,
    },
    /// A reward's hold (until `until_ms`) passed: it is credited (its credit is a
    /// letter in the same commit).
    Released {
        reward: u64,
        until_ms: u64,
        beneficiary: String,
    },
    /// A partner decided a held or flagged reward at `at_ms`: approved (credited now)
    /// or voided.
    Decided {
        reward: u64,
        beneficiary: String,
        approved: bool,
        at_ms: u64,
        keep: Keep,
    },
    /// A partner's conversion report for `player` made `rewards` rewards.
    ConversionRecorded {
        player: String,
        key: String,
        rewards: u32,
        at_ms: u64,
        keep: Keep,
    },
}

#[derive(Debug)]
pub struct TreeEntity;

impl Entity for TreeEntity {
    const KIND: &'static str = "tree";
    type State = TreeState;
    type Event = TreeEvent;
    type Part = Node;

    fn parts(state: &mut TreeState) -> Option<&mut BTreeMap<String, Node>> {
        Some(&mut state.nodes)
    }

    /// The nodes an event changed: a new referee, its referrer and every ancestor
    /// counting it; an activated player and their ancestors; a reward's beneficiary.
    fn touched(state: &TreeState, event: &TreeEvent, touched: &mut BTreeSet<String>) {
        let with_ancestors = |player: &str, touched: &mut BTreeSet<String>| {
            touched.insert(player.to_owned());
            touched.extend(ancestors(state, player));
        };
        match event {
            TreeEvent::Rooted { root, .. } => {
                touched.insert(root.clone());
            }
            TreeEvent::Attached { referee, .. } => with_ancestors(referee, touched),
            TreeEvent::Activated { player } => with_ancestors(player, touched),
            TreeEvent::Rewarded { beneficiary, .. }
            | TreeEvent::Released { beneficiary, .. }
            | TreeEvent::Decided { beneficiary, .. } => {
                touched.insert(beneficiary.clone());
            }
            TreeEvent::ConversionRecorded { .. } => {}
        }
    }

    fn apply(state: &mut TreeState, event: &TreeEvent) {
        match event {
            TreeEvent::Rooted { root, at_ms } => {
                state.root = root.clone();
                state.nodes.entry(root.clone()).or_insert_with(|| Node {
                    joined_ms: *at_ms,
                    ..Node::default()
                });
            }
            TreeEvent::Attached {
                referrer,
                referee,
                at_ms,
                suspect,
                claims_kept,
            } => {
                let Some(depth) = state.nodes.get(referrer).map(|node| node.depth + 1) else {
                    return;
                };
                if state.nodes.contains_key(referee) {
                    return;
                }
                state.nodes.insert(
                    referee.clone(),
                    Node {
                        parent: Some(referrer.clone()),
                        depth,
                        joined_ms: *at_ms,
                        suspect: *suspect,
                        ..Node::default()
                    },
                );
                if let Some(node) = state.nodes.get_mut(referrer) {
                    if !*suspect {
                        node.claims.record(*at_ms, HOUR_MS, *claims_kept as usize);
                    }
                    node.last_referee_ms = *at_ms;
                }
                for (level, ancestor) in ancestors(state, referee).into_iter().enumerate() {
                    if let Some(node) = state.nodes.get_mut(&ancestor) {
                        if node.referees_by_level.len() <= level {
                            node.referees_by_level.resize(level + 1, 0);
                        }
                        node.referees_by_level[level] += 1;
                    }
                }
            }
            TreeEvent::Activated { player } => {
                let Some(node) = state.nodes.get_mut(player) else {
                    return;
                };
                if node.activated {
                    return;
                }
                node.activated = true;
                for ancestor in ancestors(state, player) {
                    if let Some(node) = state.nodes.get_mut(&ancestor) {
                        node.activated_referees += 1;
                    }
                }
            }
            TreeEvent::Rewarded {
                reward,
                beneficiary,
                friend,
                level,
                trigger,
                amount,
                at_ms,
                outcome,
                rewards_kept,
            } => {
                if *reward <= state.rewards_made {
                    return;
                }
                state.rewards_made = *reward;
                let mut node = state.nodes.get_mut(beneficiary);
                if let Some(node) = node.as_deref_mut()
                    && *outcome != RewardOutcome::Flagged
                {
                    node.rewards.record(*at_ms, DAY_MS, *rewards_kept as usize);
                }
                let reward_state = match outcome {
                    RewardOutcome::Credited => {
                        if let Some(node) = node {
                            node.earned = node.earned.saturating_add(*amount);
                        }
                        RewardState::Credited
                    }
                    RewardOutcome::Pending { until_ms } => {
                        if let Some(node) = node {
                            node.pending = node.pending.saturating_add(*amount);
                        }
                        state.holds.insert((*until_ms, *reward));
                        RewardState::Pending
                    }
                    RewardOutcome::Flagged => {
                        if let Some(node) = node {
                            node.flagged = node.flagged.saturating_add(*amount);
                        }
                        RewardState::Flagged
                    }
                };
                if reward_state != RewardState::Credited {
                    state.held.insert(
                        *reward,
                        Reward {
                            beneficiary: beneficiary.clone(),
                            friend: friend.clone(),
                            level: *level,
                            trigger: *trigger,
                            amount: *amount,
                            state: reward_state,
                            at_ms: *at_ms,
                        },
                    );
                }
            }
            TreeEvent::Released {
                reward, until_ms, ..
            } => {
                let Some(held) = state
                    .held
                    .remove(reward)
                    .filter(|held| held.state == RewardState::Pending)
                else {
                    return;
                };
                state.holds.remove(&(*until_ms, *reward));
                if let Some(node) = state.nodes.get_mut(&held.beneficiary) {
                    node.pending = node.pending.saturating_sub(held.amount);
                    node.earned = node.earned.saturating_add(held.amount);
                }
            }
            TreeEvent::Decided {
                reward,
                approved,
                at_ms,
                keep,
                ..
            } => {
                let Some(held) = state.held.remove(reward) else {
                    return;
                };
                state.holds.retain(|(_, number)| number != reward);
                if let Some(node) = state.nodes.get_mut(&held.beneficiary) {
                    match held.state {
                        RewardState::Pending => {
                            node.pending = node.pending.saturating_sub(held.amount)
                        }
                        RewardState::Flagged => {
                            node.flagged = node.flagged.saturating_sub(held.amount)
                        }
                        RewardState::Credited | RewardState::Voided => {}
                    }
                    if *approved {
                        node.earned = node.earned.saturating_add(held.amount);
                    }
                }
                let decided = if *approved {
                    RewardState::Credited
                } else {
                    RewardState::Voided
                };
                state.decided.remember(*reward, decided, *at_ms, *keep);
            }
            TreeEvent::ConversionRecorded {
                player,
                key,
                rewards,
                at_ms,
                keep,
            } => {
                let key = conversion_key(player, key);
                state.conversions.remember(key, *rewards, *at_ms, *keep);
            }
        }
    }
}

impl TreeView for TreeState {
    fn parent_of(&self, player: &str) -> Option<Option<&str>> {
        self.nodes.get(player).map(|node| node.parent.as_deref())
    }

    fn players(&self) -> usize {
        self.nodes.len()
    }
}

/// `player`'s ancestors, nearest first, at most [`LEVELS_TRACKED`] of them.
pub fn ancestors(state: &TreeState, player: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current = state.nodes.get(player).and_then(|node| node.parent.clone());
    while let Some(ancestor) = current {
        if found.len() == LEVELS_TRACKED {
            break;
        }
        current = state
            .nodes
            .get(&ancestor)
            .and_then(|node| node.parent.clone());
        found.push(ancestor);
    }
    found
}

impl TreeState {
    /// The next reward's number.
    pub fn next_reward(&self) -> u64 {
        self.rewards_made + 1
    }

    /// `player`'s statistics, from the counters kept as the tree grew.
    pub fn stats(&self, player: &str) -> ReferralStats {
        let Some(node) = self.nodes.get(player) else {
            return ReferralStats::default();
        };
        ReferralStats {
            referrer: node.parent.clone(),
            referees_by_level: node.referees_by_level.clone(),
            activated: node.activated_referees,
            earned: node.earned,
            pending: node.pending,
            flagged: node.flagged,
        }
    }
}
