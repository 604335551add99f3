//! Drives a kind's decisions with no actor, socket, store or tokio runtime: a state, a
//! memory, a stream, and what each input produced (events, letters, effects).

use super::durable::Stored;
use super::{Behaviour, Decide, Decided, Effect, Env};
use crate::clock::Entropy;
use crate::codes::CodeMaker;
use crate::config::{GameConfig, test_wheel};
use crate::directory::Followers;
use crate::mail::{Address, Attachment, HandOff, Letter};
use crate::matchmaker::Matchmaker;
use crate::questions::{Question, QuestionBank, QuestionFile};
use crate::seeds::SeedMaker;
use crate::store::StoreError;
use crate::stream::Stream;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// Numbers counted up from 1000.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl super::Ids for Counter {
    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(1_000 + self.0.fetch_add(1, Ordering::Relaxed))
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
        matchmaker: Arc::new(Matchmaker::default()),
        codes: Arc::new(CodeMaker::new([9; 32])),
        seeds: Arc::new(SeedMaker::new([8; 32])),
        ids: Arc::new(Counter::default()),
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
    pub address: Address,
    pub env: Env,
    pub now_ms: u64,
    pub stored: Stored<B::State>,
    pub dirty: BTreeSet<String>,
    pub memory: B::Memory,
    pub stream: Stream,
    pub followers: Followers,
}

impl<B: Behaviour> Bench<B> {
    /// A new entity, activated with `start`.
    pub fn activate(id: B::Id, env: Env, start: B::Start) -> (Self, Decided<B>) {
        let stream = Stream::new(B::stream(&id), 1, 16);
        let address = B::address(&id);
        let mut bench = Bench {
            id,
            address,
            env,
            now_ms: 1_000,
            stored: Stored::default(),
            dirty: BTreeSet::new(),
            memory: B::Memory::default(),
            stream,
            followers: Followers::default(),
        };
        let decided = bench.with(|cx| {
            B::activate(cx, start).expect("activation");
        });
        (bench, decided)
    }

    pub fn state(&self) -> &B::State {
        &self.stored.state
    }

    pub fn with(&mut self, decision: impl FnOnce(&mut Decide<'_, B>)) -> Decided<B> {
        let mut cx = Decide::detached(
            &self.id,
            &self.address,
            &self.env,
            self.now_ms,
            &mut self.stored,
            &mut self.dirty,
            &mut self.memory,
            &mut self.stream,
            &self.followers,
        );
        decision(&mut cx);
        cx.finish()
    }

    pub fn input(&mut self, input: B::Input) -> Decided<B> {
        self.with(|cx| B::decide(cx, input))
    }

    /// Takes a letter as the runtime does: recorded, then the kind's.
    pub fn letter(&mut self, letter: Letter, attachment: Option<Attachment>) -> Decided<B> {
        self.with(|cx| {
            cx.record(&letter).expect("recorded");
            B::receive(cx, letter, attachment);
        })
    }

    pub fn hand_off(&mut self, hand_off: HandOff) -> Decided<B> {
        self.with(|cx| B::handed(cx, hand_off))
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
