//! Referrals over the wire, through the client crate: a code shared and claimed, the
//! referrer online hears of the friend and of the reward as they happen, both wallets
//! are credited, and the stats add up.

mod common;

use common::{TestServer, next_event};
use playtree_client::ClientError;
use playtree_protocol::{ErrorCode, Event, RewardState, RewardTrigger};

#[tokio::test]
async fn a_referrer_online_hears_the_friend_join_and_the_reward_live() {
    let server = TestServer::start(
        "[referral]\nsignup_rewards = [100]\nwelcome_bonus = 50\nactivation_rewards = [100, 30, 10]\n",
    )
    .await;
    let (alice, mut alice_events) = server.connect("alice").await;
    let code = alice.referral_code().await.expect("code");
    assert_eq!(
        alice.referral_code().await.expect("code"),
        code,
        "always the same"
    );

    let (bob, mut bob_events) = server.connect("bob").await;
    assert_eq!(bob.claim_referral(&code).await.expect("claimed"), "alice");

    // The news and the credit travel separately: in any order.
    let (mut friend, mut reward, mut credited) = (None, None, None);
    while friend.is_none() || reward.is_none() || credited.is_none() {
        next_event(&mut alice_events, |envelope| {
            match &envelope.event {
                Event::FriendJoined { friend: who, level } => {
                    friend = Some((who.clone(), *level));
                }
                Event::ReferralReward(news) => reward = Some(news.clone()),
                Event::WalletCredited {
                    amount, balance, ..
                } => credited = Some((*amount, *balance)),
                _ => return None,
            }
            Some(())
        })
        .await;
    }
    assert_eq!(friend, Some(("bob".to_owned(), 1)));
    let reward = reward.expect("reward news");
    assert_eq!(
        (
            reward.trigger,
            reward.state,
            reward.amount,
            reward.friend.as_str()
        ),
        (RewardTrigger::Signup, RewardState::Credited, 100, "bob")
    );
    assert_eq!(credited, Some((100, 100)));
    let welcome = next_event(&mut bob_events, |envelope| match &envelope.event {
        Event::WalletCredited { amount, .. } => Some(*amount),
        _ => None,
    })
    .await;
    assert_eq!(welcome, 50);

    let stats = alice.referral_stats().await.expect("stats");
    assert_eq!(stats.referees_by_level, vec![1]);
    assert_eq!(stats.earned, 100);
    assert_eq!(
        bob.referral_stats()
            .await
            .expect("stats")
            .referrer
            .as_deref(),
        Some("alice")
    );

    // The rules reach the client as typed errors.
    let refused = alice
        .claim_referral(&bob.referral_code().await.expect("code"))
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Server(error)) if error.code == ErrorCode::AlreadyReferrer),
        "{refused:?}"
    );
}

#[tokio::test]
async fn partners_report_conversions_once_and_decide_flagged_rewards_players_may_not() {
    let server = TestServer::start(
        "[referral]\nsignup_rewards = [100]\nwelcome_bonus = 0\nclaims_per_referrer_per_hour = 1\n\n[referral.conversion_rewards]\npurchase = [50]\n",
    )
    .await;
    let (alice, mut alice_events) = server.connect("alice").await;
    let code = alice.referral_code().await.expect("code");
    let (bob, _) = server.connect("bob").await;
    bob.claim_referral(&code).await.expect("bob claims");
    // Carol's is alice's second claim within the hour: accepted, its reward flagged.
    let (carol, _) = server.connect("carol").await;
    carol.claim_referral(&code).await.expect("carol claims");
    let flagged = next_event(&mut alice_events, |envelope| match &envelope.event {
        Event::ReferralReward(reward) if reward.state == RewardState::Flagged => {
            Some(reward.clone())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        (flagged.tree.as_str(), flagged.friend.as_str()),
        ("alice", "carol")
    );

    // A player may not do what partners do.
    let forbidden = |result: Result<_, ClientError>| matches!(result, Err(ClientError::Server(error)) if error.code == ErrorCode::Forbidden);
    assert!(forbidden(
        bob.report_conversion("bob", "purchase", 10, "k")
            .await
            .map(drop)
    ));
    assert!(forbidden(
        bob.player_referral_stats("alice").await.map(drop)
    ));
    assert!(forbidden(
        bob.approve_reward("alice", flagged.reward).await.map(drop)
    ));
    assert!(forbidden(
        bob.void_reward("alice", flagged.reward).await.map(drop)
    ));

    let partner = server.connect_partner("shop").await;
    assert_eq!(
        partner
            .report_conversion("bob", "purchase", 1999, "order-1")
            .await
            .expect("reported"),
        1
    );
    assert_eq!(
        partner
            .report_conversion("bob", "purchase", 1999, "order-1")
            .await
            .expect("again"),
        1,
        "the same key: the first result, nothing more paid"
    );
    // A mistyped player is refused by name, not given a session of their own.
    let unknown = |result: Result<_, ClientError>| matches!(result, Err(ClientError::Server(error)) if error.code == ErrorCode::UnknownPlayer);
    assert!(unknown(
        partner
            .report_conversion("bobb", "purchase", 1999, "order-2")
            .await
            .map(drop)
    ));
    assert!(unknown(
        partner.player_referral_stats("nobody").await.map(drop)
    ));
    assert_eq!(
        partner
            .approve_reward("alice", flagged.reward)
            .await
            .expect("approved"),
        RewardState::Credited
    );
    // 100 for bob's signup, 50 for his purchase, 100 for carol's approved signup.
    let mut balance = 0;
    while balance < 250 {
        balance = next_event(&mut alice_events, |envelope| match &envelope.event {
            Event::WalletCredited { balance, .. } => Some(*balance),
            _ => None,
        })
        .await;
    }
    assert_eq!(balance, 250);
    let stats = partner.player_referral_stats("alice").await.expect("stats");
    assert_eq!((stats.earned, stats.flagged), (250, 0));
}

#[tokio::test]
async fn claims_past_an_addresss_hourly_limit_are_accepted_with_their_rewards_flagged() {
    let server = TestServer::start(
        "[referral]\nsignup_rewards = [100]\nwelcome_bonus = 0\nclaims_per_address_per_hour = 1\n",
    )
    .await;
    let (alice, _) = server.connect("alice").await;
    let code = alice.referral_code().await.expect("code");
    // Every test client connects from 127.0.0.1: the second claim is past the limit.
    for player in ["bob", "carol"] {
        let (client, _) = server.connect(player).await;
        assert_eq!(
            client.claim_referral(&code).await.expect("accepted"),
            "alice"
        );
    }
    let stats = alice.referral_stats().await.expect("stats");
    assert_eq!(stats.referees_by_level, vec![2]);
    assert_eq!((stats.earned, stats.flagged), (100, 100));
}

#[tokio::test]
async fn behind_a_trusted_proxy_claims_are_counted_per_forwarded_address() {
    let server = TestServer::start_tuned(
        "[referral]\nsignup_rewards = [100]\nwelcome_bonus = 0\nclaims_per_address_per_hour = 1\n",
        playtree::Environment::default(),
        |config| config.server.trusted_proxies = vec!["127.0.0.0/8".to_owned()],
    )
    .await;
    let (alice, _) = server.connect("alice").await;
    let code = alice.referral_code().await.expect("code");
    // Every test client connects from 127.0.0.1, a trusted proxy here: each is counted
    // as the address its X-Forwarded-For names (the last one the proxy appended).
    for (player, forwarded_for) in [
        ("bob", "203.0.113.1"),
        // What carol put in front herself (bob's address) is not believed.
        ("carol", "203.0.113.1, 203.0.113.2"),
        ("dave", "203.0.113.1"),
    ] {
        let options = playtree_client::ClientOptions {
            headers: vec![("X-Forwarded-For".to_owned(), forwarded_for.to_owned())],
            ..playtree_client::ClientOptions::default()
        };
        let (client, _) = tokio::time::timeout(
            common::WAIT,
            playtree_client::Client::connect_with(&server.url(), &server.token(player), options),
        )
        .await
        .expect("connect in time")
        .expect("connects");
        assert_eq!(
            client.claim_referral(&code).await.expect("accepted"),
            "alice"
        );
    }
    let stats = alice.referral_stats().await.expect("stats");
    assert_eq!(stats.referees_by_level, vec![3]);
    assert_eq!(
        (stats.earned, stats.flagged),
        (200, 100),
        "bob and carol came from different addresses; dave from bob's again"
    );
}
