//! A hub over a temp store, with a manual clock and seeded entropy.
#![allow(dead_code)]

use playtree_actors::config::{GameConfig, SegmentConfig, WheelConfig};
use playtree_actors::mail::{Address, Body, Delivery, Letter};
use playtree_actors::questions::{Question, QuestionBank, QuestionFile};
use playtree_actors::session::SessionWelcome;
use playtree_actors::{Clock, Entropy, Hub, Outbound, Store};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

pub const WAIT: Duration = Duration::from_secs(10);

/// A wall clock and a monotonic clock that the test moves: `advance` moves both (time
/// passes), `step` only the wall clock (someone sets it).
#[derive(Debug)]
pub struct ManualClock {
    wall: AtomicU64,
    monotonic: AtomicU64,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            wall: AtomicU64::new(start_ms),
            monotonic: AtomicU64::new(start_ms),
        }
    }

    pub fn advance(&self, ms: u64) {
        self.wall.fetch_add(ms, Ordering::SeqCst);
        self.monotonic.fetch_add(ms, Ordering::SeqCst);
    }

    /// Steps the wall clock by `ms` (either way); time itself does not pass.
    pub fn step(&self, ms: i64) {
        if ms >= 0 {
            self.wall.fetch_add(ms as u64, Ordering::SeqCst);
        } else {
            self.wall.fetch_sub(ms.unsigned_abs(), Ordering::SeqCst);
        }
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.wall.load(Ordering::SeqCst)
    }

    fn monotonic_ms(&self) -> u64 {
        self.monotonic.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct SeededEntropy(Mutex<ChaCha20Rng>);

impl Entropy for SeededEntropy {
    fn server_seed(&self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        self.0.lock().expect("entropy lock").fill_bytes(&mut seed);
        seed
    }
}

pub fn config() -> GameConfig {
    let mut config = GameConfig {
        wheels: vec![WheelConfig {
            id: "classic".into(),
            spins_per_day: 100,
            segments: vec![
                SegmentConfig {
                    label: "ten".into(),
                    prize: 10,
                    weight: 1,
                    inventory: None,
                },
                SegmentConfig {
                    label: "jackpot".into(),
                    prize: 100,
                    weight: 1,
                    inventory: Some(2),
                },
            ],
        }],
        ..GameConfig::default()
    };
    config.store.snapshot_every = 5;
    config
}

/// Twelve questions whose correct choice is `id % 3`.
pub fn test_bank() -> QuestionBank {
    let questions = (0..12)
        .map(|id| Question {
            category: String::new(),
            text: format!("Question {id}?"),
            choices: vec!["a".into(), "b".into(), "c".into()],
            answer: id % 3,
        })
        .collect();
    QuestionBank::from_files(vec![(
        "test".into(),
        QuestionFile {
            category: "Test".into(),
            questions,
        },
    )])
    .expect("valid bank")
}

pub struct TestHub {
    pub hub: Hub,
    pub clock: Arc<ManualClock>,
    pub store: Store,
    pub dir: TempDir,
}

/// When the test clocks start.
pub const START_MS: u64 = 1_700_000_000_000;

pub async fn hub_with(config: GameConfig) -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let clock = Arc::new(ManualClock::new(START_MS));
    let store = Store::open(dir.path(), &config.store, clock.clone()).expect("store opens");
    hub_on(config, store, clock, dir).await
}

/// A hub over `store` (a backend of the test's choosing, on `clock`); `dir` is only
/// kept alive.
pub async fn hub_on(
    config: GameConfig,
    store: Store,
    clock: Arc<ManualClock>,
    dir: TempDir,
) -> TestHub {
    let entropy = Arc::new(SeededEntropy(Mutex::new(ChaCha20Rng::seed_from_u64(7))));
    let hub = Hub::start(config, store.clone(), entropy, Arc::new(test_bank()))
        .await
        .expect("hub starts");
    TestHub {
        hub,
        clock,
        store,
        dir,
    }
}

/// Polls `condition` until it holds, within the wait bound (a condition, not a sleep,
/// decides when the test goes on).
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// Like `eventually`, for a condition that has to await (a store read, a request).
pub async fn eventually_async<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    tokio::time::timeout(WAIT, async {
        while !condition().await {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"));
}

/// Opens a connection for `player` on `outbound`; the session's welcome.
pub async fn connect(test: &TestHub, player: &str, outbound: &Outbound) -> SessionWelcome {
    test.hub
        .connect(player, outbound, Vec::new())
        .await
        .expect("connects")
}

/// A player's request, answered.
pub async fn ask(
    test: &TestHub,
    player: &str,
    request: playtree_protocol::Request,
) -> Result<playtree_protocol::ReplyBody, playtree_protocol::ErrorReply> {
    test.hub.request(player, request, None, 0, false).await
}

/// The player's wallet.
pub async fn wallet(test: &TestHub, player: &str) -> u64 {
    match ask(test, player, playtree_protocol::Request::GetWallet).await {
        Ok(playtree_protocol::ReplyBody::Wallet { balance }) => balance,
        other => panic!("unexpected {other:?}"),
    }
}

/// A letter from `from` to `to` (a sender the test plays), numbered `seq` in a chain.
pub fn letter(from: Address, to: Address, seq: u64, body: Body) -> Letter {
    Letter {
        from,
        to,
        seq,
        previous: seq - 1,
        sent_ms: START_MS,
        body,
    }
}

/// A credit of `amount` from room `room` to `player`, its `seq`-th letter to them.
pub fn credit(room: u64, player: &str, seq: u64, amount: u64) -> Letter {
    letter(
        Address::Room(room),
        Address::Session(player.into()),
        seq,
        Body::Credit(playtree_actors::mail::Credit {
            amount,
            reason: "test".into(),
            spin: None,
            news: Vec::new(),
        }),
    )
}

/// Delivers a letter as the hub carries an entity's.
pub fn deliver(test: &TestHub, letter: Letter) {
    test.hub.deliver(Delivery {
        letter,
        attachment: None,
    });
}

/// The methods of a `StoreBackend` wrapper that only pass through to the backend in
/// field `$inner`: scans, the last key, ids. A wrapper writes its own `get` and
/// `write_durable`, where its test does something.
#[allow(unused_macros)]
macro_rules! delegate_backend_scans {
    ($inner:ident) => {
        fn scan_prefix(
            &self,
            prefix: &[u8],
        ) -> Result<playtree_actors::store::Pairs, playtree_actors::StoreError> {
            self.$inner.scan_prefix(prefix)
        }

        fn scan_from(
            &self,
            prefix: &[u8],
            start: &[u8],
            limit: usize,
        ) -> Result<playtree_actors::store::Pairs, playtree_actors::StoreError> {
            self.$inner.scan_from(prefix, start, limit)
        }

        fn last_with_prefix(
            &self,
            prefix: &[u8],
        ) -> Result<Option<Vec<u8>>, playtree_actors::StoreError> {
            self.$inner.last_with_prefix(prefix)
        }

        fn generate_id(&self) -> Result<u64, playtree_actors::StoreError> {
            self.$inner.generate_id()
        }
    };
}
#[allow(unused_imports)]
pub(crate) use delegate_backend_scans;
