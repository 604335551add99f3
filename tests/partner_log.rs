//! The partner event log over the wire: a partner subscribes, acknowledges, and after
//! the server is SIGKILLed and restarted resumes right after its ack with every entry
//! once and in order; players may not subscribe.

mod common;

use common::{WAIT, base_overrides, mint_as, now_s, start_binary};
use playtree_client::{Client, ClientError, LogEntries};
use playtree_protocol::{ErrorCode, LogEntry, LogEvent, RewardState, Role};

async fn next_entry(log: &mut LogEntries) -> LogEntry {
    tokio::time::timeout(WAIT, log.next())
        .await
        .expect("an entry in time")
        .expect("the subscription is open")
}

fn describe(entry: &LogEntry) -> String {
    match &entry.event {
        LogEvent::ReferralClaimed {
            referrer, referee, ..
        } => format!("claimed {referee}<-{referrer}"),
        LogEvent::Reward {
            beneficiary,
            reward,
        } => format!("reward {beneficiary} {} {:?}", reward.amount, reward.state),
        other => format!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partner_log_resumes_after_the_last_ack_across_a_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_path = dir.path().join("playtree.toml");
    let extra = "[referral]\nsignup_rewards = [100]\nwelcome_bonus = 0\n";
    std::fs::write(
        &config_path,
        base_overrides(&dir.path().join("data"), extra),
    )
    .expect("config");
    let config = playtree::ServerConfig::load(Some(&config_path)).expect("config loads");
    let token = |player: &str, role: Role| mint_as(&config, player, role, now_s(), 600);
    let connect = |url: String, token: String| async move {
        let (client, _events) = Client::connect(&url, &token).await.expect("connects");
        client
    };

    let first = start_binary(&config_path);
    let url = format!("ws://{}", first.ws);
    let partner = connect(url.clone(), token("shop", Role::Partner)).await;
    let alice = connect(url.clone(), token("alice", Role::Player)).await;
    let refused = alice.subscribe(None).await;
    assert!(
        matches!(&refused, Err(ClientError::Server(error)) if error.code == ErrorCode::Forbidden),
        "{refused:?}"
    );
    let (from, head, mut log) = partner.subscribe(None).await.expect("subscribed");
    assert_eq!(from, head, "an empty log starts at its head");

    let code = alice.referral_code().await.expect("code");
    let bob = connect(url.clone(), token("bob", Role::Player)).await;
    bob.claim_referral(&code).await.expect("bob claims");
    let claimed = next_entry(&mut log).await;
    let rewarded = next_entry(&mut log).await;
    assert_eq!(
        (describe(&claimed), describe(&rewarded)),
        (
            "claimed bob<-alice".into(),
            "reward alice 100 Credited".into()
        )
    );
    assert_eq!((claimed.offset, rewarded.offset), (from, from + 1));
    partner.ack(claimed.offset).await.expect("acked");

    let carol = connect(url.clone(), token("carol", Role::Player)).await;
    carol.claim_referral(&code).await.expect("carol claims");
    drop(first); // SIGKILL

    let second = start_binary(&config_path);
    let url = format!("ws://{}", second.ws);
    let partner = connect(url, token("shop", Role::Partner)).await;
    let (resumed_from, _, mut log) = partner.subscribe(None).await.expect("subscribed");
    assert_eq!(resumed_from, claimed.offset + 1, "right after the last ack");
    let mut seen = Vec::new();
    for expected_offset in resumed_from..resumed_from + 3 {
        let entry = next_entry(&mut log).await;
        assert_eq!(
            entry.offset, expected_offset,
            "in order, none missing or repeated"
        );
        seen.push(describe(&entry));
    }
    assert_eq!(
        seen,
        vec![
            "reward alice 100 Credited".to_owned(),
            "claimed carol<-alice".to_owned(),
            format!("reward alice 100 {:?}", RewardState::Credited),
        ]
    );
    // New entries continue the offsets of the old process.
    let dave = connect(format!("ws://{}", second.ws), token("dave", Role::Player)).await;
    dave.claim_referral(&code).await.expect("dave claims");
    let next = next_entry(&mut log).await;
    assert_eq!(
        (next.offset, describe(&next)),
        (resumed_from + 3, "claimed dave<-alice".to_owned())
    );
    // An offset the log does not hold is refused.
    let refused = partner.subscribe(Some(resumed_from + 1000)).await;
    assert!(
        matches!(&refused, Err(ClientError::Server(error)) if error.code == ErrorCode::OffsetNotRetained),
        "{refused:?}"
    );
}

#[tokio::test]
async fn entries_past_their_retention_are_deleted_but_the_newest_stays() {
    let (server, clock) = common::TestServer::start_with_clock(
        "[referral]\nsignup_rewards = [100]\nwelcome_bonus = 0\nlog_retention_ms = 60000\n",
    )
    .await;
    let (alice, _) = server.connect("alice").await;
    let code = alice.referral_code().await.expect("code");
    for player in ["bob", "carol"] {
        let (client, _) = server.connect(player).await;
        client.claim_referral(&code).await.expect("claims");
    }
    let hub = &server.running().hub;
    let head = *hub.store.log_head().borrow();
    assert_eq!(
        playtree::partner::trim_log(hub).await.expect("trim"),
        0,
        "nothing is old yet"
    );
    clock.advance(60_001);
    let deleted = playtree::partner::trim_log(hub).await.expect("trim");
    let left = hub.store.log_entries(0, 100).await.expect("read");
    assert_eq!(deleted + left.len(), 4, "two entries per claim");
    assert_eq!(left.len(), 1, "the newest stays");
    assert_eq!(left[0].0, head - 1);
    let partner = server.connect_partner("shop").await;
    let refused = partner.subscribe(Some(head - 4)).await;
    assert!(
        matches!(&refused, Err(ClientError::Server(error)) if error.code == ErrorCode::OffsetNotRetained),
        "{refused:?}"
    );
}
