//! A room's decisions, with no actor, store or socket.

use super::*;
use crate::mail::{Membership, RoomSpec};
use crate::runtime::testing::{Bench, config, env, port, send_replies};
use playtree_protocol::fairness::commitment;

fn wheel_room(config: GameConfig) -> Bench<RoomEntity> {
    let spec = RoomSpec {
        kind: RoomKind::Wheel,
        variant: "classic".into(),
        private_code: None,
    };
    let (bench, created) = Bench::<RoomEntity>::activate(7, env(config), Some(spec));
    assert!(matches!(created.events[..], [RoomEvent::Created { .. }]));
    bench
}

/// A letter from `player`'s session to the room.
fn letter(room: &Bench<RoomEntity>, player: &str, body: Body) -> Letter {
    let from = Address::Session(player.into());
    let seq = room
        .stored
        .post
        .marks
        .get(&from)
        .map_or(1, |mark| mark.through + 1);
    Letter {
        from,
        to: room.address.clone(),
        seq,
        previous: 0,
        sent_ms: room.now_ms,
        body,
    }
}

fn join_letter(kind: RoomKind) -> JoinLetter {
    let variant = match kind {
        RoomKind::Wheel => "classic",
        RoomKind::Quiz => "quiz",
    };
    JoinLetter {
        membership: Membership {
            kind,
            variant: variant.into(),
        },
        spec: None,
        fairness: (kind == RoomKind::Wheel).then_some(playtree_protocol::FairnessInfo {
            commitment: [0; 32],
            next_nonce: 0,
            spins_today: 0,
        }),
        quick: true,
        tried: Vec::new(),
        request_key: None,
    }
}

/// `player` joins by letter; what the room decided and the client's answer.
fn join(
    room: &mut Bench<RoomEntity>,
    player: &str,
) -> (
    crate::runtime::Decided<RoomEntity>,
    Result<ReplyBody, ErrorReply>,
) {
    let kind = room_kind(room.state());
    let (reply, mut answer) = port();
    let body = Body::Join(join_letter(kind));
    let letter = letter(room, player, body);
    let mut decided = room.letter(
        letter,
        Some(Attachment::Join {
            reply,
            outbounds: Vec::new(),
            promise: None,
        }),
    );
    decided.effects = send_replies(decided.effects);
    (decided, answer.try_recv().expect("join answered"))
}

fn spin(segment: u32) -> SpinDraw {
    SpinDraw {
        room: 7,
        wheel: "classic".into(),
        nonce: 0,
        client_seed: "seed".into(),
        commitment: commitment(&[1; 32]),
        segment,
        request_key: None,
    }
}

fn sent_names(decided: &crate::runtime::Decided<RoomEntity>) -> Vec<(String, &'static str)> {
    decided
        .sent()
        .iter()
        .map(|letter| (letter.to.key(), letter.body.name()))
        .collect()
}

#[test]
fn a_join_is_journaled_published_listed_answered_and_told_to_the_session() {
    let mut room = wheel_room(config());
    let (decided, answer) = join(&mut room, "alice");
    assert_eq!(
        decided.events,
        vec![RoomEvent::MemberJoined {
            player: "alice".into()
        }]
    );
    assert!(decided.effects.iter().any(|effect| matches!(
        effect,
        Effect::Index(RoomEffect::List(
            Listing {
                members: 1,
                open: true,
                ..
            },
            _
        ))
    )));
    let ReplyBody::RoomJoined(joined) = answer.expect("joined") else {
        panic!("a wheel room answers RoomJoined")
    };
    assert_eq!(joined.members, vec!["alice".to_owned()]);
    assert_eq!(sent_names(&decided), vec![("alice".into(), "seated")]);
    assert_eq!(room.stream.seq(), 1);
}

#[test]
fn a_full_room_sends_the_join_back_to_try_another_and_changes_nothing() {
    let mut config = config();
    config.rooms.wheel_players_max = 1;
    let mut room = wheel_room(config);
    join(&mut room, "alice").1.expect("alice joins");
    let before = (room.state().clone(), room.stream.seq());
    let (reply, mut answer) = port();
    let body = Body::Join(join_letter(RoomKind::Wheel));
    let letter = letter(&room, "bob", body);
    let decided = room.letter(letter, Some(Attachment::Reply(reply)));
    assert!(decided.events.is_empty());
    let sent = decided.sent();
    let [refused] = sent.as_slice() else {
        panic!("one letter back: {sent:?}")
    };
    let Body::JoinRefused(refusal) = &refused.body else {
        panic!("a refusal")
    };
    assert!(refusal.retry, "another room may take bob");
    assert_eq!(refusal.tried, vec![7]);
    assert!(
        answer.try_recv().is_err(),
        "the client's reply went back with the join"
    );
    assert_eq!((room.state().clone(), room.stream.seq()), before);
}

#[test]
fn chat_is_published_not_journaled_and_only_for_members() {
    let mut room = wheel_room(config());
    join(&mut room, "alice").1.expect("alice joins");
    let chat = |room: &mut Bench<RoomEntity>, player: &str| {
        let (reply, mut answer) = port();
        let decided = room.hand_off(HandOff::Member {
            request: MemberRequest {
                room: 7,
                player: player.into(),
                received_ms: 0,
                action: MemberAction::Chat { text: "hi".into() },
            },
            reply,
        });
        assert!(decided.events.is_empty() && decided.post.is_empty());
        let publishes = decided
            .effects
            .iter()
            .filter(|effect| matches!(effect, Effect::Publish { .. }))
            .count();
        send_replies(decided.effects);
        (answer.try_recv().expect("answered"), publishes)
    };
    let (refused, publishes) = chat(&mut room, "mallory");
    assert_eq!(
        refused.map_err(|e| e.code).err(),
        Some(ErrorCode::NotInRoom)
    );
    assert_eq!(publishes, 0);
    let (sent, publishes) = chat(&mut room, "alice");
    assert!(matches!(sent, Ok(ReplyBody::Sent)));
    assert_eq!(publishes, 1);
}

#[test]
fn a_spin_is_paid_by_letter_in_the_commit_that_counts_its_stock() {
    let mut room = wheel_room(config());
    join(&mut room, "alice").1.expect("alice joins");
    // Segment 1 is the jackpot, one in stock.
    let first = letter(&room, "alice", Body::Settle(spin(1)));
    let decided = room.letter(first, None);
    assert!(matches!(
        decided.events[..],
        [RoomEvent::SpinSettled { .. }]
    ));
    let credits: Vec<(String, u64, bool)> = decided
        .sent()
        .iter()
        .filter_map(|letter| match &letter.body {
            Body::Credit(credit) => Some((
                letter.to.key(),
                credit.amount,
                credit
                    .spin
                    .as_ref()
                    .is_some_and(|paid| !paid.inventory_exhausted),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(credits, vec![("alice".into(), 500, true)]);
    assert!(
        decided
            .effects
            .iter()
            .any(|e| matches!(e, Effect::Publish { .. }))
    );
    let mut second_spin = spin(1);
    second_spin.nonce = 1;
    let second = letter(&room, "alice", Body::Settle(second_spin));
    let decided = room.letter(second, None);
    let Body::Credit(credit) = &decided.sent()[0].body else {
        panic!("a credit")
    };
    assert_eq!(credit.amount, 0, "the jackpot's stock ran out");
    assert_eq!(room.stored.post.coins_owed, 500);
}

#[test]
fn a_spin_of_another_wheel_is_sent_back_refused() {
    let mut room = wheel_room(config());
    let mut other = spin(0);
    other.wheel = "other".into();
    let refused = letter(&room, "alice", Body::Settle(other));
    let decided = room.letter(refused, None);
    assert!(decided.events.is_empty());
    assert_eq!(sent_names(&decided), vec![("alice".into(), "spin_refused")]);
}

#[test]
fn a_subscription_for_a_seat_that_is_gone_tells_the_session() {
    let mut room = wheel_room(config());
    let (outbound, _receiver) = crate::connections::Outbound::channel(1, 16, 1 << 16);
    let decided = room.hand_off(HandOff::Subscribe {
        player: "alice".into(),
        outbound,
        position: None,
        welcome: None,
    });
    assert_eq!(sent_names(&decided), vec![("alice".into(), "unseated")]);
}

#[test]
fn a_quiz_runs_to_its_podium_on_its_deadlines_alone() {
    let mut config = config();
    config.quiz.min_players = 2;
    config.quiz.questions_per_game = 2;
    let spec = RoomSpec {
        kind: RoomKind::Quiz,
        variant: "quiz".into(),
        private_code: None,
    };
    let (mut room, _) = Bench::<RoomEntity>::activate(9, env(config), Some(spec));
    join(&mut room, "alice").1.expect("alice joins");
    join(&mut room, "bob").1.expect("bob joins");
    let stage_name = |stage: &Stage| match stage {
        Stage::Lobby => "lobby",
        Stage::Asking { .. } => "asking",
        Stage::Revealing { .. } => "revealing",
        Stage::Podium { .. } => "podium",
    };
    // Nobody answers: from here on only the deadlines move the game.
    let mut stages = vec![stage_name(&room.state().quiz.stage)];
    let mut podium = None;
    for _ in 0..12 {
        let due = RoomEntity::next_deadline(&room.env, room.state(), &room.memory)
            .expect("a quiz under way always has a next deadline");
        assert!(due >= room.now_ms, "deadlines never lie in the past");
        room.now_ms = due;
        let decided = room.with(RoomEntity::on_deadline);
        let stage = stage_name(&room.state().quiz.stage);
        if stages.last() != Some(&stage) {
            stages.push(stage);
        }
        if stage == "podium" {
            podium = Some(decided);
            break;
        }
    }
    // The podium's prizes and the players' activations are letters in its commit.
    let podium = podium.expect("the game reached its podium");
    let mut told: Vec<(String, &str)> = sent_names(&podium);
    told.sort();
    assert!(
        told.contains(&("alice".into(), "game_finished"))
            && told.contains(&("bob".into(), "game_finished")),
        "{told:?}"
    );
    let from_asking: Vec<&str> = stages
        .iter()
        .skip_while(|stage| **stage == "lobby")
        .copied()
        .collect();
    assert_eq!(
        from_asking,
        vec!["asking", "revealing", "asking", "revealing", "podium"],
        "the stages the deadlines went through: {stages:?}"
    );
}

#[test]
fn answers_are_timed_when_they_reached_the_server_not_when_the_room_took_them() {
    let mut config = config();
    config.quiz.min_players = 3;
    config.quiz.question_ms = 10_000;
    let spec = RoomSpec {
        kind: RoomKind::Quiz,
        variant: "quiz".into(),
        private_code: None,
    };
    let (mut room, _) = Bench::<RoomEntity>::activate(9, env(config), Some(spec));
    for player in ["alice", "bob", "carol"] {
        join(&mut room, player).1.expect("joins");
    }
    while !matches!(room.state().quiz.stage, Stage::Asking { .. }) {
        room.now_ms = RoomEntity::next_deadline(&room.env, room.state(), &room.memory)
            .expect("the game starts on its deadlines");
        room.with(RoomEntity::on_deadline);
    }
    let Stage::Asking {
        index, asked_at_ms, ..
    } = room.state().quiz.stage
    else {
        unreachable!("asking")
    };
    // The test bank's answer to question `id` is `id % 3`.
    let correct = room.state().quiz.questions[index as usize] % 3;
    // All three answers are handled 9 s after the question, late in its 10 s; alice's
    // reached the server after 1 s, bob's after 9 s, carol's before the question was
    // asked (a guess sent early): refused, and nothing underflows.
    room.now_ms = asked_at_ms + 9_000;
    for (player, received_ms) in [
        ("alice", asked_at_ms + 1_000),
        ("bob", asked_at_ms + 9_000),
        ("carol", asked_at_ms.saturating_sub(5_000)),
    ] {
        let (reply, _) = port();
        room.hand_off(HandOff::Member {
            request: MemberRequest {
                room: 9,
                player: player.into(),
                received_ms,
                action: MemberAction::Answer {
                    question: index,
                    choice: correct,
                },
            },
            reply,
        });
    }
    let points = |player: &str| room.state().quiz.answers[player].points;
    assert_eq!(
        (points("alice"), points("bob")),
        (
            quiz::base_points(1_000, 10_000) + quiz::streak_bonus(1),
            quiz::base_points(9_000, 10_000) + quiz::streak_bonus(1),
        )
    );
    assert!(
        !room.state().quiz.answers.contains_key("carol"),
        "an answer that arrived before its question is not taken"
    );
}
