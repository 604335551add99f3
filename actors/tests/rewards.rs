//! Exactly-once rewards: a credit delivered twice is taken once, also after the session
//! was stopped and reactivated from the store; spins are paid into wallets and the sums
//! of coins sent and taken agree.

mod common;

use common::{ask, config, credit, deliver, eventually, eventually_async, hub_with, wallet};
use playtree_actors::room::RoomEntity;
use playtree_actors::runtime::Durable;
use playtree_actors::store::Journal;
use playtree_protocol::{ReplyBody, Request, RoomKind};

#[tokio::test]
async fn a_credit_delivered_twice_is_taken_once_even_across_reactivation() {
    let test = hub_with(config()).await;
    deliver(&test, credit(77, "alice", 1, 40));
    deliver(&test, credit(77, "alice", 1, 40));
    deliver(&test, credit(77, "alice", 2, 2));
    eventually_async("both are taken", || async {
        wallet(&test, "alice").await == 42
    })
    .await;

    // Stop the session (it snapshots), then deliver again to a fresh activation.
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
    deliver(&test, credit(77, "alice", 1, 40));
    deliver(&test, credit(77, "alice", 2, 2));
    // A later credit, after the two duplicates: once it is in, so would they be.
    deliver(&test, credit(77, "alice", 3, 100));
    eventually_async("the new credit is taken", || async {
        wallet(&test, "alice").await == 142
    })
    .await;
}

#[tokio::test]
async fn spins_are_paid_into_wallets_and_coins_sent_equal_coins_taken() {
    let test = hub_with(config()).await;
    let mut total_prizes = 0;
    let mut jackpots_paid = 0u64;
    let mut rooms = std::collections::BTreeSet::new();
    let mut room = None;
    for player in ["p1", "p2", "p3"] {
        let joined = ask(
            &test,
            player,
            Request::QuickJoin {
                kind: RoomKind::Wheel,
                variant: None,
            },
        )
        .await
        .expect("joins");
        let ReplyBody::RoomJoined(joined) = joined else {
            panic!("not joined")
        };
        room = Some(joined.room);
        rooms.insert(joined.room);
        for nonce in 0..6 {
            let reply = ask(
                &test,
                player,
                Request::Spin {
                    room: joined.room,
                    client_seed: format!("seed{nonce}"),
                },
            )
            .await
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
    let (_, stored, _) = Journal::<Durable<RoomEntity>>::inspect(&test.store, &room.to_string())
        .await
        .expect("room journal");
    assert_eq!(rooms.len(), 1, "the three players share one room");
    assert_eq!(stored.post.coins_sent, total_prizes);
    assert!(
        jackpots_paid <= 2,
        "{jackpots_paid} jackpots paid from a stock of 2"
    );
    assert_eq!(
        stored.state.inventory.get(&1).copied(),
        Some(2 - jackpots_paid),
        "the stock is what was left after the jackpots paid"
    );
}
