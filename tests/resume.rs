//! Reconnect and resume: missed events are replayed in order with no gap, or, past the
//! history, a snapshot says the view was resynced; the client crate does it on its own.

mod common;

use common::{TestServer, WAIT, next_envelope, next_event, welcomed_resuming};
use playtree_protocol::{Event, EventEnvelope, QuizPhase, StreamId, StreamPosition};

fn rooms(history_len: usize) -> String {
    format!(
        "[limits]\nframes_per_second = 1000\nframes_burst = 1000\n\n[rooms]\nhistory_len = {history_len}\nchat_per_second = 1000\nchat_burst = 1000\n\n[quiz]\nmin_players = 10\nlobby_countdown_ms = 600000\n"
    )
}

/// Alice and Bob in one quiz lobby; returns the room and Bob's position after his join.
async fn two_in_a_room(
    server: &TestServer,
) -> (
    playtree_client::Client,
    playtree_client::Events,
    u64,
    (u64, u64),
) {
    let (alice, alice_events) = server.connect("alice").await;
    let room = alice.quick_join_quiz().await.expect("alice joins").room;
    let (bob, mut bob_events) = server.connect("bob").await;
    assert_eq!(bob.quick_join_quiz().await.expect("bob joins").room, room);
    let position = next_event(&mut bob_events, |e| match &e.event {
        Event::MemberJoined { player, .. } if player == "bob" => Some((e.epoch, e.seq)),
        _ => None,
    })
    .await;
    drop(bob_events);
    drop(bob);
    (alice, alice_events, room, position)
}

/// Alice sends `count` lines; then Bob reconnects over a raw socket, resuming the room
/// from `(epoch, seq)`.
async fn miss_lines_then_resume(
    server: &TestServer,
    alice: &playtree_client::Client,
    room: u64,
    (epoch, seq): (u64, u64),
    count: u64,
) -> common::Socket {
    for n in 1..=count {
        alice
            .chat(room, &format!("missed {n}"))
            .await
            .expect("chat");
    }
    let resume = vec![StreamPosition {
        stream: StreamId::Room(room),
        epoch,
        seq,
    }];
    welcomed_resuming(server, "bob", resume).await
}

fn chat_text(envelope: &EventEnvelope) -> Option<String> {
    match &envelope.event {
        Event::Chat { text, .. } => Some(text.clone()),
        _ => None,
    }
}

#[tokio::test]
async fn a_dropped_connection_resumes_with_the_missed_events_in_order() {
    let server = TestServer::start(&rooms(64)).await;
    let (alice, _alice_events, room, (epoch, seq)) = two_in_a_room(&server).await;
    let mut bob = miss_lines_then_resume(&server, &alice, room, (epoch, seq), 3).await;
    for n in 1..=3u64 {
        let envelope = next_envelope(&mut bob).await;
        assert_eq!(
            (envelope.epoch, envelope.seq),
            (epoch, seq + n),
            "replayed in order, no gap"
        );
        assert_eq!(chat_text(&envelope), Some(format!("missed {n}")));
    }
    // Then live events carry on from there.
    alice.chat(room, "live").await.expect("chat");
    let envelope = next_envelope(&mut bob).await;
    assert_eq!(
        (envelope.seq, chat_text(&envelope)),
        (seq + 4, Some("live".into()))
    );
}

#[tokio::test]
async fn a_resume_past_the_history_gets_a_snapshot() {
    let server = TestServer::start(&rooms(4)).await;
    let (alice, _alice_events, room, (epoch, seq)) = two_in_a_room(&server).await;
    let mut bob = miss_lines_then_resume(&server, &alice, room, (epoch, seq), 10).await;
    let envelope = next_envelope(&mut bob).await;
    let Event::RoomSnapshot(snapshot) = &envelope.event else {
        panic!("expected a snapshot, got {envelope:?}");
    };
    assert_eq!(
        (envelope.epoch, envelope.seq),
        (epoch, seq + 10),
        "the snapshot is as of the latest event"
    );
    assert_eq!(
        snapshot.members,
        vec!["alice".to_string(), "bob".to_string()]
    );
    assert!(matches!(snapshot.quiz, Some(QuizPhase::Lobby(_))));
    alice.chat(room, "live").await.expect("chat");
    let envelope = next_envelope(&mut bob).await;
    assert_eq!(
        (envelope.seq, chat_text(&envelope)),
        (seq + 11, Some("live".into()))
    );
}

#[tokio::test]
async fn a_stream_named_in_another_epoch_gets_a_snapshot() {
    let server = TestServer::start(&rooms(64)).await;
    let (_alice, _alice_events, room, (epoch, seq)) = two_in_a_room(&server).await;
    let resume = vec![StreamPosition {
        stream: StreamId::Room(room),
        epoch: epoch + 1,
        seq,
    }];
    let mut bob = welcomed_resuming(&server, "bob", resume).await;
    assert!(matches!(
        next_envelope(&mut bob).await.event,
        Event::RoomSnapshot(_)
    ));
}

#[tokio::test]
async fn the_client_crate_reconnects_and_resumes_on_its_own() {
    let server = TestServer::start(&rooms(64)).await;
    let (alice, _alice_events) = server.connect("alice").await;
    let room = alice.quick_join_quiz().await.expect("alice joins").room;
    let (bob, mut bob_events) = server.connect("bob").await;
    bob.quick_join_quiz().await.expect("bob joins");
    alice.chat(room, "before").await.expect("chat");
    let before = next_event(&mut bob_events, |e| {
        chat_text(e).filter(|t| t == "before").map(|_| e.seq)
    })
    .await;

    bob.reconnect_now();
    for n in 1..=5 {
        alice
            .chat(room, &format!("during {n}"))
            .await
            .expect("chat");
    }
    // Bob's application sees every line, in order, with consecutive seqs and no snapshot.
    for n in 1..=5u64 {
        let envelope = tokio::time::timeout(WAIT, bob_events.next())
            .await
            .expect("in time")
            .expect("open");
        assert!(
            !matches!(envelope.event, Event::RoomSnapshot(_)),
            "resumed, not resynced"
        );
        assert_eq!(envelope.seq, before + n);
        assert_eq!(chat_text(&envelope), Some(format!("during {n}")));
    }
    tokio::time::timeout(WAIT, async {
        while bob.reconnects() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the client reconnected");
    assert_eq!(
        bob.wallet()
            .await
            .expect("requests work after the reconnect"),
        0
    );
}
