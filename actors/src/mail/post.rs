//! An entity's post office: the letters it sent that are not yet acknowledged (its
//! outbox), and, per sender, which letters it has recorded (its marks). Both are part
//! of the entity's durable state and change only through [`PostEvent`]s, journaled in
//! the same commit as the decision that sends or takes a letter.
//!
//! Exactly once, with no window to outrun: a sender numbers its letters, and each letter
//! names the sender's previous letter to the same receiver that was still unacknowledged
//! when it was sent (0 when there was none: every earlier letter to that receiver has
//! been recorded by it). The letters from one sender to one receiver thus form a chain,
//! and the receiver keeps, per sender, a watermark (every letter up to it is recorded)
//! plus the few recorded out of order above it.

use super::{Address, Letter};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which letters of one sender a receiver has recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// Every letter from the sender to this receiver numbered up to here is recorded.
    pub through: u64,
    /// Letters recorded out of order above `through`: seq → its previous.
    pub above: BTreeMap<u64, u64>,
    /// When a letter from the sender was last recorded (the receiver's store clock).
    pub last_ms: u64,
}

impl Mark {
    pub fn has(&self, seq: u64) -> bool {
        seq <= self.through || self.above.contains_key(&seq)
    }

    /// Records letter `seq` whose predecessor is `previous`; false (and nothing
    /// changes) if it was recorded before.
    fn record(&mut self, seq: u64, previous: u64, at_ms: u64) -> bool {
        if self.has(seq) {
            return false;
        }
        self.last_ms = self.last_ms.max(at_ms);
        if previous > self.through {
            self.above.insert(seq, previous);
            return true;
        }
        // Its predecessor is recorded, so is everything up to it.
        let before = self.through;
        self.through = seq;
        loop {
            let through = self.through;
            self.above.retain(|&above, _| above > through);
            let next = self
                .above
                .iter()
                .find(|(_, previous)| **previous <= through)
                .map(|(seq, _)| *seq);
            match next {
                Some(next) => {
                    self.above.remove(&next);
                    self.through = next;
                }
                None => break,
            }
        }
        // Invariant (TigerBeetle-style, in production): a watermark only rises.
        assert!(
            self.through > before,
            "a mark's watermark fell from {before} to {}",
            self.through
        );
        true
    }
}

/// The letters to one receiver still waiting for its acknowledgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The last letter sent to it.
    pub last: u64,
    /// How many letters to it are unacknowledged.
    pub unacked: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    /// The number the next letter gets (letters start at 1).
    pub next_seq: u64,
    /// Letters sent and not yet acknowledged, by number.
    pub outbox: BTreeMap<u64, Letter>,
    /// Per receiver with unacknowledged letters: the chain's last link.
    pub pending: BTreeMap<Address, Pending>,
    /// Per sender: what was recorded.
    pub marks: BTreeMap<Address, Mark>,
    /// Coins sent in credits, ever.
    pub coins_sent: u64,
    /// Coins of credits that left the outbox (acknowledged, or returned).
    pub coins_settled: u64,
    /// Coins of the credits in the outbox.
    pub coins_owed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "most post events in a record are letters sent: boxing them would add an allocation to each"
)]
pub enum PostEvent {
    /// A letter went into the outbox.
    Sent(Letter),
    /// A letter was taken (and what it asked is in the same commit).
    Received {
        from: Address,
        seq: u64,
        previous: u64,
        at_ms: u64,
    },
    /// Letters left the outbox: their receivers recorded them (or they could never be
    /// delivered and went to the dead letters).
    Delivered { seqs: Vec<u64> },
    /// The marks of senders not heard from since `before_ms` are dropped.
    Forgotten { before_ms: u64 },
}

/// What a receiver makes of a letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receipt {
    /// Never recorded: take it.
    New,
    /// Recorded before: acknowledge it again, do nothing else.
    Duplicate,
    /// Older than the marks are kept for: it cannot be told from one taken before.
    Stale,
}

impl Post {
    /// The letter `from` sends `to` next, stamped `sent_ms`.
    pub fn letter(&self, from: Address, to: Address, sent_ms: u64, body: super::Body) -> Letter {
        let previous = self
            .pending
            .get(&to)
            .filter(|pending| pending.unacked > 0)
            .map_or(0, |pending| pending.last);
        Letter {
            from,
            to,
            seq: self.next_seq.max(1),
            previous,
            sent_ms,
            body,
        }
    }

    /// Whether `letter` is new here, at `now_ms`, with marks kept for `kept_ms`.
    pub fn receipt(&self, letter: &Letter, now_ms: u64, kept_ms: u64) -> Receipt {
        let mark = self.marks.get(&letter.from);
        if mark.is_some_and(|mark| mark.has(letter.seq)) {
            return Receipt::Duplicate;
        }
        if letter.sent_ms.saturating_add(kept_ms) < now_ms {
            return Receipt::Stale;
        }
        Receipt::New
    }

    /// The moment before which marks may be forgotten, if any mark is that old.
    pub fn forgettable(&self, now_ms: u64, kept_ms: u64) -> Option<u64> {
        let before_ms = now_ms.saturating_sub(kept_ms);
        self.marks
            .values()
            .any(|mark| mark.last_ms < before_ms)
            .then_some(before_ms)
    }

    pub fn owes(&self) -> bool {
        !self.outbox.is_empty()
    }

    pub fn apply(&mut self, event: &PostEvent) {
        match event {
            PostEvent::Sent(letter) => {
                assert!(
                    letter.seq >= self.next_seq.max(1),
                    "letter {} sent after letter {}",
                    letter.seq,
                    self.next_seq
                );
                self.next_seq = letter.seq + 1;
                let pending = self.pending.entry(letter.to.clone()).or_default();
                pending.last = letter.seq;
                pending.unacked += 1;
                let coins = letter.body.coins();
                self.coins_sent = self.coins_sent.saturating_add(coins);
                self.coins_owed = self.coins_owed.saturating_add(coins);
                self.outbox.insert(letter.seq, letter.clone());
            }
            PostEvent::Received {
                from,
                seq,
                previous,
                at_ms,
            } => {
                self.marks
                    .entry(from.clone())
                    .or_default()
                    .record(*seq, *previous, *at_ms);
            }
            PostEvent::Delivered { seqs } => {
                for seq in seqs {
                    // An acknowledgement can arrive twice: the second finds nothing.
                    let Some(letter) = self.outbox.remove(seq) else {
                        continue;
                    };
                    if let Some(pending) = self.pending.get_mut(&letter.to) {
                        pending.unacked = pending.unacked.saturating_sub(1);
                        if pending.unacked == 0 {
                            self.pending.remove(&letter.to);
                        }
                    }
                    let coins = letter.body.coins();
                    self.coins_owed = self.coins_owed.saturating_sub(coins);
                    self.coins_settled = self.coins_settled.saturating_add(coins);
                }
            }
            PostEvent::Forgotten { before_ms } => {
                self.marks.retain(|_, mark| mark.last_ms >= *before_ms);
            }
        }
        // Invariant: what a grant chain says balances. Every coin sent is either
        // still owed (in the outbox) or settled.
        assert_eq!(
            self.coins_sent,
            self.coins_owed + self.coins_settled,
            "the post's coins do not balance"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::Body;

    fn letter(seq: u64, previous: u64) -> Letter {
        Letter {
            from: Address::Room(1),
            to: Address::Session("alice".into()),
            seq,
            previous,
            sent_ms: 0,
            body: Body::Leave,
        }
    }

    fn receive(post: &mut Post, letter: &Letter) -> Receipt {
        let receipt = post.receipt(letter, 0, u64::MAX);
        if receipt == Receipt::New {
            post.apply(&PostEvent::Received {
                from: letter.from.clone(),
                seq: letter.seq,
                previous: letter.previous,
                at_ms: 0,
            });
        }
        receipt
    }

    #[test]
    fn a_mark_remembers_every_letter_in_or_out_of_order() {
        let mut post = Post::default();
        // The chain 2 → 5 → 9 (0 before 2), arriving 9, 2, 5.
        assert_eq!(receive(&mut post, &letter(9, 5)), Receipt::New);
        assert_eq!(receive(&mut post, &letter(2, 0)), Receipt::New);
        let mark = &post.marks[&Address::Room(1)];
        assert_eq!((mark.through, mark.above.len()), (2, 1));
        assert_eq!(receive(&mut post, &letter(5, 2)), Receipt::New);
        let mark = &post.marks[&Address::Room(1)];
        assert_eq!(mark.through, 9, "the early letter joined the chain");
        assert!(mark.above.is_empty());
        for (seq, previous) in [(2, 0), (5, 2), (9, 5)] {
            assert_eq!(
                receive(&mut post, &letter(seq, previous)),
                Receipt::Duplicate,
                "letter {seq} again"
            );
        }
    }

    #[test]
    fn however_many_letters_came_after_it_an_old_letter_is_still_a_duplicate() {
        let mut post = Post::default();
        for seq in 1..=10_000 {
            assert_eq!(receive(&mut post, &letter(seq, seq - 1)), Receipt::New);
        }
        assert_eq!(receive(&mut post, &letter(1, 0)), Receipt::Duplicate);
        assert!(post.marks[&Address::Room(1)].above.is_empty());
    }

    #[test]
    fn a_sender_whose_letters_were_all_acknowledged_starts_a_new_chain() {
        let mut sender = Post::default();
        let to = Address::Session("alice".into());
        let first = sender.letter(Address::Room(1), to.clone(), 0, Body::Leave);
        sender.apply(&PostEvent::Sent(first.clone()));
        let second = sender.letter(Address::Room(1), to.clone(), 0, Body::Leave);
        assert_eq!(second.previous, first.seq, "chained while unacknowledged");
        sender.apply(&PostEvent::Sent(second.clone()));
        sender.apply(&PostEvent::Delivered {
            seqs: vec![first.seq, second.seq],
        });
        assert!(sender.pending.is_empty(), "nothing owed to alice");
        let third = sender.letter(Address::Room(1), to, 0, Body::Leave);
        assert_eq!((third.seq, third.previous), (3, 0));
        // The receiver, which recorded the first two, moves its watermark to the third.
        let mut receiver = Post::default();
        for letter in [&first, &second, &third] {
            assert_eq!(receive(&mut receiver, letter), Receipt::New);
        }
        assert_eq!(receiver.marks[&Address::Room(1)].through, 3);
    }

    #[test]
    fn coins_sent_are_owed_until_they_leave_the_outbox() {
        let mut post = Post::default();
        let credit = |amount| {
            Body::Credit(crate::mail::Credit {
                amount,
                reason: "test".into(),
                spin: None,
                news: Vec::new(),
            })
        };
        for amount in [10, 20] {
            let letter = post.letter(
                Address::Room(1),
                Address::Session("a".into()),
                0,
                credit(amount),
            );
            post.apply(&PostEvent::Sent(letter));
        }
        assert_eq!((post.coins_sent, post.coins_owed), (30, 30));
        post.apply(&PostEvent::Delivered { seqs: vec![1, 1] });
        assert_eq!((post.coins_owed, post.coins_settled), (20, 10));
    }

    #[test]
    fn stale_letters_are_refused_and_old_marks_forgotten() {
        let mut post = Post::default();
        let mut old = letter(1, 0);
        old.sent_ms = 1_000;
        assert_eq!(post.receipt(&old, 10_000, 5_000), Receipt::Stale);
        assert_eq!(post.receipt(&old, 5_000, 5_000), Receipt::New);
        post.apply(&PostEvent::Received {
            from: old.from.clone(),
            seq: 1,
            previous: 0,
            at_ms: 5_000,
        });
        assert_eq!(post.forgettable(9_000, 5_000), None);
        assert_eq!(post.forgettable(10_001, 5_000), Some(5_001));
        post.apply(&PostEvent::Forgotten { before_ms: 5_001 });
        assert!(post.marks.is_empty());
    }
}
