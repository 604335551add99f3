//! The invariants of the entity foundation, each once broken by a heuristic: grants are
//! paid to their beneficiary only and exactly once, a failed commit acknowledges nothing,
//! a restarted entity tells its followers in a new epoch, a spin that can never settle
//! does not wedge its player, a crash strands no grant, and a failed room leaves
//! matchmaking.

mod common;

use common::{TestHub, WAIT, config, connect, eventually, eventually_async, hub_on, hub_with};
use playtree_actors::connections::{Outbound, OutboundReceiver};
use playtree_actors::grant::Grant;
use playtree_actors::room::{RoomEntity, RoomEvent, RoomMsg, RoomSetup, RoomSpec};
use playtree_actors::session::{PendingSpin, SessionEntity, SessionEvent, SessionMsg};
use playtree_actors::store::{Fault, FaultyBackend, Journal, MemoryBackend};
use playtree_actors::{Store, StoreError};
use playtree_protocol::codec::decode_server;
use playtree_protocol::{
    Event, GrantId, ReplyBody, Request, RoomId, RoomKind, ServerFrame, StreamId,
};
use std::sync::Arc;

async fn request(test: &TestHub, player: &str, request: Request) -> ReplyBody {
    test.hub
        .call_session(player, |reply| SessionMsg::Request {
            request: request.clone(),
            reply,
        })
        .await
        .expect("session answers")
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
    let (_, state, _) = Journal::<RoomEntity>::inspect(&test.store, &room.to_string())
        .await
        .expect("room");
    state.members
}

async fn wallet(test: &TestHub, player: &str) -> u64 {
    match request(test, player, Request::GetWallet).await {
        ReplyBody::Wallet { balance } => balance,
        other => panic!("unexpected {other:?}"),
    }
}

fn grant(source: &str, seq: u64, previous: u64, beneficiary: &str, amount: u64) -> Grant {
    Grant {
        id: GrantId {
            source: source.into(),
            seq,
        },
        previous,
        beneficiary: beneficiary.into(),
        amount,
        reason: "test".into(),
        settles: None,
    }
}

fn spin(room: RoomId, nonce: u64) -> PendingSpin {
    PendingSpin {
        room,
        wheel: "classic".into(),
        nonce,
        client_seed: "seed".into(),
        commitment: [0; 32],
        // Segment 0 pays 10 and has no inventory cap.
        segment: 0,
    }
}

/// Writes alice's session as it is once she drew spin 0 of wheel `classic` in `room`,
/// not yet settled.
async fn alice_drew_a_spin_in(store: &Store, room: RoomId) {
    let mut journal: Journal<SessionEntity> = Journal::open(store.clone(), "alice", 5)
        .await
        .expect("open");
    journal
        .persist(vec![
            SessionEvent::SeedCommitted {
                wheel: "classic".into(),
                server_seed: [1; 32],
            },
            SessionEvent::SpinDrawn {
                spin: spin(room, 0),
                day: 0,
            },
        ])
        .await
        .expect("persist");
}

async fn settle(
    test: &TestHub,
    room: RoomId,
    player: &str,
    nonce: u64,
) -> Result<playtree_actors::room::Settled, playtree_actors::room::RoomError> {
    test.hub
        .call_room(room, None, |reply| RoomMsg::Settle {
            player: player.into(),
            spin: spin(room, nonce),
            reply,
        })
        .await
        .expect("room answers")
}

async fn open_wheel_room(test: &TestHub) -> RoomId {
    let room = test.store.generate_id().expect("id");
    let spec = RoomSpec {
        kind: RoomKind::Wheel,
        variant: "classic".into(),
        private_code: None,
    };
    test.hub.room(room, Some(spec)).await.expect("room opens");
    room
}

/// The first frame on `receiver` that carries an event, decoded.
async fn next_event(receiver: &mut OutboundReceiver) -> (StreamId, u64, Event) {
    tokio::time::timeout(WAIT, async {
        loop {
            let frame = receiver.recv().await;
            if let Ok(ServerFrame::Event(envelope)) = decode_server(&frame.bytes, 1 << 20) {
                return (envelope.stream, envelope.epoch, envelope.event);
            }
        }
    })
    .await
    .expect("an event arrives")
}

#[tokio::test]
async fn a_retried_settlement_never_pays_another_players_grant() {
    let test = hub_with(config()).await;
    let room = open_wheel_room(&test).await;
    // Bob's spin 0 is settled and delivered; alice's spin 0 waits in the outbox.
    let bob = settle(&test, room, "bob", 0).await.expect("bob settles");
    test.hub
        .cast_room(
            room,
            RoomMsg::GrantAcked {
                grant: bob.grant.id,
            },
        )
        .await
        .expect("ack");
    let alice = settle(&test, room, "alice", 0)
        .await
        .expect("alice settles");
    assert_eq!(alice.grant.beneficiary, "alice");
    // Bob's session retries its spin 0 (its first answer was lost): nonces count per
    // player, so alice's grant with the same wheel and nonce is not his.
    match settle(&test, room, "bob", 0).await {
        Ok(settled) => assert_eq!(settled.grant.beneficiary, "bob", "{settled:?}"),
        Err(error) => assert_eq!(error, playtree_actors::room::RoomError::AlreadyDelivered),
    }
}

#[tokio::test]
async fn a_grant_addressed_to_another_player_is_neither_credited_nor_acknowledged() {
    let test = hub_with(config()).await;
    let room = open_wheel_room(&test).await;
    let for_alice = settle(&test, room, "alice", 0).await.expect("settles");
    test.hub
        .cast_session(
            "bob",
            SessionMsg::Credit {
                grant: for_alice.grant.clone(),
                source: playtree_actors::grant::GrantSource::Room(room),
            },
        )
        .await
        .expect("delivered");
    assert_eq!(wallet(&test, "bob").await, 0);
    // A round trip through the room after bob's session is done: an acknowledgement,
    // had bob sent one, would be in the room's journal by now.
    settle(&test, room, "carol", 0).await.expect("settles");
    let letters = test.store.dead_letters().await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].kind, "grant");
    let (_, room_state, _) = Journal::<RoomEntity>::inspect(&test.store, &room.to_string())
        .await
        .expect("room");
    assert!(
        room_state.outbox.contains_key(&for_alice.grant.id),
        "alice's grant still waits for alice"
    );
}

#[tokio::test]
async fn an_old_grant_redelivered_after_many_newer_ones_is_not_paid_again() {
    let test = hub_with(config()).await;
    // Grants of one source, each worth its seq, delivered out of order in pairs: more
    // than the 4,096 grant ids the wallet's old window remembered.
    const GRANTS: u64 = 4_200;
    let mut expected = 0;
    for pair in (1..=GRANTS).collect::<Vec<_>>().chunks(2) {
        for &seq in pair.iter().rev() {
            let message = SessionMsg::Credit {
                grant: grant("room:77", seq, seq - 1, "alice", seq),
                source: playtree_actors::grant::GrantSource::Room(77),
            };
            test.hub
                .cast_session("alice", message)
                .await
                .expect("deliver");
            expected += seq;
        }
    }
    assert_eq!(wallet(&test, "alice").await, expected);
    for seq in [1, 2, 30, GRANTS - 1, GRANTS] {
        let message = SessionMsg::Credit {
            grant: grant("room:77", seq, seq - 1, "alice", seq),
            source: playtree_actors::grant::GrantSource::Room(77),
        };
        test.hub
            .cast_session("alice", message)
            .await
            .expect("redeliver");
    }
    assert_eq!(wallet(&test, "alice").await, expected);
    let (_, state, _) = Journal::<SessionEntity>::inspect(&test.store, "alice")
        .await
        .expect("session");
    let mark = &state.grant_marks["room:77"];
    assert_eq!((mark.through, mark.above.len()), (GRANTS, 0));
}

#[tokio::test]
async fn a_failed_commit_stops_the_store_and_recovery_keeps_what_reached_the_disk() {
    let disk = Arc::new(MemoryBackend::default());
    let faulty = Arc::new(FaultyBackend::new(disk.clone()));
    let store = Store::with_backend(faulty.clone(), &config().store).expect("store");
    let dir = tempfile::tempdir().expect("temp dir");
    let test = hub_on(config(), store, dir).await;
    assert_eq!(wallet(&test, "alice").await, 0);

    // The credit's batch reaches the disk, but the write reports an error.
    faulty.fail_next_write(Fault::FailAfterWrite);
    test.hub
        .cast_session(
            "alice",
            SessionMsg::Credit {
                grant: grant("room:1", 1, 0, "alice", 40),
                source: playtree_actors::grant::GrantSource::Room(1),
            },
        )
        .await
        .expect("delivered");
    // Nothing that needs a write is answered as done from now on: the session whose
    // memory is ahead of the store stops, and no new one can activate.
    let rotated = test
        .hub
        .call_session("alice", |reply| SessionMsg::Request {
            request: Request::RotateSeed {
                wheel: "classic".into(),
            },
            reply,
        })
        .await;
    assert!(!matches!(rotated, Ok(Ok(_))), "{rotated:?}");
    let failure = tokio::time::timeout(WAIT, test.store.failed())
        .await
        .expect("the store reports its failure");
    assert!(matches!(failure, StoreError::FailStopped(_)), "{failure:?}");
    // Nothing more is written or acknowledged: every later commit is refused.
    assert!(matches!(
        test.store.commit(Vec::new()).await,
        Err(StoreError::FailStopped(_))
    ));

    // "Restart": a new store and hub on what is on the disk.
    drop(test);
    let store = Store::with_backend(disk, &config().store).expect("store");
    let dir = tempfile::tempdir().expect("temp dir");
    let restarted = hub_on(config(), store, dir).await;
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
    let (stream, epoch, _) = next_event(&mut receiver).await;
    assert_eq!(
        (stream, epoch),
        (StreamId::Room(joined.room), joined.stream_epoch)
    );

    // The room fails; the clock does not move, so only the incarnation tells the
    // epochs apart.
    let before = test.hub.active_room(joined.room).expect("active");
    before.cast(RoomMsg::InjectFault).expect("inject");
    let (stream, epoch, event) = next_event(&mut receiver).await;
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
    let (_, chat_epoch, event) = next_event(&mut receiver).await;
    assert_eq!(chat_epoch, epoch);
    assert!(matches!(event, Event::Chat { .. }), "{event:?}");
}

#[tokio::test]
async fn a_spin_that_can_never_settle_is_abandoned_with_a_dead_letter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &config().store).expect("store");
    // Alice drew a spin in room 999, which does not exist (any more).
    alice_drew_a_spin_in(&store, 999).await;
    let test = hub_on(config(), store, dir).await;
    // Activating alice retries the spin; the room is unknown for good.
    assert_eq!(wallet(&test, "alice").await, 0);
    eventually_async("the spin stops waiting", || async {
        let (_, state, _) = Journal::<SessionEntity>::inspect(&test.store, "alice")
            .await
            .expect("session");
        state.pending_spins.is_empty()
    })
    .await;
    let letters = test.store.dead_letters().await.expect("dead letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].kind, "spin");
}

#[tokio::test]
async fn grants_left_in_an_outbox_by_a_crash_are_delivered_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &config().store).expect("store");
    // Room 42 issued alice a grant, then the process died before delivering it.
    let mut journal: Journal<RoomEntity> =
        Journal::open(store.clone(), "42", 5).await.expect("open");
    journal
        .persist(vec![
            RoomEvent::Created {
                setup: RoomSetup {
                    kind: RoomKind::Quiz,
                    variant: "quiz".into(),
                    seed: 1,
                    private_code: None,
                },
                inventory: Default::default(),
            },
            RoomEvent::GrantsIssued {
                grants: vec![grant("room:42", 1, 0, "alice", 40)],
            },
        ])
        .await
        .expect("persist");
    drop(journal);
    assert_eq!(store.owing("room").await.expect("index"), vec!["42"]);

    // Nothing touches room 42 or alice: start-up alone delivers the grant.
    let test = hub_on(config(), store, dir).await;
    tokio::time::timeout(WAIT, async {
        loop {
            let (_, state, _) = Journal::<SessionEntity>::inspect(&test.store, "alice")
                .await
                .expect("session");
            let owing = test.store.owing("room").await.expect("index");
            if state.balance == 40 && owing.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the stranded grant is credited and acknowledged");
}

#[tokio::test]
async fn a_room_that_failed_for_good_leaves_matchmaking() {
    let mut config = config();
    config.actors.restarts_max = 0;
    let test = hub_with(config).await;
    let joined = quick_join_wheel(&test, "alice").await;
    let open = || {
        test.hub
            .matchmaker
            .find_open(RoomKind::Wheel, "classic", &[])
    };
    assert_eq!(open(), Some(joined.room));
    let room = test.hub.active_room(joined.room).expect("active");
    room.cast(RoomMsg::InjectFault).expect("inject");
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
    before.cast(RoomMsg::InjectFault).expect("inject");
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
            .matchmaker
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
    test.hub
        .cast_room(joined.room, RoomMsg::Deadline)
        .await
        .expect("deadline");
    // A round trip through the room: the deadline has been handled.
    settle(&test, joined.room, "alice", 0)
        .await
        .expect("settles");
    let (_, room, _) = Journal::<RoomEntity>::inspect(&test.store, &joined.room.to_string())
        .await
        .expect("room");
    assert!(room.members.contains("alice"), "{:?}", room.members);
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
        let request = Request::QuickJoin {
            kind: RoomKind::Quiz,
            variant: None,
        };
        match self::request(&test, player, request).await {
            ReplyBody::QuizJoined(joined) => room = joined.room,
            other => panic!("not joined: {other:?}"),
        }
    }
    let game_no = || async {
        let (_, state, _) = Journal::<RoomEntity>::inspect(&test.store, &room.to_string())
            .await
            .expect("room");
        state.quiz.game_no
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
    // A round trip through the room: it has heard of the closed connection.
    let _ = settle(&test, room, "alice", 0).await;
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
async fn a_connected_idle_session_passivates_and_its_connection_hears_it_come_back() {
    let mut config = config();
    config.session.passivate_after_ms = 100;
    config.actors.timer_poll_ms = 2;
    let test = hub_with(config).await;
    let (outbound, mut receiver) = Outbound::channel(9, 1_000, 1 << 20);
    let welcome = connect(&test, "alice", &outbound).await;
    // Alice stays connected and does nothing: her session leaves memory.
    passivate_session(&test, "alice").await;
    // A grant for her brings it back: her connection, still following, hears where the
    // wallet stands in the new epoch, then the credit.
    test.hub
        .cast_session(
            "alice",
            SessionMsg::Credit {
                grant: grant("room:77", 1, 0, "alice", 25),
                source: playtree_actors::grant::GrantSource::Room(77),
            },
        )
        .await
        .expect("delivered");
    let (stream, epoch, event) = next_event(&mut receiver).await;
    assert_eq!(stream, StreamId::Player("alice".into()));
    assert!(epoch > welcome.player_stream_epoch, "a new epoch");
    assert!(
        matches!(event, Event::PlayerSnapshot { balance: 0 }),
        "{event:?}"
    );
    let (_, credit_epoch, credit) = next_event(&mut receiver).await;
    assert_eq!(credit_epoch, epoch);
    assert!(
        matches!(
            credit,
            Event::WalletCredited {
                amount: 25,
                balance: 25,
                ..
            }
        ),
        "{credit:?}"
    );
}

#[tokio::test]
async fn a_retry_that_ends_while_its_session_activates_does_not_wedge_the_player() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &config().store).expect("store");
    // Room 998 exists; alice drew a spin there that is not settled yet.
    let mut room: Journal<RoomEntity> = Journal::open(store.clone(), "998", 5)
        .await
        .expect("open room");
    room.persist(vec![RoomEvent::Created {
        setup: RoomSetup {
            kind: RoomKind::Wheel,
            variant: "classic".into(),
            seed: 1,
            private_code: None,
        },
        inventory: Default::default(),
    }])
    .await
    .expect("room");
    drop(room);
    alice_drew_a_spin_in(&store, 998).await;
    // One room at a time, and carol's takes it: the retry alice's activation starts
    // is refused at once (too many rooms), before her session is even registered.
    let mut config = config();
    config.rooms.rooms_max = 1;
    let test = hub_on(config, store, dir).await;
    quick_join_wheel(&test, "carol").await;
    // Her requests are still answered (she joins carol's room), not left waiting
    // behind a flow whose end was lost.
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            WAIT,
            test.hub.call_session("alice", |reply| SessionMsg::Request {
                request: Request::QuickJoin {
                    kind: RoomKind::Wheel,
                    variant: None,
                },
                reply,
            }),
        )
        .await
        .expect("in time")
        .expect("the session answers");
        assert!(matches!(answer, Ok(ReplyBody::RoomJoined(_))), "{answer:?}");
    }
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
    session.cast(SessionMsg::Deadline).expect("deadline");
    let answer = session
        .call(
            |reply| SessionMsg::Request {
                request: Request::QuickJoin {
                    kind: RoomKind::Wheel,
                    variant: None,
                },
                reply,
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
