//! The invariants of the entity foundation, each once broken by a heuristic: a letter
//! is taken exactly once and only by the entity it names, a failed commit acknowledges
//! nothing, a restarted entity tells its followers in a new epoch, a spin that can never
//! be paid does not wedge its player, a crash strands no letter, and a failed room
//! leaves matchmaking.

mod common;

use common::{
    TestHub, WAIT, ask, config, connect, credit, deliver, eventually, eventually_async, hub_on,
    hub_with, letter, wallet,
};
use playtree_actors::connections::{Outbound, OutboundReceiver};
use playtree_actors::mail::{Address, Body, Delivery, Msg, SpinDraw};
use playtree_actors::room::{RoomEntity, RoomEvent, RoomSetup};
use playtree_actors::runtime::{Durable, Record};
use playtree_actors::session::SessionEntity;
use playtree_actors::store::{Fault, FaultyBackend, Journal, MemoryBackend};
use playtree_actors::{Store, StoreError};
use playtree_protocol::codec::decode_server;
use playtree_protocol::{Event, ReplyBody, Request, RoomId, RoomKind, ServerFrame, StreamId};
use std::sync::Arc;

async fn request(test: &TestHub, player: &str, request: Request) -> ReplyBody {
    ask(test, player, request)
        .await
        .unwrap_or_else(|error| panic!("{player}: {error:?}"))
}

async fn quick_join_wheel(test: &TestHub, player: &str) -> playtree_protocol::RoomJoined {
    let request = Request::QuickJoin {
        kind: RoomKind::Wheel,
        variant: None,
    };
    match self::request(test, player, request).await {
        ReplyBody::RoomJoined(joined) => joined,
        other => panic!("not joined: {other:?}"),
    }
}

/// The quiz room `player` quick-joined.
async fn quick_join_quiz(test: &TestHub, player: &str) -> RoomId {
    let request = Request::QuickJoin {
        kind: RoomKind::Quiz,
        variant: None,
    };
    match self::request(test, player, request).await {
        ReplyBody::QuizJoined(joined) => joined.room,
        other => panic!("not joined: {other:?}"),
    }
}

/// The members of `room` as its journal has them (seats kept for the away included).
async fn seated(test: &TestHub, room: RoomId) -> std::collections::BTreeSet<String> {
    let (_, stored, _) = Journal::<Durable<RoomEntity>>::inspect(&test.store, &room.to_string())
        .await
        .expect("room");
    stored.state.members
}

fn spin(room: RoomId, nonce: u64) -> SpinDraw {
    SpinDraw {
        room,
        wheel: "classic".into(),
        nonce,
        client_seed: "seed".into(),
        commitment: [0; 32],
        // Segment 0 pays 10 and has no inventory cap.
        segment: 0,
        request_key: None,
    }
}

async fn open_wheel_room(test: &TestHub) -> RoomId {
    let room = test.store.generate_id().expect("id");
    let spec = playtree_actors::mail::RoomSpec {
        kind: RoomKind::Wheel,
        variant: "classic".into(),
        private_code: None,
    };
    test.hub.room(room, Some(spec)).await.expect("room opens");
    room
}

/// The first frame on `receiver` that carries an event, decoded.
async fn next_event(receiver: &mut OutboundReceiver) -> (StreamId, u64, u64, Event) {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = receiver.recv().await;
            if let Ok(ServerFrame::Event(envelope)) = decode_server(&frame.bytes, 1 << 20) {
                return (
                    envelope.stream,
                    envelope.epoch,
                    envelope.seq,
                    envelope.event,
                );
            }
        }
    })
    .await
    .expect("an event arrives")
}

/// What `room`'s post office holds: coins sent, owed and settled.
async fn room_coins(test: &TestHub, room: RoomId) -> (u64, u64, u64) {
    let (_, stored, _) = Journal::<Durable<RoomEntity>>::inspect(&test.store, &room.to_string())
        .await
        .expect("room");
    (
        stored.post.coins_sent,
        stored.post.coins_owed,
        stored.post.coins_settled,
    )
}

#[tokio::test]
async fn a_spin_letter_delivered_twice_is_paid_once_and_to_its_sender_only() {
    let test = hub_with(config()).await;
    let room = open_wheel_room(&test).await;
    let to = Address::Room(room);
    let settle_from = |player: &str, seq: u64| {
        letter(
            Address::Session(player.into()),
            to.clone(),
            seq,
            Body::Settle(spin(room, seq - 1)),
        )
    };
    // Bob's letter comes three times (redelivered: its acknowledgement was lost);
    // alice's, with the same wheel and nonce, once.
    for _ in 0..3 {
        deliver(&test, settle_from("bob", 1));
    }
    deliver(&test, settle_from("alice", 1));
    eventually_async("both are paid", || async {
        wallet(&test, "bob").await == 10 && wallet(&test, "alice").await == 10
    })
    .await;
    // Acknowledgements are journaled with the next commit, or after acks_flush_ms.
    eventually_async("the room owes nothing, and paid twice", || async {
        test.clock.advance(test.hub.config.mail.acks_flush_ms);
        room_coins(&test, room).await == (20, 0, 20)
    })
    .await;
}

#[tokio::test]
async fn a_letter_for_another_entity_is_neither_taken_nor_acknowledged() {
    let test = hub_with(config()).await;
    assert_eq!(wallet(&test, "bob").await, 0);
    let bob = test.hub.active_session("bob").expect("active");
    // A credit for alice, handed to bob's actor: the hub never does this (it delivers
    // by address), and the runtime refuses it if anything does.
    bob.cast(Msg::Letter(Delivery {
        letter: credit(77, "alice", 1, 40),
        attachment: None,
    }))
    .expect("sent");
    assert_eq!(wallet(&test, "bob").await, 0);
    let (_, stored, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "bob")
        .await
        .expect("bob");
    assert!(stored.post.marks.is_empty(), "bob recorded nothing");
}

#[tokio::test]
async fn an_old_letter_delivered_again_after_many_newer_ones_is_not_taken_again() {
    let test = hub_with(config()).await;
    // Credits of one room, each worth its seq, delivered out of order in pairs.
    const CREDITS: u64 = 4_200;
    let mut expected = 0;
    for pair in (1..=CREDITS).collect::<Vec<_>>().chunks(2) {
        for &seq in pair.iter().rev() {
            deliver(&test, credit(77, "alice", seq, seq));
            expected += seq;
        }
    }
    eventually_async("every credit is taken", || async {
        wallet(&test, "alice").await == expected
    })
    .await;
    for seq in [1, 2, 30, CREDITS - 1, CREDITS] {
        deliver(&test, credit(77, "alice", seq, seq));
    }
    // A round trip through alice's session after the duplicates.
    assert_eq!(wallet(&test, "alice").await, expected);
    let (_, stored, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "alice")
        .await
        .expect("session");
    let mark = &stored.post.marks[&Address::Room(77)];
    assert_eq!((mark.through, mark.above.len()), (CREDITS, 0));
}

#[tokio::test]
async fn a_failed_commit_stops_the_store_and_recovery_keeps_what_reached_the_disk() {
    let disk = Arc::new(MemoryBackend::default());
    let faulty = Arc::new(FaultyBackend::new(disk.clone()));
    let clock = Arc::new(common::ManualClock::new(common::START_MS));
    let store = Store::with_backend(faulty.clone(), &config().store, clock.clone()).expect("store");
    let dir = tempfile::tempdir().expect("temp dir");
    let test = hub_on(config(), store, clock.clone(), dir).await;
    assert_eq!(wallet(&test, "alice").await, 0);

    // The credit's batch reaches the disk, but the write reports an error.
    faulty.fail_next_write(Fault::FailAfterWrite);
    deliver(&test, credit(1, "alice", 1, 40));
    let failure = tokio::time::timeout(WAIT, test.store.failed())
        .await
        .expect("the store reports its failure");
    assert!(matches!(failure, StoreError::FailStopped(_)), "{failure:?}");
    // Nothing that needs a write is answered as done from now on.
    let rotated = ask(
        &test,
        "alice",
        Request::RotateSeed {
            wheel: "classic".into(),
        },
    )
    .await;
    assert!(rotated.is_err(), "{rotated:?}");
    assert!(matches!(
        test.store.commit(Vec::new()).await,
        Err(StoreError::FailStopped(_))
    ));

    // "Restart": a new store and hub on what is on the disk.
    drop(test);
    let store = Store::with_backend(disk, &config().store, clock.clone()).expect("store");
    let dir = tempfile::tempdir().expect("temp dir");
    let restarted = hub_on(config(), store, clock, dir).await;
    assert_eq!(
        wallet(&restarted, "alice").await,
        40,
        "the credit that reached the disk is there, once"
    );
}

#[tokio::test]
async fn a_restarted_room_tells_its_followers_with_a_snapshot_in_a_new_epoch() {
    let test = hub_with(config()).await;
    let (outbound, mut receiver) = Outbound::channel(1, 1_000, 1 << 20);
    connect(&test, "alice", &outbound).await;
    let joined = quick_join_wheel(&test, "alice").await;
    let (stream, epoch, _, _) = next_event(&mut receiver).await;
    assert_eq!(
        (stream, epoch),
        (StreamId::Room(joined.room), joined.stream_epoch)
    );

    // The room fails; the clock does not move, so only the incarnation tells the
    // epochs apart.
    let before = test.hub.active_room(joined.room).expect("active");
    before.cast(Msg::InjectFault).expect("inject");
    let (stream, epoch, _, event) = next_event(&mut receiver).await;
    assert_eq!(stream, StreamId::Room(joined.room));
    assert!(
        epoch > joined.stream_epoch,
        "new epoch {epoch} after {}",
        joined.stream_epoch
    );
    let Event::RoomSnapshot(snapshot) = event else {
        panic!("expected a snapshot, got {event:?}")
    };
    assert_eq!(snapshot.members, vec!["alice".to_string()]);

    // And the connection keeps following the new incarnation.
    request(
        &test,
        "alice",
        Request::Chat {
            room: joined.room,
            text: "still here".into(),
        },
    )
    .await;
    let (_, chat_epoch, _, event) = next_event(&mut receiver).await;
    assert_eq!(chat_epoch, epoch);
    assert!(matches!(event, Event::Chat { .. }), "{event:?}");
}

#[tokio::test]
async fn a_spin_its_room_can_never_pay_is_abandoned_with_a_dead_letter() {
    let test = hub_with(config()).await;
    let joined = quick_join_wheel(&test, "alice").await;
    // The spin's letter reaches a room of another wheel (as after the wheel left the
    // config): the room sends it back refused.
    let other = open_wheel_room(&test).await;
    let mut wrong = spin(other, 0);
    wrong.wheel = "gone".into();
    let body = Body::Settle(wrong);
    deliver(
        &test,
        letter(
            Address::Session("alice".into()),
            Address::Room(other),
            1,
            body,
        ),
    );
    let letters = || async { test.store.dead_letters().await.expect("dead letters") };
    // The session has no such spin: the refusal is taken and nothing else changes.
    eventually_async("the room refused it", || async {
        test.clock.advance(test.hub.config.mail.acks_flush_ms);
        let (_, stored, _) =
            Journal::<Durable<RoomEntity>>::inspect(&test.store, &other.to_string())
                .await
                .expect("room");
        stored.post.outbox.is_empty() && stored.post.next_seq > 1
    })
    .await;
    assert!(letters().await.is_empty());
    // A spin she draws for real in her room is paid.
    let spun = request(
        &test,
        "alice",
        Request::Spin {
            room: joined.room,
            client_seed: "s".into(),
        },
    )
    .await;
    assert!(matches!(spun, ReplyBody::Spun(_)), "{spun:?}");
}

#[tokio::test]
async fn letters_left_in_an_outbox_by_a_crash_are_delivered_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(common::ManualClock::new(common::START_MS));
    let store = Store::open(dir.path(), &config().store, clock.clone()).expect("store");
    // Room 42 paid alice a prize, then the process died before delivering it.
    let mut journal: Journal<Durable<RoomEntity>> =
        Journal::open(store.clone(), "42", 5).await.expect("open");
    let prize = credit(42, "alice", 1, 40);
    let record = Record {
        events: vec![RoomEvent::Created {
            setup: RoomSetup {
                kind: RoomKind::Quiz,
                variant: "quiz".into(),
                seed: 1,
                private_code: None,
            },
            inventory: Default::default(),
        }],
        post: vec![playtree_actors::mail::PostEvent::Sent(prize)],
    };
    journal.persist(vec![record]).await.expect("persist");
    drop(journal);
    assert_eq!(store.owing("room").await.expect("index"), vec!["42"]);

    // Nothing touches room 42 or alice: start-up alone delivers the credit.
    let test = hub_on(config(), store, clock, dir).await;
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, stored, _) = Journal::<Durable<SessionEntity>>::inspect(&test.store, "alice")
                .await
                .expect("session");
            let owing = test.store.owing("room").await.expect("index");
            if stored.state.balance == 40 && owing.is_empty() {
                break;
            }
            test.clock.advance(test.hub.config.mail.acks_flush_ms);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stranded credit is taken and acknowledged");
}

#[tokio::test]
async fn a_room_that_failed_for_good_leaves_matchmaking() {
    let mut config = config();
    config.actors.restarts_max = 0;
    let test = hub_with(config).await;
    let joined = quick_join_wheel(&test, "alice").await;
    let open = || {
        test.hub
            .matchmaker()
            .find_open(RoomKind::Wheel, "classic", &[])
    };
    assert_eq!(open(), Some(joined.room));
    let room = test.hub.active_room(joined.room).expect("active");
    room.cast(Msg::InjectFault).expect("inject");
    eventually("the failed room is unlisted", || open().is_none()).await;
    // Bob is not sent to the dead room: he gets a new one.
    let bob = quick_join_wheel(&test, "bob").await;
    assert_ne!(bob.room, joined.room);
}

#[tokio::test]
async fn a_restarted_room_is_listed_again_and_stays_listed() {
    let test = hub_with(config()).await;
    let joined = quick_join_wheel(&test, "alice").await;
    let before = test.hub.active_room(joined.room).expect("active");
    before.cast(Msg::InjectFault).expect("inject");
    eventually("a new incarnation", || {
        test.hub
            .active_room(joined.room)
            .is_some_and(|now| now.get_id() != before.get_id())
    })
    .await;
    // Its listing belongs to the new incarnation: the old one's failure, however late
    // its supervisor hears of it, does not unlist it.
    let listed = || {
        test.hub
            .matchmaker()
            .find_open(RoomKind::Wheel, "classic", &[])
            == Some(joined.room)
    };
    eventually("the restarted room is listed", listed).await;
    let bob = quick_join_wheel(&test, "bob").await;
    assert_eq!(bob.room, joined.room, "bob joins alice's restarted room");
}

#[tokio::test]
async fn a_wheel_seat_is_kept_for_a_player_who_is_away() {
    let mut config = config();
    config.quiz.seat_grace_ms = 10;
    let test = hub_with(config).await;
    let (outbound, _receiver) = Outbound::channel(7, 1_000, 1 << 20);
    connect(&test, "alice", &outbound).await;
    let joined = quick_join_wheel(&test, "alice").await;
    test.hub.connection_closed("alice", &outbound);
    // Long past a quiz seat's grace time, the room's deadline comes.
    test.clock.advance(60_000);
    test.hub.send_to_room(joined.room, Msg::Deadline);
    // A round trip through the room: the deadline has been handled.
    let spun = request(
        &test,
        "alice",
        Request::Spin {
            room: joined.room,
            client_seed: "s".into(),
        },
    )
    .await;
    assert!(matches!(spun, ReplyBody::Spun(_)));
    assert!(seated(&test, joined.room).await.contains("alice"));
}

#[tokio::test]
async fn the_next_quiz_game_starts_on_its_own_after_the_podium() {
    let mut config = config();
    config.quiz.min_players = 2;
    config.quiz.questions_per_game = 1;
    config.quiz.question_ms = 1_000;
    config.quiz.reveal_ms = 100;
    config.quiz.podium_ms = 100;
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    let mut room = 0;
    for player in ["alice", "bob"] {
        room = quick_join_quiz(&test, player).await;
    }
    let game_no = || async {
        let (_, stored, _) =
            Journal::<Durable<RoomEntity>>::inspect(&test.store, &room.to_string())
                .await
                .expect("room");
        stored.state.quiz.game_no
    };
    assert_eq!(game_no().await, 1, "two players start the first game");
    // Nobody answers: the question times out, the reveal and the podium pass (1.2 s of
    // game time in all), and the two players still seated start the next game with no
    // new input — long before anything else (passivation, at 60 s) would wake the room.
    for _ in 0..30 {
        test.clock.advance(100);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tokio::time::timeout(WAIT, async {
        while game_no().await < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("a second game starts");
}

/// Advances the clock until `player`'s session (active now) has passivated.
async fn passivate_session(test: &TestHub, player: &str) {
    let session = test.hub.active_session(player).expect("active");
    eventually("the idle session passivates while connected", || {
        test.clock.advance(60);
        test.hub.active_session(player).map(|s| s.get_id()) != Some(session.get_id())
    })
    .await;
}

#[tokio::test]
async fn a_closed_connection_reaches_its_quiz_room_without_activating_the_passivated_session() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    config.actors.timer_poll_ms = 2;
    config.quiz.seat_grace_ms = 1_000;
    // Alone in the lobby: no game starts.
    config.quiz.min_players = 2;
    let test = hub_with(config).await;
    let (outbound, receiver) = Outbound::channel(9, 1_000, 1 << 20);
    connect(&test, "alice", &outbound).await;
    let room = quick_join_quiz(&test, "alice").await;
    passivate_session(&test, "alice").await;

    drop(receiver);
    test.hub.connection_closed("alice", &outbound);
    assert!(
        test.hub.active_session("alice").is_none(),
        "a closed connection activates no session"
    );
    assert!(
        seated(&test, room).await.contains("alice"),
        "her seat waits for her"
    );
    // Past the seat's grace, the room frees it on its own.
    eventually_async("the seat is freed after its grace", || async {
        test.clock.advance(100);
        !seated(&test, room).await.contains("alice")
    })
    .await;
}

#[tokio::test]
async fn a_connection_that_closes_before_its_room_follows_it_leaves_the_seat_to_its_grace() {
    let mut config = config();
    config.actors.timer_poll_ms = 2;
    config.quiz.seat_grace_ms = 1_000;
    config.quiz.min_players = 2;
    let test = hub_with(config).await;
    let (first, first_receiver) = Outbound::channel(1, 1_000, 1 << 20);
    connect(&test, "alice", &first).await;
    let room = quick_join_quiz(&test, "alice").await;
    drop(first_receiver);
    test.hub.connection_closed("alice", &first);
    // She reconnects, and that connection is gone before her room has followed it
    // (its notice may even have come first): the room must not keep it, nor forget
    // that she is away.
    let (second, second_receiver) = Outbound::channel(2, 1_000, 1 << 20);
    drop(second_receiver);
    test.hub.connection_closed("alice", &second);
    connect(&test, "alice", &second).await;
    eventually_async("the seat is freed after its grace", || async {
        test.clock.advance(100);
        !seated(&test, room).await.contains("alice")
    })
    .await;
}

#[tokio::test]
async fn a_connected_idle_session_passivates_and_its_stream_goes_on_where_it_stood() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    let (outbound, mut receiver) = Outbound::channel(9, 1_000, 1 << 20);
    let welcome = connect(&test, "alice", &outbound).await;
    deliver(&test, credit(77, "alice", 1, 5));
    let (_, _, first_seq, _) = next_event(&mut receiver).await;
    // Alice stays connected and does nothing: her session leaves memory.
    passivate_session(&test, "alice").await;
    // A credit brings it back: her connection, still following, gets it in the same
    // epoch, right after the last event it had (the player's stream is durable).
    deliver(&test, credit(77, "alice", 2, 25));
    let (stream, epoch, seq, credit) = next_event(&mut receiver).await;
    assert_eq!(stream, StreamId::Player("alice".into()));
    assert_eq!(epoch, welcome.player_stream_epoch, "the same epoch");
    assert_eq!(seq, first_seq + 1, "no gap, no snapshot");
    assert!(
        matches!(
            credit,
            Event::WalletCredited {
                amount: 25,
                balance: 30,
                ..
            }
        ),
        "{credit:?}"
    );
}

#[tokio::test]
async fn news_a_player_missed_while_away_is_replayed_when_they_resume() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    let (outbound, receiver) = Outbound::channel(9, 1_000, 1 << 20);
    let welcome = connect(&test, "alice", &outbound).await;
    drop(receiver);
    test.hub.connection_closed("alice", &outbound);
    // While she is away (and her session passivated), a friend joins her tree and a
    // reward arrives.
    passivate_session(&test, "alice").await;
    let news = Body::News(vec![playtree_actors::mail::PlayerNews::FriendJoined {
        friend: "bob".into(),
        level: 1,
    }]);
    deliver(
        &test,
        letter(
            Address::Tree("alice".into()),
            Address::Session("alice".into()),
            1,
            news,
        ),
    );
    deliver(&test, credit(77, "alice", 1, 25));
    eventually_async("both are taken", || async {
        wallet(&test, "alice").await == 25
    })
    .await;
    passivate_session(&test, "alice").await;
    // She comes back, resuming from where her stream stood: she gets both.
    let (outbound, mut receiver) = Outbound::channel(10, 1_000, 1 << 20);
    test.hub
        .connect(
            "alice",
            &outbound,
            vec![playtree_protocol::StreamPosition {
                stream: StreamId::Player("alice".into()),
                epoch: welcome.player_stream_epoch,
                seq: 0,
            }],
        )
        .await
        .expect("connects");
    let (_, _, _, first) = next_event(&mut receiver).await;
    let (_, _, _, second) = next_event(&mut receiver).await;
    let mut kinds = [first, second].map(|event| match event {
        Event::FriendJoined { .. } => "friend",
        Event::WalletCredited { .. } => "credit",
        _ => "other",
    });
    kinds.sort();
    assert_eq!(kinds, ["credit", "friend"]);
}

#[tokio::test]
async fn a_join_whose_room_never_answers_does_not_wedge_the_player() {
    let mut config = config();
    // One room at a time, and one player per room: carol's room is full, and the room
    // alice's QuickJoin opens cannot be activated, so no room answers her join (its
    // letter waits in her outbox to be delivered again).
    config.rooms.rooms_max = 1;
    config.rooms.wheel_players_max = 1;
    config.session.join_wait_ms = 1_000;
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    quick_join_wheel(&test, "carol").await;
    let quick = || Request::QuickJoin {
        kind: RoomKind::Wheel,
        variant: None,
    };
    let first = tokio::time::timeout(WAIT, ask(&test, "alice", quick()))
        .await
        .expect("answered in time");
    assert!(first.is_err(), "{first:?}");
    // Her next join waits for the first, which is forgotten after join_wait_ms: it is
    // answered then, however it ends.
    let second = tokio::spawn({
        let hub = test.hub.clone();
        async move { hub.request("alice", quick(), None, 0, false).await }
    });
    eventually("the second join is answered", || {
        test.clock.advance(100);
        second.is_finished()
    })
    .await;
    assert_eq!(wallet(&test, "alice").await, 0, "her session answers");
}

#[tokio::test]
async fn a_request_queued_behind_a_passivation_is_carried_out_by_the_next_incarnation() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    let test = hub_with(config).await;
    assert_eq!(wallet(&test, "alice").await, 0);
    let session = test.hub.active_session("alice").expect("active");
    test.clock.advance(1_000);
    // Its deadline comes (it passivates) with a join already queued behind it.
    session.cast(Msg::Deadline).expect("deadline");
    let answer = session
        .call(
            |reply| {
                Msg::Input(playtree_actors::session::SessionInput::Request(Box::new(
                    playtree_actors::session::PlayerRequest {
                        request: Request::QuickJoin {
                            kind: RoomKind::Wheel,
                            variant: None,
                        },
                        keyed: None,
                        received_ms: 0,
                        suspect_source: false,
                        code_owner: None,
                        reply,
                    },
                )))
            },
            Some(WAIT),
        )
        .await
        .expect("sent");
    match answer {
        ractor::rpc::CallResult::Success(Ok(ReplyBody::RoomJoined(_))) => {}
        other => panic!("the join is carried out, not given up: {other:?}"),
    }
    assert_ne!(
        test.hub.active_session("alice").map(|s| s.get_id()),
        Some(session.get_id()),
        "by the next incarnation"
    );
}
