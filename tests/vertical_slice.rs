//! Connect, authenticate, spin a provably fair wheel, get rewarded, see it broadcast.

mod common;

use common::{TEST_WHEEL, TestServer, next_event};
use playtree_protocol::{ErrorCode, Event, StreamId};

#[tokio::test]
async fn a_spin_is_credited_broadcast_and_verifiable_after_rotation() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (alice, mut alice_events) = server.connect("alice").await;
    let (bob, mut bob_events) = server.connect("bob").await;
    assert_eq!(alice.welcome().player_id, "alice");

    let joined = alice
        .quick_join_wheel(Some("test"))
        .await
        .expect("alice joins");
    assert_eq!(joined.wheel.id, "test");
    assert_eq!(joined.fairness.next_nonce, 0);
    assert_ne!(joined.fairness.commitment, [0u8; 32]);
    let bob_joined = bob.quick_join_wheel(Some("test")).await.expect("bob joins");
    assert_eq!(
        bob_joined.room, joined.room,
        "quick join fills the open room"
    );

    let mut expected_balance = 0;
    for (index, seed) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let outcome = alice.spin(joined.room, seed).await.expect("spin");
        assert_eq!(outcome.nonce, index as u64);
        assert_eq!(outcome.commitment, joined.fairness.commitment);
        assert!(outcome.prize > 0, "every test segment pays");
        expected_balance += outcome.prize;
        assert_eq!(outcome.balance, expected_balance);
        assert_eq!(outcome.spins_left_today, 4 - (index as u32 + 1));

        // Bob, in the same room, sees Alice's spin on the room stream.
        let seen = next_event(&mut bob_events, |envelope| match &envelope.event {
            Event::Spin(spin) if spin.player == "alice" && spin.nonce == outcome.nonce => {
                Some((envelope.stream.clone(), spin.clone()))
            }
            _ => None,
        })
        .await;
        assert_eq!(seen.0, StreamId::Room(joined.room));
        assert_eq!(seen.1.segment, outcome.segment);
        assert_eq!(seen.1.prize, outcome.prize);

        // Alice's own stream carries the credit.
        let credited = next_event(&mut alice_events, |envelope| match &envelope.event {
            Event::WalletCredited {
                amount, balance, ..
            } => Some((*amount, *balance, envelope.stream.clone())),
            _ => None,
        })
        .await;
        assert_eq!(
            credited,
            (
                outcome.prize,
                expected_balance,
                StreamId::Player("alice".into())
            )
        );
    }
    assert_eq!(alice.wallet().await.expect("wallet"), expected_balance);
    assert_eq!(bob.wallet().await.expect("wallet"), 0);

    // Rotation reveals the seed that all three spins used; every spin verifies.
    let reveal = alice.rotate_seed("test").await.expect("rotate");
    assert_eq!(reveal.revealed_commitment, joined.fairness.commitment);
    assert_ne!(reveal.next_commitment, reveal.revealed_commitment);
    assert_eq!(reveal.next_nonce, 3);
    let verdicts = alice.verify_spins(&reveal);
    assert_eq!(verdicts.len(), 3);
    assert!(
        verdicts.iter().all(|(_, verdict)| verdict.is_ok()),
        "{verdicts:?}"
    );

    // A spin after rotation uses the new commitment and the next nonce.
    let after = alice.spin(joined.room, "delta").await.expect("spin");
    assert_eq!((after.nonce, after.commitment), (3, reveal.next_commitment));
}

#[tokio::test]
async fn the_daily_spin_limit_is_enforced_with_its_own_error() {
    // The server's clock stands still (whatever the real time, no spin of this test falls
    // on another UTC day) until the test moves it past midnight.
    let (server, clock) =
        TestServer::start_with_clock(&TEST_WHEEL.replace("spins_per_day = 4", "spins_per_day = 2"))
            .await;
    let (alice, _events) = server.connect("alice").await;
    let room = alice
        .quick_join_wheel(Some("test"))
        .await
        .expect("join")
        .room;
    let first = alice.spin(room, "one").await.expect("first spin");
    let second = alice.spin(room, "two").await.expect("second spin");
    assert_eq!(second.spins_left_today, 0);
    let refused = alice
        .spin(room, "three")
        .await
        .expect_err("third spin refused");
    assert_eq!(refused.code(), Some(ErrorCode::DailySpinLimit));
    // The refused spin paid nothing, used no nonce, and the connection carries on.
    assert_eq!(
        alice.wallet().await.expect("wallet"),
        first.prize + second.prize
    );
    let rejoined = alice.quick_join_wheel(Some("test")).await.expect("rejoin");
    assert_eq!(
        (rejoined.fairness.next_nonce, rejoined.fairness.spins_today),
        (2, 2)
    );
    // After 00:00 UTC the day's spins are back.
    let now_ms = {
        use playtree_actors::Clock;
        clock.now_ms()
    };
    const DAY_MS: u64 = 86_400_000;
    clock.advance(DAY_MS - now_ms % DAY_MS);
    // Her token, minted on the real clock, has expired on the server's: a fresh one.
    let tomorrow_s = (now_ms + DAY_MS - now_ms % DAY_MS) / 1000;
    let token = common::mint(&server.config, "alice", tomorrow_s, 600);
    let (alice, _events) = server
        .connect_with_token(&token)
        .await
        .expect("reconnects the next day");
    let next_day = alice.spin(room, "four").await.expect("a new day's spin");
    assert_eq!(next_day.spins_left_today, 1);
}

#[tokio::test]
async fn requests_with_bad_arguments_get_typed_errors() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (alice, _events) = server.connect("alice").await;
    let unknown = alice
        .quick_join_wheel(Some("no-such-wheel"))
        .await
        .expect_err("unknown wheel");
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownVariant));
    let not_member = alice.spin(999, "seed").await.expect_err("not in room");
    assert_eq!(not_member.code(), Some(ErrorCode::NotInRoom));
    let room = alice
        .quick_join_wheel(Some("test"))
        .await
        .expect("join")
        .room;
    let bad_seed = alice.spin(room, "has spaces").await.expect_err("bad seed");
    assert_eq!(bad_seed.code(), Some(ErrorCode::InvalidClientSeed));
    // None of these used a spin.
    assert_eq!(alice.spin(room, "fine").await.expect("spin").nonce, 0);
}

#[tokio::test]
async fn admin_endpoints_answer_and_metrics_move() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (alice, _events) = server.connect("alice").await;
    let room = alice
        .quick_join_wheel(Some("test"))
        .await
        .expect("join")
        .room;
    alice.spin(room, "metrics").await.expect("spin");
    let _ = server.connect_with_token("not-a-jwt").await;

    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "playtree_connections_total",
        "playtree_connections_open",
        "playtree_frames_in_total{type=\"spin\"}",
        "playtree_frames_out_total{type=\"reply\"}",
        "playtree_frames_out_total{type=\"welcome\"}",
        "playtree_spins_total{wheel=\"test\"}",
        "playtree_rewards_granted_total",
        "playtree_rewards_credited_total",
        "playtree_auth_failures_total{reason=\"malformed\"}",
        "playtree_store_flush_seconds",
    ] {
        assert!(body.contains(needle), "/metrics lacks {needle}:\n{body}");
    }
}

#[tokio::test]
async fn a_nonce_spun_elsewhere_is_reported_as_a_gap_by_the_verifier() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (phone, _phone_events) = server.connect("alice").await;
    let (tablet, _tablet_events) = server.connect("alice").await;
    let room = phone
        .quick_join_wheel(Some("test"))
        .await
        .expect("join")
        .room;
    tablet.quick_join_wheel(Some("test")).await.expect("join");
    phone.spin(room, "one").await.expect("spin 0");
    let elsewhere = tablet.spin(room, "two").await.expect("spin 1");
    phone.spin(room, "three").await.expect("spin 2");
    let reveal = phone.rotate_seed("test").await.expect("rotate");
    let verdicts = phone.verify_spins(&reveal);
    let failed: Vec<(u64, String)> = verdicts
        .iter()
        .filter_map(|(nonce, verdict)| verdict.as_ref().err().map(|e| (*nonce, e.to_string())))
        .collect();
    // The phone cannot tell the tablet's spin from a nonce the server skipped: it says so.
    assert_eq!(
        failed,
        vec![(
            elsewhere.nonce,
            format!(
                "nonce {} of this seed was used by no spin of this client",
                elsewhere.nonce
            )
        )]
    );
}

#[tokio::test]
async fn a_join_reply_says_where_on_the_room_stream_it_stands() {
    let server = TestServer::start(TEST_WHEEL).await;
    let (alice, mut alice_events) = server.connect("alice").await;
    let joined = alice.quick_join_wheel(Some("test")).await.expect("join");
    let (bob, _bob_events) = server.connect("bob").await;
    let bob_joined = bob.quick_join_wheel(Some("test")).await.expect("join");
    assert_eq!(bob_joined.room, joined.room);
    assert_eq!(
        bob_joined.members,
        vec!["alice".to_owned(), "bob".to_owned()]
    );
    // Bob's own MemberJoined is the event at the seq his reply names: alice, following
    // the room, gets it there.
    let seen = common::next_event(&mut alice_events, |envelope| match &envelope.event {
        playtree_protocol::Event::MemberJoined { player, .. } if player == "bob" => {
            Some((envelope.epoch, envelope.seq))
        }
        _ => None,
    })
    .await;
    assert_eq!(seen, (bob_joined.stream_epoch, bob_joined.stream_seq));
    assert!(bob_joined.stream_seq > joined.stream_seq);
}
