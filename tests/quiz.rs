//! A full quiz with three clients under a manual clock: scores, streaks, leaderboards and
//! prizes exactly as the rules say; late answers refused; nothing sent before a reveal
//! tells the correct choice.

mod common;

use common::{TestServer, WAIT};
use playtree_client::{Client, Events};
use playtree_protocol::{ErrorCode, Event, QuizQuestion, QuizReveal, StreamId};
use std::collections::HashMap;

const QUIZ: &str = r#"
[limits]
frames_per_second = 1000
frames_burst = 1000

[quiz]
min_players = 3
players_max = 10
lobby_countdown_ms = 600000
questions_per_game = 3
question_ms = 10000
reveal_ms = 2000
podium_ms = 5000
seat_grace_ms = 600000
prizes = [500, 300, 100]

[actors]
timer_poll_ms = 10
"#;

/// One client with every room event it has seen, in order.
struct Player {
    client: Client,
    events: Events,
    seen: Vec<Event>,
}

impl Player {
    async fn next<T>(&mut self, mut wanted: impl FnMut(&Event) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let envelope = self.events.next().await.expect("connection open");
                let found = wanted(&envelope.event);
                self.seen.push(envelope.event);
                if let Some(found) = found {
                    return found;
                }
            }
        })
        .await
        .expect("event in time")
    }

    async fn question(&mut self, index: u32) -> QuizQuestion {
        self.next(|event| match event {
            Event::Question(question) if question.index == index => Some(question.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for the reveal of `index`, checking that nothing before it revealed it.
    async fn reveal(&mut self, index: u32) -> QuizReveal {
        let reveal = self
            .next(|event| match event {
                Event::Reveal(reveal) if reveal.index == index => Some(reveal.clone()),
                _ => None,
            })
            .await;
        let before = &self.seen[..self.seen.len() - 1];
        for event in before {
            let harmless = match event {
                // A question carries its text and choices, and no field for the answer.
                Event::Question(_) | Event::MemberJoined { .. } | Event::QuizLobby(_) => true,
                Event::Reveal(earlier) => earlier.index < index,
                _ => false,
            };
            assert!(
                harmless,
                "before reveal {index} a frame told too much: {event:?}"
            );
        }
        reveal
    }
}

fn points(reveal: &QuizReveal) -> HashMap<String, u64> {
    reveal.points.iter().cloned().collect()
}

fn ranking(reveal: &QuizReveal) -> Vec<(String, u32, u64)> {
    reveal
        .standings
        .iter()
        .map(|s| (s.player.clone(), s.rank, s.score))
        .collect()
}

fn row(player: &str, rank: u32, score: u64) -> (String, u32, u64) {
    (player.to_owned(), rank, score)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_quiz_scores_ranks_and_pays_exactly_as_the_rules_say() {
    let (server, clock) = TestServer::start_with_clock(QUIZ).await;
    let bank = playtree::questions::load("").expect("bank");
    let answer_of: HashMap<String, u32> = (0..bank.len() as u32)
        .filter_map(|id| bank.get(id))
        .map(|q| (q.text.clone(), q.answer))
        .collect();
    let mut players = Vec::new();
    for name in ["a", "b", "c"] {
        let (client, events) = server.connect(name).await;
        players.push(Player {
            client,
            events,
            seen: Vec::new(),
        });
    }
    let room = players[0]
        .client
        .quick_join_quiz()
        .await
        .expect("a opens a room")
        .room;
    for player in &players[1..] {
        assert_eq!(
            player.client.quick_join_quiz().await.expect("joins").room,
            room,
            "the open lobby is filled"
        );
    }
    let [a, b, c] = &mut players[..] else {
        unreachable!("three players")
    };
    let correct = |q: &QuizQuestion| answer_of[&q.text];
    let wrong = |q: &QuizQuestion| (answer_of[&q.text] + 1) % q.choices.len() as u32;

    // Question 0: a right after 2 s (900), c right after 3 s (850), b wrong.
    let q0 = a.question(0).await;
    assert_eq!(q0.deadline_ms - q0.asked_at_ms, 10_000);
    assert_eq!(q0.total, 3);
    clock.advance(2_000);
    a.client
        .answer(room, 0, correct(&q0))
        .await
        .expect("a answers");
    clock.advance(1_000);
    c.client
        .answer(room, 0, correct(&q0))
        .await
        .expect("c answers");
    let duplicate = a
        .client
        .answer(room, 0, correct(&q0))
        .await
        .expect_err("one answer per question");
    assert_eq!(duplicate.code(), Some(ErrorCode::AlreadyAnswered));
    b.client
        .answer(room, 0, wrong(&q0))
        .await
        .expect("b answers");
    // Everyone answered: the reveal comes before the deadline.
    let r0 = a.reveal(0).await;
    assert_eq!(r0.correct_choice, correct(&q0));
    assert_eq!(
        points(&r0),
        HashMap::from([("a".into(), 900), ("b".into(), 0), ("c".into(), 850)])
    );
    assert_eq!(
        ranking(&r0),
        vec![row("a", 1, 900), row("c", 2, 850), row("b", 3, 0)]
    );
    assert_eq!(r0.top.len(), 3);
    assert_eq!(b.reveal(0).await, r0);
    assert_eq!(c.reveal(0).await, r0);

    // Question 1: a right after 1 s with a streak of 2 (950 + 100), b right after 5 s
    // (750, streak 1: no bonus), c wrong (streak reset).
    clock.advance(2_000);
    let q1 = a.question(1).await;
    clock.advance(1_000);
    a.client
        .answer(room, 1, correct(&q1))
        .await
        .expect("a answers");
    clock.advance(4_000);
    b.client
        .answer(room, 1, correct(&q1))
        .await
        .expect("b answers");
    c.client
        .answer(room, 1, wrong(&q1))
        .await
        .expect("c answers");
    let r1 = a.reveal(1).await;
    assert_eq!(
        points(&r1),
        HashMap::from([("a".into(), 1050), ("b".into(), 750), ("c".into(), 0)])
    );
    assert_eq!(
        ranking(&r1),
        vec![row("a", 1, 1950), row("c", 2, 850), row("b", 3, 750)]
    );

    // Question 2: a at once with a streak of 3 (1000 + 200); b after the deadline is
    // refused; c does not answer. The reveal comes at the deadline.
    clock.advance(2_000);
    let q2 = a.question(2).await;
    a.client
        .answer(room, 2, correct(&q2))
        .await
        .expect("a answers");
    clock.advance(10_001);
    let late = b
        .client
        .answer(room, 2, correct(&q2))
        .await
        .expect_err("late");
    assert_eq!(late.code(), Some(ErrorCode::AnswerTooLate));
    let r2 = a.reveal(2).await;
    assert_eq!(
        points(&r2),
        HashMap::from([("a".into(), 1200), ("b".into(), 0), ("c".into(), 0)])
    );
    assert_eq!(
        ranking(&r2),
        vec![row("a", 1, 3150), row("c", 2, 850), row("b", 3, 750)]
    );

    // The podium, and its prizes credited once each.
    clock.advance(2_000);
    let podium = a
        .next(|event| match event {
            Event::Podium(podium) => Some(podium.clone()),
            _ => None,
        })
        .await;
    let prizes: Vec<(String, u32, u64)> = podium
        .places
        .iter()
        .map(|p| (p.standing.player.clone(), p.standing.rank, p.prize))
        .collect();
    assert_eq!(
        prizes,
        vec![row("a", 1, 500), row("c", 2, 300), row("b", 3, 100)]
    );
    for (player, prize) in [(&mut *a, 500u64), (&mut *c, 300), (&mut *b, 100)] {
        let credited = player
            .next(|event| match event {
                Event::WalletCredited { amount, .. } => Some(*amount),
                _ => None,
            })
            .await;
        assert_eq!(credited, prize);
        assert_eq!(player.client.wallet().await.expect("wallet"), prize);
    }
    // The return to the lobby pays nothing more. (That a grant redelivered to a wallet
    // that has it pays nothing is the actors' tests' to show: here every grant was
    // acknowledged at once, so nothing is redelivered.)
    clock.advance(10_000);
    a.next(|event| matches!(event, Event::QuizLobby(_)).then_some(()))
        .await;
    assert_eq!(a.client.wallet().await.expect("wallet"), 500);
    assert_eq!(b.client.wallet().await.expect("wallet"), 100);
    // Every event came on the room stream or the player's own stream.
    assert!(a.client.position(&StreamId::Room(room)).is_some());
}
