//! A request sent again with its idempotency key takes effect once, on any connection of
//! the player, and is answered with the first result.

mod common;

use common::{TEST_WHEEL, TestServer, next_event};
use playtree_protocol::{Event, ReplyBody, Request};

#[tokio::test]
async fn a_keyed_request_sent_again_takes_effect_once() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (alice, _alice_events) = server.connect("alice").await;
    let (bob, mut bob_events) = server.connect("bob").await;
    let room = alice
        .quick_join_wheel(Some("test"))
        .await
        .expect("join")
        .room;
    bob.quick_join_wheel(Some("test")).await.expect("join");

    // A spin, sent twice with one key (the second time on another connection): one
    // spin, one prize, the same answer.
    let spin = Request::Spin {
        room,
        client_seed: "once".into(),
    };
    let first = alice.request_keyed(spin.clone(), 41).await.expect("spins");
    let (again_client, _again_events) = server.connect("alice").await;
    let again = again_client
        .request_keyed(spin.clone(), 41)
        .await
        .expect("answered");
    assert_eq!(first, again, "the first result, not a second spin");
    let ReplyBody::Spun(outcome) = first else {
        panic!("not spun: {first:?}")
    };
    assert_eq!(alice.wallet().await.expect("wallet"), outcome.prize);
    // Another key is another spin.
    let ReplyBody::Spun(second) = alice.request_keyed(spin, 42).await.expect("spins") else {
        panic!("not spun")
    };
    assert_eq!(second.nonce, outcome.nonce + 1);

    // A chat line sent twice with one key reaches bob once; a keyless one after it
    // shows he was not sent a second copy in between.
    let chat = |text: &str| Request::Chat {
        room,
        text: text.into(),
    };
    alice.request_keyed(chat("hello"), 7).await.expect("sent");
    alice.request_keyed(chat("hello"), 7).await.expect("sent");
    alice.chat(room, "bye").await.expect("sent");
    let mut lines = Vec::new();
    while lines.last().map(String::as_str) != Some("bye") {
        lines.push(
            next_event(&mut bob_events, |envelope| match &envelope.event {
                Event::Chat { text, .. } => Some(text.clone()),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(lines, vec!["hello".to_owned(), "bye".to_owned()]);

    // Keys are each player's own: bob's key 7 is a request of its own.
    let bob_wallet = bob
        .request_keyed(Request::GetWallet, 7)
        .await
        .expect("bob's own key 7");
    assert!(
        matches!(bob_wallet, ReplyBody::Wallet { balance: 0 }),
        "{bob_wallet:?}"
    );
    // A key given to another request is refused, and nothing is carried out.
    let reused = alice
        .request_keyed(Request::GetWallet, 41)
        .await
        .expect_err("key 41 was a spin");
    assert_eq!(reused.code(), Some(playtree_protocol::ErrorCode::KeyReused));
}

#[tokio::test]
async fn a_keyed_spin_retried_is_recorded_and_verified_once() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (alice, _events) = server.connect("alice").await;
    let room = alice
        .quick_join_wheel(Some("test"))
        .await
        .expect("join")
        .room;
    let first = alice.spin_keyed(room, "seed", 1).await.expect("spins");
    let again = alice.spin_keyed(room, "seed", 1).await.expect("answered");
    assert_eq!(first, again);
    let reveal = alice.rotate_seed("test").await.expect("rotate");
    let verdicts = alice.verify_spins(&reveal);
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert!(verdicts[0].1.is_ok(), "{verdicts:?}");
}
