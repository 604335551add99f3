//! A room's decisions, with no actor, store or socket.

use super::*;
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

fn join(
    room: &mut Bench<RoomEntity>,
    player: &str,
) -> (Vec<RoomEvent>, Result<RoomView, RoomError>) {
    let (reply, mut answer) = port();
    let decided = room.input(RoomMsg::Join {
        player: player.into(),
        outbounds: Vec::new(),
        reply,
    });
    send_replies(decided.effects);
    (decided.events, answer.try_recv().expect("join answered"))
}

fn spin(nonce: u64) -> PendingSpin {
    PendingSpin {
        room: 7,
        wheel: "classic".into(),
        nonce,
        client_seed: "seed".into(),
        commitment: commitment(&[1; 32]),
        segment: 0,
    }
}

#[test]
fn a_join_is_journaled_published_listed_and_answered() {
    let mut room = wheel_room(config());
    let (reply, mut answer) = port();
    let decided = room.input(RoomMsg::Join {
        player: "alice".into(),
        outbounds: Vec::new(),
        reply,
    });
    assert_eq!(
        decided.events,
        vec![RoomEvent::MemberJoined {
            player: "alice".into()
        }]
    );
    assert!(matches!(decided.effects[0], Effect::Publish { .. }));
    assert!(decided.effects.iter().any(|effect| matches!(
        effect,
        Effect::Index(RoomEffect::List(Listing {
            members: 1,
            open: true,
            ..
        }))
    )));
    // Nothing is answered before the runtime releases the effects (after durability).
    assert!(answer.try_recv().is_err());
    send_replies(decided.effects);
    let view = answer.try_recv().expect("answered").expect("joined");
    assert_eq!(view.members, vec!["alice".to_owned()]);
    assert_eq!(room.stream.seq(), 1);
}

#[test]
fn a_refused_join_changes_nothing() {
    let mut config = config();
    config.rooms.wheel_players_max = 1;
    let mut room = wheel_room(config);
    join(&mut room, "alice").1.expect("alice joins");
    let before = (room.state.clone(), room.stream.seq());
    let (events, answer) = join(&mut room, "bob");
    assert_eq!(answer.err(), Some(RoomError::Full { capacity: 1 }));
    assert!(events.is_empty());
    assert_eq!((room.state.clone(), room.stream.seq()), before);
}

#[test]
fn chat_is_published_not_journaled_and_only_for_members() {
    let mut room = wheel_room(config());
    join(&mut room, "alice").1.expect("alice joins");
    let (reply, mut answer) = port();
    let decided = room.input(RoomMsg::Chat {
        player: "mallory".into(),
        text: "hi".into(),
        reply,
    });
    assert!(decided.events.is_empty());
    send_replies(decided.effects);
    let refused = answer
        .try_recv()
        .expect("answered")
        .expect_err("not a member");
    assert_eq!(refused.code, ErrorCode::NotInRoom);

    let (reply, mut answer) = port();
    let decided = room.input(RoomMsg::Chat {
        player: "alice".into(),
        text: "hi".into(),
        reply,
    });
    assert!(decided.events.is_empty());
    assert!(matches!(decided.effects[0], Effect::Publish { .. }));
    send_replies(decided.effects);
    assert!(matches!(answer.try_recv(), Ok(Ok(ReplyBody::Sent))));
}

#[test]
fn a_settled_grant_is_redelivered_at_its_deadline_until_acknowledged() {
    let mut room = wheel_room(config());
    join(&mut room, "alice").1.expect("alice joins");
    let (reply, mut answer) = port();
    let decided = room.input(RoomMsg::Settle {
        player: "alice".into(),
        spin: spin(0),
        reply,
    });
    assert!(matches!(
        decided.events[..],
        [RoomEvent::SpinSettled { .. }]
    ));
    send_replies(decided.effects);
    let grant = answer.try_recv().expect("answered").expect("settled").grant;
    assert_eq!(grant.beneficiary, "alice");

    let due = RoomEntity::next_deadline(&room.env, &room.state, &room.memory).expect("owes");
    room.now_ms = due;
    let decided = room.input(RoomMsg::Deadline);
    let redelivered: Vec<_> = decided
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::ToSession {
                player,
                message: SessionMsg::Credit { grant, .. },
            } => Some((player.clone(), grant.id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(redelivered, vec![("alice".to_owned(), grant.id.clone())]);

    let decided = room.input(RoomMsg::GrantAcked {
        grant: grant.id.clone(),
    });
    assert_eq!(
        decided.events,
        vec![RoomEvent::GrantDelivered { grant: grant.id }]
    );
    assert_eq!(
        RoomEntity::next_deadline(&room.env, &room.state, &room.memory),
        None
    );
    assert!(RoomEntity::may_passivate(&room.state, &room.memory));
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
    let mut stages = vec![stage_name(&room.state.quiz.stage)];
    for _ in 0..12 {
        let due = RoomEntity::next_deadline(&room.env, &room.state, &room.memory)
            .expect("a quiz under way always has a next deadline");
        assert!(due >= room.now_ms, "deadlines never lie in the past");
        room.now_ms = due;
        room.input(RoomMsg::Deadline);
        let stage = stage_name(&room.state.quiz.stage);
        if stages.last() != Some(&stage) {
            stages.push(stage);
        }
        if stage == "podium" {
            break;
        }
    }
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
    while !matches!(room.state.quiz.stage, Stage::Asking { .. }) {
        room.now_ms = RoomEntity::next_deadline(&room.env, &room.state, &room.memory)
            .expect("the game starts on its deadlines");
        room.input(RoomMsg::Deadline);
    }
    let Stage::Asking {
        index, asked_at_ms, ..
    } = room.state.quiz.stage
    else {
        unreachable!("asking")
    };
    // The test bank's answer to question `id` is `id % 3`.
    let correct = room.state.quiz.questions[index as usize] % 3;
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
        room.input(RoomMsg::Answer {
            player: player.into(),
            question: index,
            choice: correct,
            received_ms,
            reply,
        });
    }
    let points = |player: &str| room.state.quiz.answers[player].points;
    assert_eq!(
        (points("alice"), points("bob")),
        (
            quiz::base_points(1_000, 10_000) + quiz::streak_bonus(1),
            quiz::base_points(9_000, 10_000) + quiz::streak_bonus(1),
        )
    );
    assert!(
        !room.state.quiz.answers.contains_key("carol"),
        "an answer that arrived before its question is not taken"
    );
}
