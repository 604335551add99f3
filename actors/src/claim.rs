//! A referral claim, as a pure step machine: every rule of it, in one place, tested
//! without actors (the session and the tree only carry its steps out).
//!
//! 1. The claimer's session starts: the rules ([`start`]); it records the claim as under
//!    way (from then on it accepts no referee) and sends `AcceptReferee` to the code's
//!    owner.
//! 2. The owner's session answers ([`accept`]): it refuses while its own claim is under
//!    way; else it notes the referee as being accepted (from then on it claims no code)
//!    and sends `Attach` to its tree (rooted at its own root, or at itself).
//! 3. The tree attaches the referee below the owner, or refuses ([`attach`]), and
//!    answers both: `ClaimAnswered` to the claimer, `RefereeAnswered` to the owner.
//! 4. Each records the answer ([`answered`], [`referee_answered`]).
//!
//! Why trees never merge and hold no cycle, whatever the order the steps' letters
//! arrive in and however often each is delivered (each is taken once): a player gains
//! a parent only at step 3, and only while they have no referees and none on their way
//! (step 1 checks it, and step 2 refuses referees to a player whose claim is under
//! way, until the claim's answer); a player gains referees only once their own claim,
//! if any, has been answered. So every node a tree gains is a leaf, and a leaf is in
//! one tree: the model at the bottom of this file checks it over random interleavings.

use playtree_protocol::{ErrorCode, ErrorReply};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A player's place in the referral system, as their session keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// When the player first connected: the attribution window starts here (0: never).
    pub first_seen_ms: u64,
    /// The player's own code, once made.
    pub code: Option<String>,
    /// Who referred the player, once their tree attached them.
    pub referrer: Option<String>,
    /// The root of the player's tree: their referrer's once attached, their own once a
    /// referee of theirs was.
    pub root: Option<String>,
    /// A referee of the player's was attached: the player never claims a code.
    pub has_referees: bool,
    /// Referees the player accepted whose tree has not answered yet: meanwhile the
    /// player claims no code.
    pub accepting: BTreeSet<String>,
    /// The player's claim under way (step 1 taken, no answer yet).
    pub claiming: Option<Claiming>,
    /// The player finished a first game.
    pub activated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claiming {
    pub referrer: String,
    /// Made from an address past its claims limit: its rewards are flagged.
    pub suspect: bool,
    /// The idempotency key of the keyed request that made it: the claim's answer is
    /// kept for it.
    pub request_key: Option<u64>,
}

impl Link {
    /// The tree the player's referees go into.
    pub fn root_for_referees(&self, me: &str) -> String {
        self.root.clone().unwrap_or_else(|| me.to_owned())
    }
}

pub fn self_referral() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::SelfReferral,
        "that is your own referral code; claim a friend's",
    )
}

/// Step 1: may `me` claim `referrer`'s code at `now_ms`?
pub fn start(
    link: &Link,
    me: &str,
    referrer: &str,
    now_ms: u64,
    window_ms: u64,
) -> Result<(), ErrorReply> {
    if referrer == me {
        return Err(self_referral());
    }
    if let Some(referrer) = &link.referrer {
        return Err(ErrorReply::new(
            ErrorCode::ReferralAlreadyClaimed,
            format!(
                "you have claimed a referral code already (your referrer is {referrer}); a player claims once"
            ),
        ));
    }
    if link.claiming.is_some() {
        return Err(ErrorReply::new(
            ErrorCode::ReferralAlreadyClaimed,
            "another claim of yours is under way",
        ));
    }
    if link.has_referees || !link.accepting.is_empty() {
        return Err(ErrorReply::new(
            ErrorCode::AlreadyReferrer,
            "you have referees of your own, so you cannot join another player's tree",
        ));
    }
    if link.first_seen_ms > 0 && now_ms.saturating_sub(link.first_seen_ms) > window_ms {
        return Err(ErrorReply::new(
            ErrorCode::AttributionWindowPassed,
            format!(
                "codes can be claimed within {} hours of your first connection",
                window_ms / 3_600_000
            ),
        ));
    }
    Ok(())
}

/// Step 2: `me` (the code's owner) is asked to take `referee`. Answers the root of the
/// tree the referee goes into.
pub fn accept(link: &Link, me: &str, referee: &str) -> Result<String, ErrorReply> {
    if referee == me {
        return Err(self_referral());
    }
    if link.claiming.is_some() {
        return Err(ErrorReply::new(
            ErrorCode::ReferrerBusy,
            "the owner of this code is joining a referral tree right now; try again in a moment",
        ));
    }
    Ok(link.root_for_referees(me))
}

/// What a tree knows of its players, for step 3.
pub trait TreeView {
    /// `None`: not in the tree; `Some(None)`: its root; `Some(Some(parent))`.
    fn parent_of(&self, player: &str) -> Option<Option<&str>>;
    fn players(&self) -> usize;
}

/// What step 3 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// A new leaf (and, with the tree's first referee, its root as the top node).
    New,
    /// Attached before, below the same referrer: the same answer again.
    Again,
}

/// Step 3: may the tree rooted at `root` attach `referee` below `referrer`?
pub fn attach(
    tree: &impl TreeView,
    root: &str,
    referrer: &str,
    referee: &str,
    players_max: usize,
) -> Result<Attach, ErrorReply> {
    if referee == referrer {
        return Err(self_referral());
    }
    match tree.parent_of(referee) {
        Some(Some(parent)) if parent == referrer => return Ok(Attach::Again),
        Some(_) => {
            return Err(ErrorReply::new(
                ErrorCode::ReferralAlreadyClaimed,
                "this player is in a referral tree already",
            ));
        }
        None => {}
    }
    if tree.parent_of(referrer).is_none() && referrer != root {
        return Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("{referrer} is not in the referral tree of {root}"),
        ));
    }
    // The referee, and the root with the first referral.
    let adding = if tree.players() == 0 { 2 } else { 1 };
    if tree.players() + adding > players_max {
        return Err(ErrorReply::new(
            ErrorCode::ReferralTreeFull,
            format!("this referral tree holds its maximum of {players_max} players"),
        ));
    }
    Ok(Attach::New)
}

/// Step 4, the claimer's side: the change to its link, if the answer is for its claim.
/// An attachment is recorded whatever the link says (the tree has the last word);
/// a refusal only ends the claim it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    Recorded {
        referrer: String,
        root: String,
    },
    Dropped,
    /// Not this player's claim under way (a second answer): nothing changes.
    Ignored,
}

pub fn answered(link: &Link, attached: Option<(&str, &str)>) -> Answered {
    match attached {
        Some((referrer, root)) if link.referrer.is_none() => Answered::Recorded {
            referrer: referrer.to_owned(),
            root: root.to_owned(),
        },
        Some(_) => Answered::Ignored,
        None if link.claiming.is_some() => Answered::Dropped,
        None => Answered::Ignored,
    }
}

#[cfg(test)]
mod tests {
    //! The model: players, their links and trees, and letters in flight delivered in
    //! any order, each possibly many times (the receiver takes each once, as the
    //! runtime's marks make it).
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Letter {
        AcceptReferee {
            claimer: usize,
            referrer: usize,
        },
        Attach {
            root: usize,
            referrer: usize,
            referee: usize,
        },
        ClaimAnswered {
            claimer: usize,
            attached: Option<(usize, usize)>,
        },
        RefereeAnswered {
            referrer: usize,
            referee: usize,
            attached: bool,
        },
    }

    #[derive(Default)]
    struct Tree {
        /// player → parent (None: the root).
        nodes: BTreeMap<String, Option<String>>,
    }

    impl TreeView for Tree {
        fn parent_of(&self, player: &str) -> Option<Option<&str>> {
            self.nodes.get(player).map(|parent| parent.as_deref())
        }
        fn players(&self) -> usize {
            self.nodes.len()
        }
    }

    struct World {
        links: Vec<Link>,
        trees: BTreeMap<usize, Tree>,
        /// (letter number, letter); taken numbers are remembered.
        in_flight: Vec<(u64, Letter)>,
        taken: BTreeSet<u64>,
        next: u64,
    }

    fn name(player: usize) -> String {
        format!("p{player}")
    }

    fn index(player: &str) -> usize {
        player[1..].parse().expect("pN")
    }

    impl World {
        fn new(players: usize) -> World {
            World {
                links: vec![Link::default(); players],
                trees: BTreeMap::new(),
                in_flight: Vec::new(),
                taken: BTreeSet::new(),
                next: 0,
            }
        }

        fn send(&mut self, letter: Letter) {
            self.next += 1;
            self.in_flight.push((self.next, letter));
        }

        fn claim(&mut self, claimer: usize, referrer: usize) {
            let link = &self.links[claimer];
            if start(link, &name(claimer), &name(referrer), 0, u64::MAX).is_ok() {
                self.links[claimer].claiming = Some(Claiming {
                    referrer: name(referrer),
                    suspect: false,
                    request_key: None,
                });
                self.send(Letter::AcceptReferee { claimer, referrer });
            }
        }

        /// Delivers in-flight letter `pick`; keeps a copy in flight if `again`.
        fn deliver(&mut self, pick: usize, again: bool) {
            if self.in_flight.is_empty() {
                return;
            }
            let at = pick % self.in_flight.len();
            let (number, letter) = if again {
                self.in_flight[at].clone()
            } else {
                self.in_flight.swap_remove(at)
            };
            if !self.taken.insert(number) {
                return;
            }
            match letter {
                Letter::AcceptReferee { claimer, referrer } => {
                    let link = &self.links[referrer];
                    match accept(link, &name(referrer), &name(claimer)) {
                        Ok(root) => {
                            self.links[referrer].accepting.insert(name(claimer));
                            self.send(Letter::Attach {
                                root: index(&root),
                                referrer,
                                referee: claimer,
                            });
                        }
                        Err(_) => self.send(Letter::ClaimAnswered {
                            claimer,
                            attached: None,
                        }),
                    }
                }
                Letter::Attach {
                    root,
                    referrer,
                    referee,
                } => {
                    let tree = self.trees.entry(root).or_default();
                    let attached =
                        match attach(tree, &name(root), &name(referrer), &name(referee), 1_000) {
                            Ok(Attach::New) => {
                                tree.nodes.entry(name(root)).or_insert(None);
                                tree.nodes.insert(name(referee), Some(name(referrer)));
                                true
                            }
                            Ok(Attach::Again) => true,
                            Err(_) => false,
                        };
                    self.send(Letter::ClaimAnswered {
                        claimer: referee,
                        attached: attached.then_some((referrer, root)),
                    });
                    self.send(Letter::RefereeAnswered {
                        referrer,
                        referee,
                        attached,
                    });
                }
                Letter::ClaimAnswered { claimer, attached } => {
                    let names = attached.map(|(referrer, root)| (name(referrer), name(root)));
                    let link = &mut self.links[claimer];
                    match answered(
                        link,
                        names
                            .as_ref()
                            .map(|(referrer, root)| (referrer.as_str(), root.as_str())),
                    ) {
                        Answered::Recorded { referrer, root } => {
                            link.claiming = None;
                            link.referrer = Some(referrer);
                            link.root = Some(root);
                        }
                        Answered::Dropped => link.claiming = None,
                        Answered::Ignored => {}
                    }
                }
                Letter::RefereeAnswered {
                    referrer,
                    referee,
                    attached,
                } => {
                    let me = name(referrer);
                    let link = &mut self.links[referrer];
                    link.accepting.remove(&name(referee));
                    if attached {
                        link.root.get_or_insert(me);
                        link.has_referees = true;
                    }
                }
            }
        }

        /// Every player in at most one tree, every parent chain ending at its tree's root.
        fn check_forest(&self) -> Result<(), String> {
            let mut seen = BTreeMap::new();
            for (root, tree) in &self.trees {
                for (player, parent) in &tree.nodes {
                    if let Some(other) = seen.insert(player.clone(), *root) {
                        return Err(format!("{player} is in the trees of p{other} and p{root}"));
                    }
                    let mut steps = 0;
                    let mut current = parent.clone();
                    while let Some(up) = current {
                        steps += 1;
                        if steps > tree.nodes.len() {
                            return Err(format!("a cycle above {player}"));
                        }
                        current = tree
                            .nodes
                            .get(&up)
                            .ok_or_else(|| format!("{player}'s ancestor {up} is not in the tree"))?
                            .clone();
                    }
                    if parent.is_none() && *player != name(*root) {
                        return Err(format!("{player} is a second root of p{root}'s tree"));
                    }
                }
            }
            Ok(())
        }

        /// Once every letter is in: sessions agree with their trees.
        fn check_settled(&self) -> Result<(), String> {
            for (player, link) in self.links.iter().enumerate() {
                if link.claiming.is_some() || !link.accepting.is_empty() {
                    return Err(format!("p{player} still waits: {link:?}"));
                }
                let in_tree: Vec<(usize, Option<String>)> = self
                    .trees
                    .iter()
                    .filter_map(|(root, tree)| {
                        tree.nodes.get(&name(player)).map(|p| (*root, p.clone()))
                    })
                    .collect();
                match (&link.referrer, in_tree.as_slice()) {
                    (Some(referrer), [(root, Some(parent))]) => {
                        if parent != referrer || link.root.as_deref() != Some(&name(*root)) {
                            return Err(format!("p{player}: link {link:?} against tree p{root}"));
                        }
                    }
                    (None, []) | (None, [(_, None)]) => {}
                    _ => return Err(format!("p{player}: link {link:?} against {in_tree:?}")),
                }
            }
            Ok(())
        }
    }

    #[derive(Debug, Clone)]
    enum Step {
        Claim(usize, usize),
        Deliver(usize, bool),
    }

    fn step(players: usize) -> impl Strategy<Value = Step> {
        prop_oneof![
            2 => (0..players, 0..players).prop_map(|(a, b)| Step::Claim(a, b)),
            5 => (any::<usize>(), prop::bool::weighted(0.2)).prop_map(|(pick, again)| Step::Deliver(pick, again)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

        #[test]
        fn no_order_or_repetition_of_the_steps_merges_trees_or_makes_a_cycle(
            steps in prop::collection::vec(step(6), 1..120),
        ) {
            let mut world = World::new(6);
            for step in steps {
                match step {
                    Step::Claim(claimer, referrer) => world.claim(claimer, referrer),
                    Step::Deliver(pick, again) => world.deliver(pick, again),
                }
                prop_assert_eq!(world.check_forest(), Ok(()));
            }
            // Let everything arrive (copies included), then sessions agree with trees.
            let mut pick = 0;
            while !world.in_flight.is_empty() {
                pick += 7;
                world.deliver(pick, false);
                prop_assert_eq!(world.check_forest(), Ok(()));
            }
            prop_assert_eq!(world.check_settled(), Ok(()));
        }
    }

    #[test]
    fn each_rule_has_its_own_error() {
        let mut link = Link::default();
        assert_eq!(
            start(&link, "a", "a", 0, 10).map_err(|e| e.code),
            Err(ErrorCode::SelfReferral)
        );
        link.first_seen_ms = 1;
        assert_eq!(
            start(&link, "a", "b", 20, 10).map_err(|e| e.code),
            Err(ErrorCode::AttributionWindowPassed)
        );
        link.accepting.insert("c".into());
        assert_eq!(
            start(&link, "a", "b", 5, 10).map_err(|e| e.code),
            Err(ErrorCode::AlreadyReferrer)
        );
        link.accepting.clear();
        link.claiming = Some(Claiming {
            referrer: "b".into(),
            suspect: false,
            request_key: None,
        });
        assert_eq!(
            accept(&link, "a", "c").map_err(|e| e.code),
            Err(ErrorCode::ReferrerBusy)
        );
        link.claiming = None;
        link.referrer = Some("b".into());
        link.root = Some("r".into());
        assert_eq!(
            start(&link, "a", "d", 5, 10).map_err(|e| e.code),
            Err(ErrorCode::ReferralAlreadyClaimed)
        );
        assert_eq!(
            accept(&link, "a", "c"),
            Ok("r".into()),
            "referees go into the player's tree"
        );
    }
}
