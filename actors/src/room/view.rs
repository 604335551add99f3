//! What members see of a room: its snapshot and the wire form of quiz steps. Pure reads
//! of the state (questions come from the bank without their answers until revealed).

use super::quiz::{self, QuizEvent, Stage};
use super::state::RoomState;
use crate::runtime::Env;
use playtree_protocol::{
    Event, PodiumPlace, QuizLobby, QuizPhase, QuizPodium, QuizQuestion, QuizReveal, RoomId,
    RoomKind, RoomSnapshot,
};

fn kind(state: &RoomState) -> RoomKind {
    state.setup.as_ref().map_or(RoomKind::Wheel, |s| s.kind)
}

pub fn snapshot(room: RoomId, state: &RoomState, env: &Env) -> RoomSnapshot {
    RoomSnapshot {
        room,
        kind: kind(state),
        members: state.members.iter().cloned().collect(),
        quiz: (kind(state) == RoomKind::Quiz).then(|| quiz_phase(room, state, env)),
    }
}

fn quiz_phase(room: RoomId, state: &RoomState, env: &Env) -> QuizPhase {
    let quiz = &state.quiz;
    match &quiz.stage {
        Stage::Lobby => QuizPhase::Lobby(lobby(room, state, env)),
        Stage::Asking { index, .. } => match question(room, state, env, *index) {
            Some(question) => QuizPhase::Asking {
                question,
                standings: quiz::standings(quiz),
            },
            None => QuizPhase::Lobby(lobby(room, state, env)),
        },
        Stage::Revealing { index, .. } => QuizPhase::Revealed(reveal(room, state, env, *index)),
        Stage::Podium { .. } => QuizPhase::Finished(podium(room, state, env)),
    }
}

fn lobby(room: RoomId, state: &RoomState, env: &Env) -> QuizLobby {
    QuizLobby {
        room,
        players: state.members.iter().cloned().collect(),
        min_players: env.config.quiz.min_players as u32,
        starts_at_ms: state.quiz.countdown_ends_ms,
    }
}

/// The question as players see it: without its answer.
fn question(room: RoomId, state: &RoomState, env: &Env, index: u32) -> Option<QuizQuestion> {
    let quiz = &state.quiz;
    let Stage::Asking {
        asked_at_ms,
        deadline_ms,
        ..
    } = quiz.stage
    else {
        return None;
    };
    let question = env.questions.get(*quiz.questions.get(index as usize)?)?;
    Some(QuizQuestion {
        room,
        index,
        total: quiz.questions.len() as u32,
        category: question.category.clone(),
        text: question.text.clone(),
        choices: question.choices.clone(),
        asked_at_ms,
        deadline_ms,
    })
}

fn reveal(room: RoomId, state: &RoomState, env: &Env, index: u32) -> QuizReveal {
    let quiz = &state.quiz;
    let correct_choice = quiz
        .questions
        .get(index as usize)
        .and_then(|&id| env.questions.get(id))
        .map_or(0, |question| question.answer);
    let standings = quiz::standings(quiz);
    QuizReveal {
        room,
        index,
        correct_choice,
        points: quiz
            .scores
            .keys()
            .map(|player| {
                (
                    player.clone(),
                    quiz.answers.get(player).map_or(0, |a| a.points),
                )
            })
            .collect(),
        top: standings.iter().take(5).cloned().collect(),
        standings,
    }
}

fn podium(room: RoomId, state: &RoomState, env: &Env) -> QuizPodium {
    let standings = quiz::standings(&state.quiz);
    QuizPodium {
        room,
        places: quiz::prizes_for(&standings, &env.config.quiz.prizes)
            .into_iter()
            .map(|(standing, prize)| PodiumPlace { standing, prize })
            .collect(),
        standings,
    }
}

/// What members see of a quiz step, if anything.
pub fn wire_event(room: RoomId, state: &RoomState, env: &Env, event: &QuizEvent) -> Option<Event> {
    match event {
        QuizEvent::Countdown { .. } | QuizEvent::BackToLobby => {
            Some(Event::QuizLobby(lobby(room, state, env)))
        }
        QuizEvent::QuestionAsked { index, .. } => {
            question(room, state, env, *index).map(Event::Question)
        }
        QuizEvent::QuestionRevealed { index, .. } => {
            Some(Event::Reveal(reveal(room, state, env, *index)))
        }
        QuizEvent::GameFinished { .. } => Some(Event::Podium(podium(room, state, env))),
        QuizEvent::GameStarted { .. } | QuizEvent::AnswerTaken { .. } => None,
    }
}
