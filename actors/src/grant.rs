//! A reward on its way from a source (a room, later a referral tree) to a wallet, and the
//! wallet's exact record of what it has credited.
//!
//! A grant id is `(source, seq)` with `seq` rising per source, and each grant names the
//! previous grant its source issued to the same beneficiary. That makes a source's grants
//! to one wallet a chain, so the wallet can remember all of them in a watermark (every
//! grant up to it is credited) plus the few credited out of order above it. No window
//! can be outrun, however many grants arrive or however late a redelivery comes.

use playtree_protocol::{GrantId, RoomId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a grant comes from, to acknowledge it there once credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSource {
    Room(RoomId),
    /// A referral tree, by its root player.
    Tree(String),
}

/// Identifies a spin: the wheel and the player's nonce on it.
pub type SpinKey = (String, u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: GrantId,
    /// The seq of the previous grant from the same source to the same beneficiary
    /// (0: this is the first). Seqs start at 1.
    pub previous: u64,
    pub beneficiary: String,
    pub amount: u64,
    pub reason: String,
    /// The spin this grant settles, when it is a spin's prize.
    pub settles: Option<SpinKey>,
}

/// What one wallet has credited from one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantMark {
    /// Every grant of this source to this wallet with a seq up to here is credited.
    pub through: u64,
    /// Grants credited out of order above the watermark: seq → previous.
    pub above: BTreeMap<u64, u64>,
}

impl GrantMark {
    pub fn has_credited(&self, seq: u64) -> bool {
        seq <= self.through || self.above.contains_key(&seq)
    }

    /// Records a credit of grant `seq` whose predecessor is `previous`. Returns false
    /// (and changes nothing) if it was credited before.
    pub fn record(&mut self, seq: u64, previous: u64) -> bool {
        if self.has_credited(seq) {
            return false;
        }
        if previous == self.through {
            self.through = seq;
            // Grants that arrived early now continue the chain.
            while let Some((&next, _)) = self.above.iter().find(|(_, prev)| **prev == self.through)
            {
                self.above.remove(&next);
                self.through = next;
            }
        } else {
            self.above.insert(seq, previous);
        }
        true
    }
}

/// Where a source numbers its grants: the next seq, and the last grant to each
/// beneficiary (the `previous` of their next one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantCounter {
    next_seq: u64,
    last_to: BTreeMap<String, u64>,
}

impl GrantCounter {
    /// The id and `previous` the next grant to `beneficiary` gets.
    pub fn next(&self, source: &str, beneficiary: &str) -> (GrantId, u64) {
        (
            GrantId {
                source: source.to_owned(),
                seq: self.next_seq.max(1),
            },
            self.last_to.get(beneficiary).copied().unwrap_or(0),
        )
    }

    /// Takes an issued grant into account (from `apply`).
    pub fn issued(&mut self, grant: &Grant) {
        self.next_seq = self.next_seq.max(grant.id.seq + 1);
        self.last_to.insert(grant.beneficiary.clone(), grant.id.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watermark_remembers_every_credited_grant_in_or_out_of_order() {
        let mut mark = GrantMark::default();
        // The chain 2 → 5 → 9 (with 0 before 2), arriving 9, 2, 5.
        assert!(mark.record(9, 5));
        assert!(mark.record(2, 0));
        assert_eq!((mark.through, mark.above.len()), (2, 1));
        assert!(mark.record(5, 2));
        assert_eq!(mark.through, 9, "the early grant joined the chain");
        assert!(mark.above.is_empty());
        for seq in [2, 5, 9] {
            assert!(!mark.record(seq, 0), "grant {seq} again");
        }
        assert!(!mark.has_credited(10));
    }

    #[test]
    fn however_many_grants_came_after_it_an_old_grant_is_still_refused() {
        let mut mark = GrantMark::default();
        for seq in 1..=10_000 {
            assert!(mark.record(seq, seq - 1));
        }
        assert!(!mark.record(1, 0));
        assert_eq!(mark.above.len(), 0);
    }
}
