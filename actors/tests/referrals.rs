//! Referrals through the hub: sessions, trees, the store. Codes, the claim rules (each
//! with its own error), rewards reaching wallets exactly once, activation on a first
//! game, and a property test that no sequence of claims merges trees or makes a cycle.

mod common;

use common::{START_MS, TestHub, WAIT, ask, config, connect, eventually_async, hub_with, wallet};
use playtree_actors::connections::Outbound;
use playtree_actors::mail::{Address, Body, Post, PostEvent};
use playtree_actors::referral::{TreeEntity, TreeState, ancestors};
use playtree_actors::runtime::{Durable, Record};
use playtree_actors::session::{SessionEntity, SessionEvent, SessionState};
use playtree_actors::store::Journal;
use playtree_protocol::{ErrorCode, ReplyBody, Request, RoomKind};
use proptest::prelude::*;
use std::collections::BTreeMap;

async fn code_of(test: &TestHub, player: &str) -> String {
    match ask(test, player, Request::GetReferralCode).await {
        Ok(ReplyBody::ReferralCode { code }) => code,
        other => panic!("no code for {player}: {other:?}"),
    }
}

async fn claim(test: &TestHub, player: &str, code: &str) -> Result<String, ErrorCode> {
    match ask(
        test,
        player,
        Request::ClaimReferral {
            code: code.to_owned(),
        },
    )
    .await
    {
        Ok(ReplyBody::ReferralClaimed { referrer }) => Ok(referrer),
        Ok(other) => panic!("unexpected {other:?}"),
        Err(error) => Err(error.code),
    }
}

/// Waits until `player`'s wallet holds `expected` (grants arrive by cast).
async fn wallet_reaches(test: &TestHub, player: &str, expected: u64) {
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            let balance = wallet(test, player).await;
            if balance >= expected {
                return balance;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{player}'s wallet never reached {expected}"));
    assert_eq!(reached, expected, "{player} was paid more than once");
}

/// Waits until no session, room or tree owes a letter: everything sent was taken and
/// acknowledged, so wallets and links are final. (Time moves on meanwhile:
/// acknowledgements are journaled with a sender's next commit, or after
/// `mail.acks_flush_ms`.)
async fn settles(test: &TestHub) {
    eventually_async("every letter is taken and acknowledged", || async {
        test.clock.advance(test.hub.config.mail.acks_flush_ms);
        let mut owing = Vec::new();
        for kind in ["session", "room", "tree"] {
            owing.extend(test.store.owing(kind).await.expect("index"));
        }
        owing.is_empty()
    })
    .await;
}

fn referral_config() -> playtree_actors::GameConfig {
    let mut config = config();
    config.referral.signup_rewards = vec![100];
    config.referral.activation_rewards = vec![100, 30, 10];
    config.referral.welcome_bonus = 50;
    config
}

#[tokio::test]
async fn a_claimed_code_pays_both_sides_once_and_every_rule_has_its_own_error() {
    let test = hub_with(referral_config()).await;
    let alice = code_of(&test, "alice").await;
    assert_eq!(code_of(&test, "alice").await, alice, "one code per player");
    assert_eq!(alice.len(), 8);
    assert_eq!(
        claim(&test, "bob", &alice.to_lowercase()).await,
        Ok("alice".into())
    );
    wallet_reaches(&test, "alice", 100).await;
    wallet_reaches(&test, "bob", 50).await;

    let bob = code_of(&test, "bob").await;
    assert_eq!(
        claim(&test, "bob", &alice).await,
        Err(ErrorCode::ReferralAlreadyClaimed)
    );
    assert_eq!(
        claim(&test, "alice", &bob).await,
        Err(ErrorCode::AlreadyReferrer),
        "alice has a referee"
    );
    let carol = code_of(&test, "carol").await;
    assert_eq!(
        claim(&test, "carol", &carol).await,
        Err(ErrorCode::SelfReferral)
    );
    assert_eq!(
        claim(&test, "carol", "ZZZZZZZZ").await,
        Err(ErrorCode::UnknownReferralCode)
    );
    assert_eq!(
        claim(&test, "carol", "not a code").await,
        Err(ErrorCode::UnknownReferralCode)
    );
    // Dave connects, and claims after the window.
    let (outbound, _receiver) = Outbound::channel(1, 100, 1 << 20);
    connect(&test, "dave", &outbound).await;
    test.clock
        .advance(test.hub.config.referral.attribution_window_ms + 1);
    assert_eq!(
        claim(&test, "dave", &alice).await,
        Err(ErrorCode::AttributionWindowPassed)
    );
    // Nothing was paid for any refused claim.
    wallet_reaches(&test, "alice", 100).await;
    assert_eq!(wallet(&test, "carol").await, 0);
    assert_eq!(wallet(&test, "dave").await, 0);
    match ask(&test, "alice", Request::GetReferralStats).await {
        Ok(ReplyBody::ReferralStats(stats)) => {
            assert_eq!(stats.referees_by_level, vec![1]);
            assert_eq!(stats.earned, 100);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_first_spin_activates_the_referee_and_pays_three_levels_up() {
    let test = hub_with(referral_config()).await;
    // root ← a ← b ← c ← d
    let chain = ["root", "a", "b", "c", "d"];
    for pair in chain.windows(2) {
        let code = code_of(&test, pair[0]).await;
        assert_eq!(claim(&test, pair[1], &code).await, Ok(pair[0].to_owned()));
    }
    // Signup rewards: 100 to each referrer; welcome bonuses: 50 to each referee.
    for (player, expected) in [("root", 100), ("a", 150), ("b", 150), ("c", 150), ("d", 50)] {
        wallet_reaches(&test, player, expected).await;
    }
    let joined = match ask(
        &test,
        "d",
        Request::QuickJoin {
            kind: RoomKind::Wheel,
            variant: None,
        },
    )
    .await
    {
        Ok(ReplyBody::RoomJoined(joined)) => joined,
        other => panic!("not joined: {other:?}"),
    };
    let spun = ask(
        &test,
        "d",
        Request::Spin {
            room: joined.room,
            client_seed: "first-game".into(),
        },
    )
    .await;
    let prize = match spun {
        Ok(ReplyBody::Spun(outcome)) => outcome.prize,
        other => panic!("not spun: {other:?}"),
    };
    wallet_reaches(&test, "c", 150 + 100).await;
    wallet_reaches(&test, "b", 150 + 30).await;
    wallet_reaches(&test, "a", 150 + 10).await;
    wallet_reaches(&test, "d", 50 + prize).await;
    settles(&test).await;
    for (player, expected) in [
        ("root", 100),
        ("a", 160),
        ("b", 180),
        ("c", 250),
        ("d", 50 + prize),
    ] {
        assert_eq!(
            wallet(&test, player).await,
            expected,
            "{player}, once everything is delivered"
        );
    }
}

/// What the claims of a sequence did, checked against the rules.
fn check_forest(trees: &BTreeMap<String, TreeState>, sessions: &BTreeMap<String, SessionState>) {
    let referrers: BTreeMap<String, Option<String>> = sessions
        .iter()
        .map(|(player, state)| (player.clone(), state.link.referrer.clone()))
        .collect();
    for (player, state) in sessions {
        // Every claim ended, one way or the other: none is left blocking the player.
        assert_eq!(state.link.claiming, None, "{player}'s claim is stuck");
        // A player counted as a referrer (and so refused a claim of their own) has a
        // referee.
        if state.link.has_referees {
            let has_child = trees.values().any(|tree| {
                tree.nodes
                    .values()
                    .any(|node| node.parent.as_deref() == Some(player.as_str()))
            });
            assert!(has_child, "{player} counts as a referrer with no referee");
        }
    }
    let mut seen = BTreeMap::new();
    for (root, tree) in trees {
        for (player, node) in &tree.nodes {
            // A player is in one tree at most: trees never merged.
            if let Some(other) = seen.insert(player.clone(), root.clone()) {
                panic!("{player} is in the trees of {other} and {root}");
            }
            // The parent chain ends at the root, with no cycle.
            let chain = ancestors(tree, player);
            assert!(!chain.contains(player), "{player} is its own ancestor");
            assert_eq!(
                referrers.get(player).cloned().flatten(),
                node.parent.clone(),
                "{player}'s session and tree disagree on the referrer"
            );
        }
    }
    for (player, referrer) in &referrers {
        if referrer.is_some() {
            assert!(
                seen.contains_key(player),
                "{player} claimed but is in no tree"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_claims_merges_trees_or_makes_a_cycle(
        claims in prop::collection::vec((0usize..7, 0usize..7), 1..40),
        concurrent in any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let test = hub_with(referral_config()).await;
            let players: Vec<String> = (0..7).map(|n| format!("p{n}")).collect();
            let mut codes = Vec::new();
            for player in &players {
                codes.push(code_of(&test, player).await);
            }
            let attempts = claims.iter().map(|(who, whose)| {
                let test = &test;
                let (who, code) = (players[*who].clone(), codes[*whose].clone());
                async move { claim(test, &who, &code).await }
            });
            if concurrent {
                futures_util::future::join_all(attempts).await;
            } else {
                for attempt in attempts {
                    let _ = attempt.await;
                }
            }
            settles(&test).await;
            // What each session recorded, and what each tree holds.
            let mut sessions = BTreeMap::new();
            let mut roots = std::collections::BTreeSet::new();
            for player in &players {
                let (_, stored, _) =
                    Journal::<Durable<SessionEntity>>::inspect(&test.store, player)
                        .await
                        .expect("session");
                roots.extend(stored.state.link.root.clone());
                sessions.insert(player.clone(), stored.state);
            }
            let mut trees = BTreeMap::new();
            for root in roots {
                let (_, tree, _) = Journal::<Durable<TreeEntity>>::inspect(&test.store, &root)
                    .await
                    .expect("tree");
                trees.insert(root, tree.state);
            }
            check_forest(&trees, &sessions);
        });
    }
}

#[tokio::test]
async fn a_quiz_game_played_to_its_end_activates_the_referee() {
    let mut config = referral_config();
    config.quiz.min_players = 2;
    config.quiz.questions_per_game = 1;
    config.quiz.question_ms = 1_000;
    config.quiz.reveal_ms = 100;
    config.quiz.podium_ms = 100;
    config.quiz.prizes = vec![];
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    let code = code_of(&test, "root").await;
    assert_eq!(claim(&test, "a", &code).await, Ok("root".into()));
    wallet_reaches(&test, "root", 100).await;
    for player in ["a", "x"] {
        let joined = ask(
            &test,
            player,
            Request::QuickJoin {
                kind: RoomKind::Quiz,
                variant: None,
            },
        )
        .await;
        assert!(matches!(joined, Ok(ReplyBody::QuizJoined(_))), "{joined:?}");
    }
    // Nobody answers; the question times out, the reveal and the podium pass.
    let paid = tokio::time::timeout(WAIT, async {
        loop {
            test.clock.advance(100);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if wallet(&test, "root").await >= 200 {
                return;
            }
        }
    })
    .await;
    assert!(
        paid.is_ok(),
        "the referrer was paid for the referee's first game"
    );
    wallet_reaches(&test, "root", 200).await;
}

#[tokio::test]
async fn a_held_reward_reaches_the_wallet_when_its_hold_passes() {
    let mut config = referral_config();
    config.referral.hold_ms = 10_000;
    config.referral.welcome_bonus = 0;
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    let code = code_of(&test, "alice").await;
    assert_eq!(claim(&test, "bob", &code).await, Ok("alice".into()));
    match ask(&test, "alice", Request::GetReferralStats).await {
        Ok(ReplyBody::ReferralStats(stats)) => {
            assert_eq!((stats.pending, stats.earned), (100, 0));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(wallet(&test, "alice").await, 0, "held, not paid");
    test.clock.advance(10_000);
    wallet_reaches(&test, "alice", 100).await;
    match ask(&test, "alice", Request::GetReferralStats).await {
        Ok(ReplyBody::ReferralStats(stats)) => {
            assert_eq!((stats.pending, stats.earned), (0, 100));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_claim_interrupted_after_its_referrer_accepted_is_finished_at_start_unasked() {
    let config = referral_config();
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = std::sync::Arc::new(common::ManualClock::new(START_MS));
    let store =
        playtree_actors::Store::open(dir.path(), &config.store, clock.clone()).expect("store");
    // As a crash left them: bob claimed alice's code and alice took his letter, but her
    // letter to her tree was never delivered.
    let (bob_address, alice_address) = (
        Address::Session("bob".into()),
        Address::Session("alice".into()),
    );
    let accept = Post::default().letter(
        bob_address.clone(),
        alice_address.clone(),
        START_MS,
        Body::AcceptReferee {
            referee: "bob".into(),
            suspect: false,
        },
    );
    let mut bob: Journal<Durable<SessionEntity>> = Journal::open(store.clone(), "bob", 100)
        .await
        .expect("open");
    bob.persist(vec![Record {
        events: vec![
            SessionEvent::FirstSeen { at_ms: START_MS },
            SessionEvent::ClaimStarted {
                referrer: "alice".into(),
                suspect: false,
                request_key: None,
            },
        ],
        post: vec![
            PostEvent::Sent(accept.clone()),
            PostEvent::Delivered {
                seqs: vec![accept.seq],
            },
        ],
    }])
    .await
    .expect("persist");
    let attach = Post::default().letter(
        alice_address,
        Address::Tree("alice".into()),
        START_MS,
        Body::Attach {
            referee: "bob".into(),
            suspect: false,
        },
    );
    let mut alice: Journal<Durable<SessionEntity>> = Journal::open(store.clone(), "alice", 100)
        .await
        .expect("open");
    alice
        .persist(vec![Record {
            events: vec![SessionEvent::RefereeAccepting {
                referee: "bob".into(),
            }],
            post: vec![
                PostEvent::Received {
                    from: bob_address,
                    seq: accept.seq,
                    previous: accept.previous,
                    at_ms: START_MS,
                },
                PostEvent::Sent(attach),
            ],
        }])
        .await
        .expect("persist");
    drop((alice, bob));

    let test = common::hub_on(config, store, clock, dir).await;
    // Nobody asks: the session that owes a letter is activated at start and sends it.
    wallet_reaches(&test, "alice", 100).await;
    wallet_reaches(&test, "bob", 50).await;
    let (_, bob, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "bob")
        .await
        .expect("bob");
    assert_eq!(bob.state.link.referrer.as_deref(), Some("alice"));
    assert_eq!(bob.state.link.claiming, None);
    let (_, alice, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "alice")
        .await
        .expect("alice");
    assert!(alice.state.link.has_referees);
    assert!(alice.state.link.accepting.is_empty());
}

#[tokio::test]
async fn two_players_claiming_each_other_at_once_are_never_locked_out() {
    let test = hub_with(referral_config()).await;
    let alice = code_of(&test, "alice").await;
    let bob = code_of(&test, "bob").await;
    let (by_bob, by_alice) =
        futures_util::join!(claim(&test, "bob", &alice), claim(&test, "alice", &bob));
    // At most one wins; a loser was told to retry (4106) or that it now has a referee.
    let accepted = [&by_bob, &by_alice].iter().filter(|r| r.is_ok()).count();
    assert!(accepted <= 1, "{by_bob:?} {by_alice:?}");
    for (player, result, other_code) in [("bob", &by_bob, &alice), ("alice", &by_alice, &bob)] {
        if result.is_err() {
            // Retrying works unless the other became this player's referee.
            let again = claim(&test, player, other_code).await;
            assert!(
                again.is_ok() || again == Err(ErrorCode::AlreadyReferrer),
                "{player} retried: {again:?}"
            );
        }
    }
    let (_, alice_state, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "alice")
        .await
        .expect("alice");
    let (_, bob_state, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "bob")
        .await
        .expect("bob");
    assert!(
        alice_state.state.link.referrer.is_some() ^ bob_state.state.link.referrer.is_some(),
        "exactly one of them ends up the other's referee"
    );
}

#[tokio::test]
async fn the_leaderboard_ranks_referrers_by_referees_and_the_first_to_reach_a_count() {
    let test = hub_with(referral_config()).await;
    let mut codes = BTreeMap::new();
    for player in ["alice", "bob", "carol"] {
        codes.insert(player, code_of(&test, player).await);
    }
    for (referee, referrer) in [
        ("c1", "carol"),
        ("a1", "alice"),
        ("b1", "bob"),
        ("a2", "alice"),
    ] {
        test.clock.advance(10);
        assert_eq!(
            claim(&test, referee, &codes[referrer]).await,
            Ok(referrer.to_owned())
        );
    }
    let test = &test;
    let board = |limit: u32| async move {
        match ask(test, "anyone", Request::GetReferralLeaderboard { limit }).await {
            Ok(ReplyBody::ReferralLeaderboard { entries }) => entries
                .into_iter()
                .map(|entry| (entry.player, entry.referees))
                .collect::<Vec<_>>(),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        board(10).await,
        vec![
            ("alice".to_owned(), 2),
            ("carol".to_owned(), 1),
            ("bob".to_owned(), 1)
        ],
        "carol reached 1 before bob"
    );
    assert_eq!(board(1).await, vec![("alice".to_owned(), 2)]);
}
