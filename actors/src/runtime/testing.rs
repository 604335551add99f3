//! Drives a kind's `decide` with no actor, socket, store or tokio runtime: a state, a
//! memory, a stream, and the effects each input produced.

use super::{Behaviour, Decide, Decided, Effect, Env};
use crate::clock::Entropy;
use crate::config::{GameConfig, test_wheel};
use crate::directory::Followers;
use crate::questions::{Question, QuestionBank, QuestionFile};
use crate::stream::Stream;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct SeededEntropy(Mutex<ChaCha20Rng>);

impl Entropy for SeededEntropy {
    fn server_seed(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .fill_bytes(&mut seed);
        seed
    }
}

/// The test wheel, twelve questions whose answer is `id % 3`, seeded entropy.
pub fn env(config: GameConfig) -> Env {
    let questions = (0..12)
        .map(|id| Question {
            category: String::new(),
            text: format!("Question {id}?"),
            choices: vec!["a".into(), "b".into(), "c".into()],
            answer: id % 3,
        })
        .collect();
    let bank = QuestionBank::from_files(vec![(
        "test".into(),
        QuestionFile {
            category: "test".into(),
            questions,
        },
    )])
    .expect("twelve valid questions");
    Env {
        config: Arc::new(config),
        questions: Arc::new(bank),
        entropy: Arc::new(SeededEntropy(Mutex::new(ChaCha20Rng::seed_from_u64(7)))),
    }
}

pub fn config() -> GameConfig {
    GameConfig {
        wheels: vec![test_wheel()],
        ..GameConfig::default()
    }
}

/// One entity, decided on in memory.
pub struct Bench<B: Behaviour> {
    pub id: B::Id,
    pub env: Env,
    pub now_ms: u64,
    pub state: B::State,
    pub memory: B::Memory,
    pub stream: Stream,
    pub followers: Followers,
}

impl<B: Behaviour> Bench<B> {
    /// A new entity, activated with `start`.
    pub fn activate(id: B::Id, env: Env, start: B::Start) -> (Self, Decided<B>) {
        let stream = Stream::new(B::stream(&id), 1, 16);
        let mut bench = Bench {
            id,
            env,
            now_ms: 1_000,
            state: B::State::default(),
            memory: B::Memory::default(),
            stream,
            followers: Followers::default(),
        };
        let decided = bench.with(|cx| {
            B::activate(cx, start).expect("activation");
        });
        (bench, decided)
    }

    pub fn with(&mut self, decision: impl FnOnce(&mut Decide<'_, B>)) -> Decided<B> {
        let mut cx = Decide::detached(
            &self.id,
            &self.env,
            self.now_ms,
            &mut self.state,
            &mut self.memory,
            &mut self.stream,
            &self.followers,
        );
        decision(&mut cx);
        cx.finish()
    }

    pub fn input(&mut self, input: B::Msg) -> Decided<B> {
        self.with(|cx| B::decide(cx, input))
    }
}

/// Sends every reply among `effects` (as the runtime would once they are durable) and
/// returns the others.
pub fn send_replies<B: Behaviour>(effects: Vec<Effect<B>>) -> Vec<Effect<B>> {
    effects
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Reply(reply) => {
                reply();
                None
            }
            other => Some(other),
        })
        .collect()
}

/// A reply port and the receiving end a test reads after [`send_replies`].
pub fn port<T: Send + 'static>() -> (ractor::RpcReplyPort<T>, tokio::sync::oneshot::Receiver<T>) {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    (sender.into(), receiver)
}
