//! A referral tree's decisions, with no actor, store or socket.

use super::*;
use crate::mail::{Letter, Post, PostEvent};
use crate::runtime::Decided;
use crate::runtime::testing::{Bench, config, env, port, send_replies};
use playtree_protocol::ErrorCode;

fn tree(config: GameConfig) -> Bench<TreeEntity> {
    Bench::<TreeEntity>::activate("root".into(), env(config), ()).0
}

/// A letter from `player`'s session to the tree, numbered after the sender's last.
fn letter(tree: &mut Bench<TreeEntity>, player: &str, body: Body) -> Letter {
    let from = Address::Session(player.into());
    let seq = tree
        .stored
        .post
        .marks
        .get(&from)
        .map_or(1, |mark| mark.through + 1);
    Letter {
        from,
        to: tree.address.clone(),
        seq,
        previous: 0,
        sent_ms: tree.now_ms,
        body,
    }
}

/// `referrer`'s session asks the tree to attach `referee` (step 3 of a claim).
fn attach_letter(
    tree: &mut Bench<TreeEntity>,
    referrer: &str,
    referee: &str,
) -> (
    Decided<TreeEntity>,
    tokio::sync::oneshot::Receiver<Result<ReplyBody, ErrorReply>>,
) {
    let (reply, answer) = port();
    let body = Body::Attach {
        referee: referee.into(),
        suspect: false,
    };
    let letter = letter(tree, referrer, body);
    (tree.letter(letter, Some(Attachment::Reply(reply))), answer)
}

fn attach(tree: &mut Bench<TreeEntity>, referrer: &str, referee: &str) -> Result<(), ErrorReply> {
    let (decided, mut answer) = attach_letter(tree, referrer, referee);
    send_replies(decided.effects);
    answer.try_recv().expect("answered").map(drop)
}

/// The credits a decision sends, as (player, amount).
fn paid(decided: &Decided<TreeEntity>) -> Vec<(String, u64)> {
    decided
        .sent()
        .into_iter()
        .filter_map(|letter| match &letter.body {
            Body::Credit(credit) => Some((letter.to.player()?.to_owned(), credit.amount)),
            _ => None,
        })
        .collect()
}

fn activate(tree: &mut Bench<TreeEntity>, player: &str) -> Vec<(String, u64)> {
    let letter = letter(tree, player, Body::Activated);
    paid(&tree.letter(letter, None))
}

#[test]
fn a_chain_of_five_pays_exactly_the_configured_three_levels() {
    let mut config = config();
    config.referral.activation_rewards = vec![100, 30, 10];
    let mut tree = tree(config);
    // root ← a ← b ← c ← d ← e
    let chain = ["root", "a", "b", "c", "d", "e"];
    for pair in chain.windows(2) {
        attach(&mut tree, pair[0], pair[1]).expect("attached");
    }
    assert_eq!(tree.state().nodes["e"].depth, 5);
    let paid = activate(&mut tree, "e");
    assert_eq!(
        paid,
        vec![("d".into(), 100), ("c".into(), 30), ("b".into(), 10)],
        "levels 1 to 3 are paid, levels 4 and 5 (a, root) nothing"
    );
    assert!(
        activate(&mut tree, "e").is_empty(),
        "an activation pays once"
    );
}

#[test]
fn a_signup_pays_the_referrer_and_welcomes_the_referee() {
    let mut config = config();
    config.referral.signup_rewards = vec![100, 20];
    config.referral.welcome_bonus = 50;
    let mut tree = tree(config);
    attach(&mut tree, "root", "a").expect("attached");
    let (decided, _answer) = attach_letter(&mut tree, "a", "b");
    assert_eq!(
        paid(&decided),
        vec![("a".into(), 100), ("root".into(), 20), ("b".into(), 50)]
    );
    // Each ancestor's credit carries the news of the friend who joined; the claimer
    // and the referrer hear the claim's answer.
    let credit_news: Vec<usize> = decided
        .sent()
        .iter()
        .filter_map(|letter| match &letter.body {
            Body::Credit(credit) => Some(credit.news.len()),
            _ => None,
        })
        .collect();
    assert_eq!(
        credit_news,
        vec![2, 2, 1],
        "friend joined + reward; welcome"
    );
    let answers: Vec<&str> = decided
        .sent()
        .iter()
        .map(|letter| letter.body.name())
        .collect();
    assert!(answers.contains(&"claim_answered") && answers.contains(&"referee_answered"));
    // Every payment is a letter in the outbox until its wallet acknowledges it.
    assert_eq!(tree.stored.post.outbox.len(), 4 + 5);
}

#[test]
fn a_referee_joins_one_tree_once_and_never_under_themselves() {
    let mut tree = tree(config());
    attach(&mut tree, "root", "a").expect("attached");
    assert_eq!(
        attach(&mut tree, "root", "a"),
        Ok(()),
        "asked again: the same answer"
    );
    assert_eq!(
        attach(&mut tree, "root", "b"),
        Ok(()),
        "a second referee of the root"
    );
    let code = |result: Result<(), ErrorReply>| result.map_err(|error| error.code);
    assert_eq!(
        code(attach(&mut tree, "b", "a")),
        Err(ErrorCode::ReferralAlreadyClaimed),
        "a has a referrer already"
    );
    assert_eq!(
        code(attach(&mut tree, "c", "c")),
        Err(ErrorCode::SelfReferral)
    );
    assert_eq!(
        code(attach(&mut tree, "stranger", "d")),
        Err(ErrorCode::Internal),
        "the referrer must be in this tree"
    );
    assert_eq!(tree.state().nodes.len(), 3);
}

#[test]
fn a_full_tree_refuses_with_its_own_code() {
    let mut config = config();
    config.referral.tree_players_max = 3;
    let mut tree = tree(config);
    attach(&mut tree, "root", "a").expect("attached");
    attach(&mut tree, "root", "b").expect("attached");
    assert_eq!(
        attach(&mut tree, "root", "c").map_err(|error| error.code),
        Err(ErrorCode::ReferralTreeFull)
    );
}

#[test]
fn counters_kept_as_the_tree_grows_equal_a_recount() {
    let mut tree = tree(config());
    let edges = [
        ("root", "a"),
        ("root", "b"),
        ("a", "c"),
        ("a", "d"),
        ("c", "e"),
        ("e", "f"),
        ("b", "g"),
    ];
    let mut paid_to: std::collections::BTreeMap<String, u64> = Default::default();
    for (referrer, referee) in edges {
        let (decided, _answer) = attach_letter(&mut tree, referrer, referee);
        for (player, amount) in paid(&decided) {
            *paid_to.entry(player).or_default() += amount;
        }
    }
    for player in ["c", "f", "g"] {
        for (beneficiary, amount) in activate(&mut tree, player) {
            *paid_to.entry(beneficiary).or_default() += amount;
        }
    }
    let state = tree.state();
    for (player, node) in &state.nodes {
        // Recount from the parent links alone.
        let mut by_level = vec![0u64; LEVELS_TRACKED];
        let mut activated = 0;
        for (other, other_node) in &state.nodes {
            let chain = ancestors(state, other);
            if let Some(level) = chain.iter().position(|ancestor| ancestor == player) {
                by_level[level] += 1;
                activated += u64::from(other_node.activated);
            }
        }
        while by_level.last() == Some(&0) {
            by_level.pop();
        }
        assert_eq!(node.referees_by_level, by_level, "{player}");
        assert_eq!(node.activated_referees, activated, "{player}");
        // What the grants paid.
        assert_eq!(
            node.earned,
            paid_to.get(player).copied().unwrap_or(0),
            "{player}"
        );
    }
    assert_eq!(state.stats("a").referees_by_level, vec![2, 1, 1]);
    assert!(
        state.held.is_empty(),
        "nothing credited is kept as a reward"
    );
}

#[test]
fn a_trees_coins_are_owed_until_the_wallets_have_them() {
    let mut tree = tree(config());
    attach(&mut tree, "root", "a").expect("attached");
    let post: &Post = &tree.stored.post;
    assert_eq!(
        post.coins_owed,
        100 + 50,
        "the signup reward and the welcome bonus"
    );
    let credits: Vec<u64> = post
        .outbox
        .iter()
        .filter(|(_, letter)| letter.body.coins() > 0)
        .map(|(seq, _)| *seq)
        .collect();
    tree.stored.post.apply(&PostEvent::Delivered {
        seqs: credits[..1].to_vec(),
    });
    assert_eq!(tree.stored.post.coins_owed, 50);
    assert_eq!(tree.stored.post.coins_settled, 100);
}

#[test]
fn a_held_reward_is_credited_when_its_hold_passes() {
    let mut config = config();
    config.referral.hold_ms = 60_000;
    config.referral.signup_rewards = vec![100];
    config.referral.welcome_bonus = 0;
    let mut tree = tree(config);
    let (decided, _answer) = attach_letter(&mut tree, "root", "a");
    assert!(paid(&decided).is_empty(), "nothing is paid while held");
    assert_eq!(tree.state().stats("root").pending, 100);
    assert_eq!(tree.state().stats("root").earned, 0);
    let due = TreeEntity::next_deadline(&tree.env, tree.state(), &tree.memory);
    assert_eq!(
        due,
        Some(tree.now_ms + 60_000),
        "the tree wakes when the hold ends"
    );

    let deadline = |tree: &mut Bench<TreeEntity>| paid(&tree.with(TreeEntity::on_deadline));
    tree.now_ms += 59_999;
    assert!(deadline(&mut tree).is_empty(), "not yet");
    tree.now_ms += 1;
    assert_eq!(deadline(&mut tree), vec![("root".into(), 100)]);
    let stats = tree.state().stats("root");
    assert_eq!((stats.pending, stats.earned), (0, 100));
    assert!(tree.state().holds.is_empty());
    assert!(deadline(&mut tree).is_empty(), "released once");
}

fn decide(
    tree: &mut Bench<TreeEntity>,
    reward: u64,
    approve: bool,
) -> (Result<RewardState, ErrorCode>, Vec<(String, u64)>) {
    let (reply, mut answer) = port();
    let decided = tree.input(TreeInput::Decide {
        reward,
        approve,
        reply,
    });
    let paid = paid(&decided);
    send_replies(decided.effects);
    let answer = answer.try_recv().expect("answered");
    (answer.map_err(|error| error.code), paid)
}

#[test]
fn claims_past_the_hourly_limit_are_flagged_and_a_partner_approves_or_voids_them() {
    let mut config = config();
    config.referral.claims_per_referrer_per_hour = 2;
    config.referral.signup_rewards = vec![100];
    config.referral.welcome_bonus = 50;
    let mut tree = tree(config);
    attach(&mut tree, "root", "a").expect("attached");
    attach(&mut tree, "root", "b").expect("attached");
    let (third, _answer) = attach_letter(&mut tree, "root", "c");
    assert!(
        paid(&third).is_empty(),
        "the third claim within the hour pays nothing"
    );
    assert_eq!(tree.state().stats("root").flagged, 100);
    assert_eq!(tree.state().stats("c").flagged, 50);
    let flagged: Vec<u64> = tree.state().held.keys().copied().collect();
    assert_eq!(
        flagged.len(),
        2,
        "the signup reward and the welcome bonus, held"
    );

    // A partner approves one: paid now, and the same answer when asked again.
    let (approved, sent) = decide(&mut tree, flagged[0], true);
    assert_eq!(approved, Ok(RewardState::Credited));
    assert_eq!(sent, vec![("root".into(), 100)]);
    let (again, sent) = decide(&mut tree, flagged[0], true);
    assert_eq!((again, sent.len()), (Ok(RewardState::Credited), 0));
    assert_eq!(
        decide(&mut tree, flagged[0], false).0,
        Err(ErrorCode::RewardNotHeld)
    );
    // And voids the other: never paid.
    let (voided, sent) = decide(&mut tree, flagged[1], false);
    assert_eq!((voided, sent.len()), (Ok(RewardState::Voided), 0));
    assert_eq!(tree.state().stats("c").flagged, 0);
    assert_eq!(tree.state().stats("c").earned, 0);
    assert_eq!(tree.state().stats("root").earned, 200 + 100);
    assert_eq!(
        decide(&mut tree, 999, true).0,
        Err(ErrorCode::UnknownReward)
    );

    // What the suspect referee does later pays nothing either, until approved.
    assert!(
        activate(&mut tree, "c").is_empty(),
        "a suspect's activation is flagged"
    );
    assert_eq!(
        tree.state().stats("root").flagged,
        100,
        "the activation reward, held"
    );

    // An hour later the referrer's claims pay again.
    tree.now_ms += state::HOUR_MS;
    let (later, _answer) = attach_letter(&mut tree, "root", "d");
    assert_eq!(paid(&later), vec![("root".into(), 100), ("d".into(), 50)]);
}

#[test]
fn rewards_past_a_players_daily_limit_are_flagged() {
    let mut config = config();
    config.referral.rewards_per_player_per_day = 2;
    config.referral.claims_per_referrer_per_hour = 0;
    config.referral.signup_rewards = vec![100];
    config.referral.welcome_bonus = 0;
    let mut tree = tree(config);
    for referee in ["a", "b", "c"] {
        attach(&mut tree, "root", referee).expect("attached");
    }
    let stats = tree.state().stats("root");
    assert_eq!((stats.earned, stats.flagged), (200, 100));
}

#[test]
fn a_conversion_pays_its_kinds_rewards_up_the_tree_once_per_key() {
    let mut config = config();
    config.referral.conversion_rewards = [("purchase".to_owned(), vec![50, 10])].into();
    config.referral.welcome_bonus = 0;
    config.referral.signup_rewards = vec![];
    let mut tree = tree(config);
    attach(&mut tree, "root", "a").expect("attached");
    attach(&mut tree, "a", "b").expect("attached");
    let mut report = |key: &str, kind: &str| {
        let (reply, mut answer) = port();
        let decided = tree.hand_off(HandOff::Conversion {
            player: "b".into(),
            kind: kind.into(),
            key: key.into(),
            reply,
        });
        let paid = paid(&decided);
        send_replies(decided.effects);
        (
            answer.try_recv().expect("answered").map_err(|e| e.code),
            paid,
        )
    };
    assert_eq!(
        report("k1", "purchase"),
        (Ok(2), vec![("a".into(), 50), ("root".into(), 10)])
    );
    assert_eq!(
        report("k1", "purchase"),
        (Ok(2), vec![]),
        "a repeated key pays nothing more"
    );
    assert_eq!(
        report("k2", "refund").0,
        Err(ErrorCode::UnknownConversionKind)
    );
    assert_eq!(
        report("k2", "purchase").0,
        Ok(2),
        "another key is another conversion"
    );
}

#[test]
fn the_claims_limit_holds_over_any_hour_not_only_within_fixed_windows() {
    let mut config = config();
    config.referral.claims_per_referrer_per_hour = 2;
    config.referral.signup_rewards = vec![100];
    config.referral.welcome_bonus = 0;
    let mut tree = tree(config);
    let start = tree.now_ms;
    attach(&mut tree, "root", "a").expect("attached");
    tree.now_ms = start + state::HOUR_MS - 1;
    attach(&mut tree, "root", "b").expect("attached");
    // An hour after the first claim: a fixed window would start afresh here and let two
    // more through, three claims within a millisecond against a limit of two.
    tree.now_ms = start + state::HOUR_MS;
    attach(&mut tree, "root", "c").expect("attached");
    attach(&mut tree, "root", "d").expect("attached");
    let stats = tree.state().stats("root");
    assert_eq!(
        (stats.earned, stats.flagged),
        (300, 100),
        "b and c are the two claims within the last hour: d is past the limit"
    );
    // At 2h - 1 ms, b has left the hour; c is the one paid claim within it (d was
    // flagged, and a flagged claim is not one the limit lets through): e is paid, f not.
    tree.now_ms = start + 2 * state::HOUR_MS - 1;
    attach(&mut tree, "root", "e").expect("attached");
    attach(&mut tree, "root", "f").expect("attached");
    let stats = tree.state().stats("root");
    assert_eq!((stats.earned, stats.flagged), (400, 200));
}

#[test]
fn a_tree_keeps_answers_to_partners_for_their_span_and_refuses_more_than_it_may_keep() {
    let mut config = config();
    config.referral.conversion_rewards = [("purchase".to_owned(), vec![50])].into();
    config.referral.welcome_bonus = 0;
    config.referral.signup_rewards = vec![];
    config.referral.partner_answers_max = 2;
    config.referral.partner_answers_kept_ms = 1_000;
    let mut tree = tree(config);
    attach(&mut tree, "root", "a").expect("attached");
    let report = |tree: &mut Bench<TreeEntity>, key: &str| {
        let (reply, mut answer) = port();
        let decided = tree.hand_off(HandOff::Conversion {
            player: "a".into(),
            kind: "purchase".into(),
            key: key.into(),
            reply,
        });
        let paid = paid(&decided).len();
        send_replies(decided.effects);
        answer
            .try_recv()
            .expect("answered")
            .map(|_| paid)
            .map_err(|error| error.code)
    };
    assert_eq!(report(&mut tree, "k1"), Ok(1));
    assert_eq!(report(&mut tree, "k2"), Ok(1));
    assert_eq!(report(&mut tree, "k1"), Ok(0), "remembered: paid once");
    assert_eq!(
        report(&mut tree, "k3"),
        Err(ErrorCode::RateLimited),
        "keeping k3 would forget k1 within its span: refused, nothing paid"
    );
    assert_eq!(report(&mut tree, "k1"), Ok(0), "k1 is still remembered");
    tree.now_ms += 999;
    assert_eq!(report(&mut tree, "k2"), Ok(0), "within the span");
    tree.now_ms += 1;
    assert_eq!(
        report(&mut tree, "k3"),
        Ok(1),
        "k1 and k2 reached their span"
    );
    assert_eq!(
        tree.state().conversions.len(),
        1,
        "the answers older than the span are forgotten"
    );
    assert_eq!(report(&mut tree, "k3"), Ok(0));
}

#[test]
fn replaying_a_trees_events_rebuilds_its_state_limits_and_answers_included() {
    let mut config = config();
    config.referral.claims_per_referrer_per_hour = 2;
    config.referral.rewards_per_player_per_day = 3;
    config.referral.signup_rewards = vec![100, 10];
    config.referral.conversion_rewards = [("purchase".to_owned(), vec![50])].into();
    config.referral.partner_answers_max = 3;
    config.referral.partner_answers_kept_ms = 5_000;
    let mut tree = tree(config);
    let mut journal = Vec::new();
    let mut keep = |decided: Decided<TreeEntity>| {
        journal.extend(decided.events.clone());
        send_replies(decided.effects);
    };
    for (step, (referrer, referee)) in [("root", "a"), ("root", "b"), ("root", "c"), ("a", "d")]
        .into_iter()
        .enumerate()
    {
        tree.now_ms += step as u64 * 1_000;
        let (decided, _answer) = attach_letter(&mut tree, referrer, referee);
        keep(decided);
    }
    for key in ["k1", "k2", "k1", "k3", "k4"] {
        tree.now_ms += 2_000;
        let (reply, _answer) = port();
        keep(tree.hand_off(HandOff::Conversion {
            player: "d".into(),
            kind: "purchase".into(),
            key: key.into(),
            reply,
        }));
    }
    let flagged: Vec<u64> = tree.state().held.keys().copied().collect();
    assert!(!flagged.is_empty(), "the limits flagged something");
    for (index, reward) in flagged.into_iter().enumerate() {
        let (reply, _answer) = port();
        keep(tree.input(TreeInput::Decide {
            reward,
            approve: index % 2 == 0,
            reply,
        }));
    }
    let mut replayed = TreeState::default();
    for event in &journal {
        <TreeEntity as crate::store::Entity>::apply(&mut replayed, event);
    }
    assert_eq!(
        &replayed,
        tree.state(),
        "the journal alone gives the same state"
    );
    assert!(!tree.state().decided.is_empty() && !tree.state().conversions.is_empty());
}
