//! Matchmaking: quick join, private codes, and each way a join can fail; chat and
//! reactions reach every member and bad ones are refused.

mod common;

use common::{TestServer, next_event};
use playtree_protocol::{ErrorCode, Event};

const ROOMS: &str = r#"
[quiz]
min_players = 2
players_max = 2
lobby_countdown_ms = 600000
join_started = "refuse"

[rooms]
chat_chars_max = 20
chat_per_second = 1
chat_burst = 2
"#;

#[tokio::test]
async fn joins_fail_each_with_their_own_error() {
    let server = TestServer::start(ROOMS).await;
    let (a, _a_events) = server.connect("a").await;
    let (b, _b_events) = server.connect("b").await;
    let (c, _c_events) = server.connect("c").await;

    let unknown = a.join_private("NOPE42").await.expect_err("unknown code");
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownRoomCode));

    let created = a
        .create_private_quiz()
        .await
        .expect("a opens a private room");
    let code = created.code.clone().expect("a private room has a code");
    assert_eq!(code.len(), 6);
    let twice = a.join_private(&code).await.expect_err("a is in it already");
    assert_eq!(twice.code(), Some(ErrorCode::AlreadyInRoom));
    let other_quiz = a
        .quick_join_quiz()
        .await
        .expect_err("one quiz room at a time");
    assert_eq!(other_quiz.code(), Some(ErrorCode::AlreadyInRoom));

    // A private room is not offered by QuickJoin: c gets a room of its own.
    let public = c.quick_join_quiz().await.expect("c opens a public room");
    assert_ne!(public.room, created.room);

    // b joins by code (lower case works too); the room is then full, and its game starts.
    let joined = b
        .join_private(&code.to_lowercase())
        .await
        .expect("b joins by code");
    assert_eq!(joined.room, created.room);
    c.leave_room(public.room).await.expect("c leaves its room");
    // Both full and started: the seat count is checked first.
    let full = c.join_private(&code).await.expect_err("full");
    assert_eq!(full.code(), Some(ErrorCode::RoomFull));
}

#[tokio::test]
async fn a_started_game_refuses_joiners_when_configured_to() {
    let server = TestServer::start(&ROOMS.replace("players_max = 2", "players_max = 5")).await;
    let (a, _a_events) = server.connect("a").await;
    let (b, _b_events) = server.connect("b").await;
    let (c, _c_events) = server.connect("c").await;
    let created = a.create_private_quiz().await.expect("create");
    let code = created.code.expect("code");
    b.join_private(&code)
        .await
        .expect("b joins; two players start the game");
    let refused = c
        .join_private(&code)
        .await
        .expect_err("the game has started");
    assert_eq!(refused.code(), Some(ErrorCode::GameInProgress));
}

#[tokio::test]
async fn chat_and_reactions_reach_every_member_and_bad_ones_are_refused() {
    // A clock that stands still: the chat bucket does not refill during the test.
    let (server, _clock) = TestServer::start_with_clock(ROOMS).await;
    let (a, _a_events) = server.connect("a").await;
    let (b, mut b_events) = server.connect("b").await;
    let room = a.quick_join_quiz().await.expect("join").room;
    assert_eq!(b.quick_join_quiz().await.expect("join").room, room);

    a.chat(room, "hello b!").await.expect("chat");
    let line = next_event(&mut b_events, |e| match &e.event {
        Event::Chat { player, text, .. } => Some((player.clone(), text.clone())),
        _ => None,
    })
    .await;
    assert_eq!(line, ("a".into(), "hello b!".into()));
    a.react(room, "🎉").await.expect("react");
    let reaction = next_event(&mut b_events, |e| match &e.event {
        Event::Reaction { emoji, .. } => Some(emoji.clone()),
        _ => None,
    })
    .await;
    assert_eq!(reaction, "🎉");

    let code =
        |result: Result<(), playtree_client::ClientError>| result.expect_err("refused").code();
    assert_eq!(
        code(a.chat(room, "x".repeat(21).as_str()).await),
        Some(ErrorCode::InvalidChat)
    );
    assert_eq!(
        code(a.chat(room, "line\nbreak").await),
        Some(ErrorCode::InvalidChat)
    );
    assert_eq!(
        code(a.react(room, "🦀").await),
        Some(ErrorCode::InvalidReaction)
    );
    assert_eq!(code(a.chat(999, "hi").await), Some(ErrorCode::NotInRoom));
    // The burst of 2 was used by the line and the reaction above: the next is limited.
    assert_eq!(
        code(a.chat(room, "again").await),
        Some(ErrorCode::RateLimited)
    );
}

#[tokio::test]
async fn a_player_opens_a_limited_number_of_private_rooms() {
    let server = TestServer::start("[rooms]\nprivate_creates_per_hour = 2").await;
    let (alice, _events) = server.connect("alice").await;
    for _ in 0..2 {
        let created = alice.create_private_quiz().await.expect("create");
        alice.leave_room(created.room).await.expect("leave");
    }
    let refused = alice
        .create_private_quiz()
        .await
        .expect_err("a third within the hour");
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused:?}");
}

#[tokio::test]
async fn private_codes_cannot_be_enumerated_whatever_the_connections() {
    let server = TestServer::start("[rooms]\nprivate_code_misses_per_hour = 3").await;
    let (alice, _alice_events) = server.connect("alice").await;
    let code = alice
        .create_private_quiz()
        .await
        .expect("create")
        .code
        .expect("a private room has a code");
    // Misses spread over several connections of one player count together.
    let (first, _first_events) = server.connect("mallory").await;
    let (second, _second_events) = server.connect("mallory").await;
    for (client, guess) in [(&first, "AAAAAA"), (&second, "BBBBBB"), (&first, "CCCCCC")] {
        let missed = client.join_private(guess).await.expect_err("no such room");
        assert_eq!(missed.code(), Some(ErrorCode::UnknownRoomCode));
    }
    // Past the misses allowed, even the right code is not tried, on any connection...
    for client in [&first, &second] {
        let refused = client.join_private(&code).await.expect_err("refused");
        assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused:?}");
    }
    let (third, _third_events) = server.connect("mallory").await;
    let refused = third.join_private(&code).await.expect_err("refused");
    assert_eq!(refused.code(), Some(ErrorCode::RateLimited), "{refused:?}");
    // ...while another player may use it.
    let (bob, _bob_events) = server.connect("bob").await;
    bob.join_private(&code).await.expect("bob joins by code");
}
