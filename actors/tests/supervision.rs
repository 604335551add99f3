//! Supervision: a failed session restarts from its persisted state; past the restart
//! intensity it is stopped and answers "unavailable"; passivation loses no message.

mod common;

use common::{config, eventually, hub_with};
use playtree_actors::HubError;
use playtree_actors::grant::Grant;
use playtree_actors::session::SessionMsg;
use playtree_protocol::{GrantId, ReplyBody, Request};

fn credit(seq: u64, amount: u64) -> SessionMsg {
    SessionMsg::Credit {
        grant: Grant {
            id: GrantId {
                source: "room:5".into(),
                seq,
            },
            previous: seq - 1,
            beneficiary: "alice".into(),
            amount,
            reason: "test".into(),
            settles: None,
        },
        source: playtree_actors::grant::GrantSource::Room(5),
    }
}

async fn balance(hub: &playtree_actors::Hub) -> Result<u64, HubError> {
    let reply = hub
        .call_session("alice", |reply| SessionMsg::Request {
            request: Request::GetWallet,
            reply,
        })
        .await?;
    match reply {
        Ok(ReplyBody::Wallet { balance }) => Ok(balance),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_failed_session_restarts_from_its_persisted_state_within_the_intensity() {
    let mut config = config();
    config.actors.restarts_max = 2;
    config.actors.restart_window_ms = 60_000;
    let test = hub_with(config).await;
    let hub = &test.hub;
    hub.cast_session("alice", credit(1, 30))
        .await
        .expect("credit");
    assert_eq!(balance(hub).await.expect("balance"), 30);

    for restart in 1..=2 {
        let before = hub.active_session("alice").expect("active");
        before.cast(SessionMsg::InjectFault).expect("inject");
        // The supervisor reactivates it eagerly; wait for the new instance.
        eventually("a restarted session", || {
            hub.active_session("alice")
                .is_some_and(|now| now.get_id() != before.get_id())
        })
        .await;
        assert_eq!(
            balance(hub).await.expect("balance"),
            30,
            "restart {restart} recovers the wallet"
        );
    }

    // A third failure within the window exceeds the intensity: the entity stays down.
    let before = hub.active_session("alice").expect("active");
    before.cast(SessionMsg::InjectFault).expect("inject");
    // Calls race the supervisor's verdict until it lands; then the entity stays down.
    tokio::time::timeout(common::WAIT, async {
        while !matches!(balance(hub).await, Err(HubError::Unavailable { .. })) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the session is given up");
    assert!(matches!(
        balance(hub).await,
        Err(HubError::Unavailable { .. })
    ));

    // After the window, it can be activated again, with its state intact.
    test.clock.advance(60_001);
    assert_eq!(balance(hub).await.expect("balance after the window"), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passivation_loses_no_message() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    let test = hub_with(config).await;
    let hub = &test.hub;
    let mut expected = 0;
    let mut passivations = 0;
    for seq in 1..=40u64 {
        hub.cast_session("alice", credit(seq, seq))
            .await
            .expect("credit");
        expected += seq;
        if seq % 10 == 0 {
            // Let the session go idle and passivate, while more credits arrive.
            let before = hub.active_session("alice").map(|s| s.get_id());
            test.clock.advance(1_000);
            eventually("passivation", || {
                hub.active_session("alice").map(|s| s.get_id()) != before
            })
            .await;
            passivations += 1;
        }
    }
    assert_eq!(passivations, 4);
    assert_eq!(balance(hub).await.expect("balance"), expected);
}

#[tokio::test(flavor = "current_thread")]
async fn one_flush_serves_many_writers() {
    let test = hub_with(config()).await;
    let store = &test.store;
    let before = store.flush_count();
    let tickets: Vec<_> = (0..50u64)
        .map(|n| {
            store
                .submit(vec![playtree_actors::store::WriteOp::Put(
                    n.to_be_bytes().to_vec(),
                    vec![1],
                )])
                .expect("queued")
        })
        .collect();
    for ticket in tickets {
        ticket.durable().await.expect("durable");
    }
    // The commit thread may wake for the first request before the others are queued;
    // every later one shares the next flush.
    assert!(store.flush_count() - before <= 2);
}
