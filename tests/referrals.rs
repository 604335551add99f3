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
