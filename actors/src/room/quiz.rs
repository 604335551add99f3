//! The quiz game: state, events, the pure `apply`, and pure decisions that take `now`.
//!
//! A game: lobby → (min players, or countdown over) → for each question: ask, take
//! answers until the deadline (or until every player answered), reveal → podium → lobby.

use crate::config::QuizConfig;
use crate::questions::QuestionBank;
use playtree_protocol::{ErrorCode, ErrorReply, Standing};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuizState {
    pub game_no: u64,
    pub stage: Stage,
    /// Question ids (into the bank) of the current game, in asking order.
    pub questions: Vec<u32>,
    /// Everyone who started the current game, including players who left since.
    pub scores: BTreeMap<String, Score>,
    /// Answers to the current question.
    pub answers: BTreeMap<String, TakenAnswer>,
    pub countdown_ends_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    #[default]
    Lobby,
    Asking {
        index: u32,
        asked_at_ms: u64,
        deadline_ms: u64,
    },
    Revealing {
        index: u32,
        until_ms: u64,
    },
    Podium {
        until_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    pub score: u64,
    pub streak: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenAnswer {
    pub choice: u32,
    pub correct: bool,
    /// Points this answer earns at the reveal (0 when wrong).
    pub points: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuizEvent {
    Countdown {
        ends_ms: Option<u64>,
    },
    GameStarted {
        game_no: u64,
        questions: Vec<u32>,
        players: Vec<String>,
    },
    QuestionAsked {
        index: u32,
        asked_at_ms: u64,
        deadline_ms: u64,
    },
    AnswerTaken {
        player: String,
        answer: TakenAnswer,
    },
    QuestionRevealed {
        index: u32,
        until_ms: u64,
    },
    GameFinished {
        until_ms: u64,
    },
    BackToLobby,
}

pub fn apply(state: &mut QuizState, event: &QuizEvent) {
    match event {
        QuizEvent::Countdown { ends_ms } => state.countdown_ends_ms = *ends_ms,
        QuizEvent::GameStarted {
            game_no,
            questions,
            players,
        } => {
            state.game_no = *game_no;
            state.questions = questions.clone();
            state.scores = players
                .iter()
                .map(|p| (p.clone(), Score::default()))
                .collect();
            state.answers.clear();
            state.countdown_ends_ms = None;
        }
        QuizEvent::QuestionAsked {
            index,
            asked_at_ms,
            deadline_ms,
        } => {
            state.answers.clear();
            state.stage = Stage::Asking {
                index: *index,
                asked_at_ms: *asked_at_ms,
                deadline_ms: *deadline_ms,
            };
        }
        QuizEvent::AnswerTaken { player, answer } => {
            state.answers.insert(player.clone(), *answer);
        }
        QuizEvent::QuestionRevealed { index, until_ms } => {
            for (player, score) in state.scores.iter_mut() {
                match state.answers.get(player) {
                    Some(answer) if answer.correct => {
                        score.score += answer.points;
                        score.streak += 1;
                    }
                    _ => score.streak = 0,
                }
            }
            state.stage = Stage::Revealing {
                index: *index,
                until_ms: *until_ms,
            };
        }
        QuizEvent::GameFinished { until_ms } => {
            state.stage = Stage::Podium {
                until_ms: *until_ms,
            };
        }
        QuizEvent::BackToLobby => {
            state.stage = Stage::Lobby;
            state.questions.clear();
            state.scores.clear();
            state.answers.clear();
            state.countdown_ends_ms = None;
        }
    }
}

/// round(1000 × (1 − (t/T)/2)) for a correct answer after `t_ms` of `total_ms`, in
/// integers: (2000T − 1000t + T) / 2T, which rounds halves up.
pub fn base_points(t_ms: u64, total_ms: u64) -> u64 {
    let total = total_ms.max(1);
    let t = t_ms.min(total);
    (2000 * total - 1000 * t + total) / (2 * total)
}

/// +100 for a streak of 2, rising by 100 per further correct answer, up to +500.
pub fn streak_bonus(streak: u32) -> u64 {
    if streak < 2 {
        0
    } else {
        (100 * u64::from(streak - 1)).min(500)
    }
}

/// Standings: highest score first; equal scores share a rank (1, 1, 3, ...); ties are
/// listed by player id so the order is deterministic.
pub fn standings(state: &QuizState) -> Vec<Standing> {
    let mut rows: Vec<(&String, u64)> = state.scores.iter().map(|(p, s)| (p, s.score)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut standings: Vec<Standing> = Vec::with_capacity(rows.len());
    for (position, (player, score)) in rows.into_iter().enumerate() {
        let rank = match standings.last() {
            Some(previous) if previous.score == score => previous.rank,
            _ => position as u32 + 1,
        };
        standings.push(Standing {
            player: player.clone(),
            rank,
            score,
        });
    }
    standings
}

/// The prize of each standing: `prizes[rank - 1]`, for players who scored.
pub fn prizes_for(standings: &[Standing], prizes: &[u64]) -> Vec<(Standing, u64)> {
    standings
        .iter()
        .filter(|standing| standing.score > 0)
        .filter_map(|standing| {
            let prize = *prizes.get(standing.rank as usize - 1)?;
            (prize > 0).then(|| (standing.clone(), prize))
        })
        .collect()
}

/// A uniform index below `n`, without modulo bias (rejection sampling).
fn uniform_below(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    let zone = u64::MAX - (u64::MAX % n + 1) % n;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % n;
        }
    }
}

/// The questions of game `game_no` in a room seeded with `room_seed`: a Fisher–Yates
/// shuffle of the bank by ChaCha20, so a room's games are reproducible from its seed.
pub fn shuffle_questions(room_seed: u64, game_no: u64, bank_len: usize, count: usize) -> Vec<u32> {
    let mut rng =
        ChaCha20Rng::seed_from_u64(room_seed ^ game_no.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut ids: Vec<u32> = (0..bank_len as u32).collect();
    for i in (1..ids.len()).rev() {
        let j = uniform_below(&mut rng, i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    ids.truncate(count);
    ids
}

/// What the clock calls for now. `players` are the members present in the room.
/// The next moment [`advance`] may have something to do without any new input: the end
/// of the lobby countdown, of the open question, of the reveal or of the podium.
pub fn next_deadline(state: &QuizState) -> Option<u64> {
    match &state.stage {
        Stage::Lobby => state.countdown_ends_ms,
        Stage::Asking { deadline_ms, .. } => Some(*deadline_ms),
        Stage::Revealing { until_ms, .. } | Stage::Podium { until_ms } => Some(*until_ms),
    }
}

pub fn advance(
    state: &QuizState,
    now_ms: u64,
    config: &QuizConfig,
    players: &BTreeSet<String>,
    room_seed: u64,
    bank: &QuestionBank,
) -> Vec<QuizEvent> {
    match &state.stage {
        Stage::Lobby => {
            if players.is_empty() {
                return match state.countdown_ends_ms {
                    Some(_) => vec![QuizEvent::Countdown { ends_ms: None }],
                    None => vec![],
                };
            }
            let countdown_over = state.countdown_ends_ms.is_some_and(|ends| now_ms >= ends);
            if players.len() >= config.min_players || countdown_over {
                let game_no = state.game_no + 1;
                let count = config.questions_per_game.min(bank.len());
                if count == 0 {
                    return vec![];
                }
                vec![
                    QuizEvent::GameStarted {
                        game_no,
                        questions: shuffle_questions(room_seed, game_no, bank.len(), count),
                        players: players.iter().cloned().collect(),
                    },
                    QuizEvent::QuestionAsked {
                        index: 0,
                        asked_at_ms: now_ms,
                        deadline_ms: now_ms + config.question_ms,
                    },
                ]
            } else if state.countdown_ends_ms.is_none() {
                vec![QuizEvent::Countdown {
                    ends_ms: Some(now_ms + config.lobby_countdown_ms),
                }]
            } else {
                vec![]
            }
        }
        Stage::Asking {
            index, deadline_ms, ..
        } => {
            let everyone_answered = state
                .scores
                .keys()
                .filter(|player| players.contains(*player))
                .all(|player| state.answers.contains_key(player));
            if now_ms >= *deadline_ms || everyone_answered {
                vec![QuizEvent::QuestionRevealed {
                    index: *index,
                    until_ms: now_ms + config.reveal_ms,
                }]
            } else {
                vec![]
            }
        }
        Stage::Revealing { index, until_ms } => {
            if now_ms < *until_ms {
                vec![]
            } else if (*index as usize) + 1 < state.questions.len() {
                vec![QuizEvent::QuestionAsked {
                    index: index + 1,
                    asked_at_ms: now_ms,
                    deadline_ms: now_ms + config.question_ms,
                }]
            } else {
                vec![QuizEvent::GameFinished {
                    until_ms: now_ms + config.podium_ms,
                }]
            }
        }
        Stage::Podium { until_ms } => {
            if now_ms >= *until_ms {
                vec![QuizEvent::BackToLobby]
            } else {
                vec![]
            }
        }
    }
}

/// Takes `player`'s answer to question `index`, timed by the server at `now_ms`.
pub fn answer(
    state: &QuizState,
    player: &str,
    index: u32,
    choice: u32,
    now_ms: u64,
    config: &QuizConfig,
    bank: &QuestionBank,
) -> Result<QuizEvent, ErrorReply> {
    let too_late = |index: u32| {
        ErrorReply::new(
            ErrorCode::AnswerTooLate,
            format!("question {index} is closed"),
        )
    };
    let (open, asked_at_ms, deadline_ms) = match state.stage {
        Stage::Asking {
            index: open,
            asked_at_ms,
            deadline_ms,
        } => (open, asked_at_ms, deadline_ms),
        // A question that was asked and has closed: the answer came too late, whether or
        // not the reveal has happened yet.
        Stage::Revealing { index: closed, .. } if index <= closed => return Err(too_late(index)),
        Stage::Podium { .. } if (index as usize) < state.questions.len() => {
            return Err(too_late(index));
        }
        _ => {
            return Err(ErrorReply::new(
                ErrorCode::NoOpenQuestion,
                "no question is open",
            ));
        }
    };
    if index < open {
        return Err(too_late(index));
    }
    if index == open && now_ms < asked_at_ms {
        // Read off its connection before the question existed: a guess, not an answer.
        return Err(ErrorReply::new(
            ErrorCode::NoOpenQuestion,
            format!("question {index} was not open yet when the answer arrived"),
        ));
    }
    if index != open {
        return Err(ErrorReply::new(
            ErrorCode::NoOpenQuestion,
            format!("question {index} is not open; question {open} is"),
        ));
    }
    let Some(score) = state.scores.get(player) else {
        return Err(ErrorReply::new(
            ErrorCode::GameInProgress,
            "you joined after this game started; you play in the next one",
        ));
    };
    if state.answers.contains_key(player) {
        return Err(ErrorReply::new(
            ErrorCode::AlreadyAnswered,
            format!("you already answered question {index}"),
        ));
    }
    if now_ms > deadline_ms {
        return Err(ErrorReply::new(
            ErrorCode::AnswerTooLate,
            format!(
                "question {index} closed {} ms ago",
                now_ms.saturating_sub(deadline_ms)
            ),
        ));
    }
    let question = state
        .questions
        .get(index as usize)
        .and_then(|&id| bank.get(id))
        .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "question missing from the bank"))?;
    if choice as usize >= question.choices.len() {
        return Err(ErrorReply::new(
            ErrorCode::InvalidChoice,
            format!("choose 0 to {}", question.choices.len() - 1),
        ));
    }
    let correct = choice == question.answer;
    let points = if correct {
        base_points(now_ms.saturating_sub(asked_at_ms), config.question_ms)
            + streak_bonus(score.streak + 1)
    } else {
        0
    };
    Ok(QuizEvent::AnswerTaken {
        player: player.to_owned(),
        answer: TakenAnswer {
            choice,
            correct,
            points,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::questions::{Question, QuestionFile};

    fn bank(n: u32) -> QuestionBank {
        let questions = (0..n)
            .map(|i| Question {
                category: String::new(),
                text: format!("q{i}"),
                choices: vec!["a".into(), "b".into(), "c".into()],
                answer: i % 3,
            })
            .collect();
        QuestionBank::from_files(vec![(
            "t".into(),
            QuestionFile {
                category: "T".into(),
                questions,
            },
        )])
        .expect("bank")
    }

    #[test]
    fn the_score_formula_and_streak_bonus_match_the_rules() {
        assert_eq!(base_points(0, 10_000), 1000);
        assert_eq!(base_points(10_000, 10_000), 500);
        assert_eq!(base_points(5_000, 10_000), 750);
        assert_eq!(base_points(1_234, 10_000), 938); // 938.3
        assert_eq!(base_points(1_000, 3_000), 833); // 833.33
        assert_eq!(base_points(1, 4), 875); // exactly 875
        assert_eq!(base_points(3, 8), 813); // 812.5 rounds up
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 7, 9].map(streak_bonus),
            [0, 100, 200, 300, 400, 500, 500, 500]
        );
    }

    #[test]
    fn standings_share_ranks_on_ties() {
        let mut state = QuizState::default();
        for (player, score) in [("a", 50), ("b", 90), ("c", 50), ("d", 10)] {
            state
                .scores
                .insert(player.into(), Score { score, streak: 0 });
        }
        let ranks: Vec<(String, u32)> = standings(&state)
            .into_iter()
            .map(|s| (s.player, s.rank))
            .collect();
        assert_eq!(
            ranks,
            [("b", 1), ("a", 2), ("c", 2), ("d", 4)].map(|(p, r)| (p.to_string(), r))
        );
        let prizes = prizes_for(&standings(&state), &[500, 300, 100]);
        assert_eq!(
            prizes
                .iter()
                .map(|(s, p)| (s.player.as_str(), *p))
                .collect::<Vec<_>>(),
            [("b", 500), ("a", 300), ("c", 300)]
        );
    }

    #[test]
    fn shuffles_are_reproducible_from_the_seed_and_use_distinct_questions() {
        let first = shuffle_questions(42, 1, 60, 10);
        assert_eq!(first, shuffle_questions(42, 1, 60, 10));
        assert_ne!(first, shuffle_questions(42, 2, 60, 10));
        assert_ne!(first, shuffle_questions(43, 1, 60, 10));
        let distinct: BTreeSet<_> = first.iter().collect();
        assert_eq!(distinct.len(), 10);
    }

    #[test]
    fn answers_are_checked_and_timed_by_the_server() {
        let bank = bank(5);
        let config = QuizConfig {
            question_ms: 10_000,
            min_players: 2,
            ..QuizConfig::default()
        };
        let players: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let mut state = QuizState::default();
        for event in advance(&state, 1_000, &config, &players, 7, &bank) {
            apply(&mut state, &event);
        }
        assert!(matches!(
            state.stage,
            Stage::Asking {
                index: 0,
                asked_at_ms: 1_000,
                deadline_ms: 11_000
            }
        ));
        let correct = bank.get(state.questions[0]).expect("question").answer;
        let event = answer(&state, "a", 0, correct, 3_000, &config, &bank).expect("taken");
        assert_eq!(
            event,
            QuizEvent::AnswerTaken {
                player: "a".into(),
                answer: TakenAnswer {
                    choice: correct,
                    correct: true,
                    points: 900
                }
            }
        );
        apply(&mut state, &event);
        let code = |result: Result<QuizEvent, ErrorReply>| result.map_err(|e| e.code).err();
        assert_eq!(
            code(answer(&state, "a", 0, correct, 3_001, &config, &bank)),
            Some(ErrorCode::AlreadyAnswered)
        );
        assert_eq!(
            code(answer(&state, "b", 1, 0, 3_001, &config, &bank)),
            Some(ErrorCode::NoOpenQuestion)
        );
        assert_eq!(
            code(answer(&state, "b", 0, 7, 3_001, &config, &bank)),
            Some(ErrorCode::InvalidChoice)
        );
        assert_eq!(
            code(answer(&state, "b", 0, 0, 11_001, &config, &bank)),
            Some(ErrorCode::AnswerTooLate)
        );
        assert_eq!(
            code(answer(&state, "z", 0, 0, 3_001, &config, &bank)),
            Some(ErrorCode::GameInProgress)
        );
        // Until the deadline, or until everyone answered, nothing is revealed.
        assert!(advance(&state, 10_999, &config, &players, 7, &bank).is_empty());
        let wrong = (correct + 1) % 3;
        let event = answer(&state, "b", 0, wrong, 4_000, &config, &bank).expect("taken");
        apply(&mut state, &event);
        let reveal = advance(&state, 4_000, &config, &players, 7, &bank);
        assert_eq!(
            reveal,
            vec![QuizEvent::QuestionRevealed {
                index: 0,
                until_ms: 4_000 + config.reveal_ms
            }]
        );
        apply(&mut state, &reveal[0]);
        assert_eq!(
            state.scores["a"],
            Score {
                score: 900,
                streak: 1
            }
        );
        assert_eq!(
            state.scores["b"],
            Score {
                score: 0,
                streak: 0
            }
        );
    }

    #[test]
    fn a_player_who_leaves_keeps_their_score_and_is_not_waited_for() {
        let bank = bank(5);
        let config = QuizConfig {
            min_players: 2,
            ..QuizConfig::default()
        };
        let both: BTreeSet<String> = ["a", "b"].map(String::from).into();
        let mut state = QuizState::default();
        for event in advance(&state, 0, &config, &both, 3, &bank) {
            apply(&mut state, &event);
        }
        let correct = bank.get(state.questions[0]).expect("question").answer;
        let event = answer(&state, "b", 0, correct, 0, &config, &bank).expect("taken");
        apply(&mut state, &event);
        // b leaves; a alone answering is enough to reveal, and b's points still count.
        let only_a: BTreeSet<String> = ["a"].map(String::from).into();
        let event = answer(&state, "a", 0, (correct + 1) % 3, 10, &config, &bank).expect("taken");
        apply(&mut state, &event);
        let reveal = advance(&state, 10, &config, &only_a, 3, &bank);
        assert!(matches!(
            reveal[..],
            [QuizEvent::QuestionRevealed { index: 0, .. }]
        ));
        apply(&mut state, &reveal[0]);
        let ranks: Vec<(String, u64)> = standings(&state)
            .into_iter()
            .map(|s| (s.player, s.score))
            .collect();
        assert_eq!(ranks, vec![("b".to_string(), 1000), ("a".to_string(), 0)]);
    }

    #[test]
    fn a_lobby_starts_at_min_players_or_when_the_countdown_ends() {
        let bank = bank(5);
        let config = QuizConfig {
            min_players: 3,
            lobby_countdown_ms: 5_000,
            ..QuizConfig::default()
        };
        let mut state = QuizState::default();
        let one: BTreeSet<String> = ["a"].map(String::from).into();
        let countdown = advance(&state, 100, &config, &one, 1, &bank);
        assert_eq!(
            countdown,
            vec![QuizEvent::Countdown {
                ends_ms: Some(5_100)
            }]
        );
        apply(&mut state, &countdown[0]);
        assert!(advance(&state, 5_099, &config, &one, 1, &bank).is_empty());
        assert!(matches!(
            advance(&state, 5_100, &config, &one, 1, &bank)[0],
            QuizEvent::GameStarted { .. }
        ));
        let three: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
        assert!(matches!(
            advance(&state, 200, &config, &three, 1, &bank)[0],
            QuizEvent::GameStarted { .. }
        ));
    }
}
