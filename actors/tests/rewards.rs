//! Exactly-once rewards: a grant delivered twice is credited once, also after the session
//! was stopped and reactivated from the store; spins settle into wallets and the sums of
//! grants issued and credited agree.

mod common;

use common::{TestHub, config, eventually, hub_with};
use playtree_actors::grant::Grant;
use playtree_actors::session::SessionMsg;
use playtree_protocol::{GrantId, ReplyBody, Request, RoomKind};

async fn wallet(test: &TestHub, player: &str) -> u64 {
    let reply = test
        .hub
        .call_session(player, |reply| SessionMsg::Request {
            request: Request::GetWallet,
            reply,
        })
        .await
        .expect("session answers");
    match reply {
        Ok(ReplyBody::Wallet { balance }) => balance,
        other => panic!("unexpected {other:?}"),
    }
}

fn grant(seq: u64, amount: u64) -> Grant {
    Grant {
        id: GrantId {
            source: "room:77".into(),
            seq,
        },
        previous: seq - 1,
        beneficiary: "alice".into(),
        amount,
        reason: "test".into(),
        settles: None,
    }
}

#[tokio::test]
async fn a_grant_delivered_twice_is_credited_once_even_across_reactivation() {
    let test = hub_with(config()).await;
    let credit = |grant: Grant| SessionMsg::Credit {
        grant,
        source: playtree_actors::grant::GrantSource::Room(77),
    };
    test.hub
        .cast_session("alice", credit(grant(1, 40)))
        .await
        .expect("deliver");
    test.hub
        .cast_session("alice", credit(grant(1, 40)))
        .await
        .expect("deliver again");
    test.hub
        .cast_session("alice", credit(grant(2, 2)))
        .await
        .expect("deliver another");
    assert_eq!(wallet(&test, "alice").await, 42);

    // Stop the session (it snapshots), then redeliver to a fresh activation.
    let session = test.hub.active_session("alice").expect("active");
    session
        .drain_and_wait(Some(common::WAIT))
        .await
        .expect("stops");
    eventually("the stopped session leaves the directory", || {
        test.hub
            .active_session("alice")
            .is_none_or(|s| s.get_id() != session.get_id())
    })
    .await;
    test.hub
        .cast_session("alice", credit(grant(1, 40)))
        .await
        .expect("redeliver");
    test.hub
        .cast_session("alice", credit(grant(2, 2)))
        .await
        .expect("redeliver");
    assert_eq!(wallet(&test, "alice").await, 42);
}

#[tokio::test]
async fn spins_settle_into_wallets_and_grants_equal_credits() {
    let test = hub_with(config()).await;
    let mut total_prizes = 0;
    let mut jackpots_paid = 0u64;
    let mut rooms = std::collections::BTreeSet::new();
    let mut room = None;
    for player in ["p1", "p2", "p3"] {
        let joined = test
            .hub
            .call_session(player, |reply| SessionMsg::Request {
                request: Request::QuickJoin {
                    kind: RoomKind::Wheel,
                    variant: None,
                },
                reply,
            })
            .await
            .expect("answers")
            .expect("joins");
        let ReplyBody::RoomJoined(joined) = joined else {
            panic!("not joined")
        };
        room = Some(joined.room);
        rooms.insert(joined.room);
        for nonce in 0..6 {
            let reply = test
                .hub
                .call_session(player, |reply| SessionMsg::Request {
                    request: Request::Spin {
                        room: joined.room,
                        client_seed: format!("seed{nonce}"),
                    },
                    reply,
                })
                .await
                .expect("answers")
                .expect("spins");
            let ReplyBody::Spun(outcome) = reply else {
                panic!("not spun")
            };
            total_prizes += outcome.prize;
            // Segment 1 is the jackpot, two in stock; past them it lands but pays 0.
            if outcome.segment == 1 && outcome.prize > 0 {
                jackpots_paid += 1;
            }
        }
    }
    let mut credited = 0;
    for player in ["p1", "p2", "p3"] {
        credited += wallet(&test, player).await;
    }
    assert_eq!(credited, total_prizes);
    // The jackpot's inventory of 2 bounds what the room paid for it.
    let room = room.expect("a room");
    let (_, room_state, _) =
        playtree_actors::store::Journal::<playtree_actors::room::RoomEntity>::inspect(
            &test.store,
            &room.to_string(),
        )
        .await
        .expect("room journal");
    assert_eq!(rooms.len(), 1, "the three players share one room");
    assert_eq!(room_state.granted_total, total_prizes);
    assert!(
        jackpots_paid <= 2,
        "{jackpots_paid} jackpots paid from a stock of 2"
    );
    assert_eq!(
        room_state.inventory.get(&1).copied(),
        Some(2 - jackpots_paid),
        "the stock is what was left after the jackpots paid"
    );
}
