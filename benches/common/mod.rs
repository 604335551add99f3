//! What the in-process benchmarks share: a hub on the real store, clock and entropy,
//! with the one-segment wheel they spin.

use playtree::clock::{OsEntropy, SystemClock};
use playtree_actors::config::{GameConfig, SegmentConfig, WheelConfig};
use playtree_actors::{Hub, Store};
use std::sync::Arc;

/// A wheel named "bench" whose one segment always pays 1 coin.
pub fn bench_wheel(spins_per_day: u32) -> WheelConfig {
    WheelConfig {
        id: "bench".into(),
        spins_per_day,
        segments: vec![SegmentConfig {
            label: "one".into(),
            prize: 1,
            weight: 1,
            inventory: None,
        }],
    }
}

/// A hub started on `config` with its store in `dir`. Panics (the benchmark cannot run)
/// if the store or the hub does not start.
pub async fn start_hub(dir: &std::path::Path, config: GameConfig) -> Hub {
    let store = Store::open(dir, &config.store, Arc::new(SystemClock)).expect("store");
    let questions = Arc::new(playtree::questions::load("").expect("questions"));
    Hub::start(config, store, Arc::new(OsEntropy), questions)
        .await
        .expect("hub")
}
