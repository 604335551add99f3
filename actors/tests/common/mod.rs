//! A hub over a temp store, with a manual clock and seeded entropy.
#![allow(dead_code)]

use playtree_actors::config::{GameConfig, SegmentConfig, WheelConfig};
use playtree_actors::questions::{Question, QuestionBank, QuestionFile};
use playtree_actors::session::{SessionMsg, SessionWelcome};
use playtree_actors::{Clock, Entropy, Hub, Outbound, Store};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

pub const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
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

pub async fn hub_with(config: GameConfig) -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path(), &config.store).expect("store opens");
    hub_on(config, store, dir).await
}

/// A hub over `store` (a backend of the test's choosing); `dir` is only kept alive.
pub async fn hub_on(config: GameConfig, store: Store, dir: TempDir) -> TestHub {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_700_000_000_000)));
    let entropy = Arc::new(SeededEntropy(Mutex::new(ChaCha20Rng::seed_from_u64(7))));
    let hub = Hub::start(
        config,
        store.clone(),
        clock.clone(),
        entropy,
        Arc::new(test_bank()),
    )
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
        .call_session(player, |reply| SessionMsg::Connect {
            outbound: outbound.clone(),
            resume: Vec::new(),
            reply,
        })
        .await
        .expect("answers")
        .expect("connects")
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
