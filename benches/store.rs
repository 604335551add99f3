//! The store's cost of durability and the cost of starting up on a large store.
//!
//! Run: `cargo bench --bench store`.
//! - `commit/one_writer`: one commit of one small journal entry, as one entity waiting
//!   for its own event: flush + fdatasync (the default) versus flush only (sled 0.34's
//!   own `sync_file_range`, what acknowledged writes rested on before).
//! - `commit/64_writers`: 64 writers submit at once and share group commits; the time is
//!   for all 64 to be durable.
//! - `startup`: opening a store holding N stored player sessions and reading the outbox
//!   index, which is all that start-up reads (no entity is read eagerly).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use playtree::clock::SystemClock;
use playtree_actors::Store;
use playtree_actors::config::StoreConfig;
use playtree_actors::store::{WriteOp, journal_key, snapshot_key};
use std::sync::Arc;
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    // Invariant: a benchmark without a runtime cannot run at all; failing loudly is right.
    #[allow(clippy::expect_used)]
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn entry(n: u64) -> WriteOp {
    WriteOp::Put(journal_key("session", "bench", n), vec![7u8; 120])
}

#[allow(clippy::expect_used)]
fn commit(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("commit");
    group.measurement_time(Duration::from_secs(8));
    for fdatasync in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig {
            fdatasync,
            ..StoreConfig::default()
        };
        let store = runtime
            .block_on(async { Store::open(dir.path(), &config, Arc::new(SystemClock)) })
            .expect("store");
        let label = if fdatasync { "fdatasync" } else { "flush_only" };
        let mut n = 0u64;
        group.bench_function(BenchmarkId::new("one_writer", label), |b| {
            b.iter(|| {
                n += 1;
                runtime
                    .block_on(store.commit(vec![entry(n)]))
                    .expect("commit");
            })
        });
        group.bench_function(BenchmarkId::new("64_writers", label), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let tickets: Vec<_> = (0..64)
                        .map(|_| {
                            n += 1;
                            store.submit(vec![entry(n)]).expect("queued")
                        })
                        .collect();
                    for ticket in tickets {
                        ticket.durable().await.expect("durable");
                    }
                })
            })
        });
    }
    group.finish();
}

#[allow(clippy::expect_used)]
fn startup(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("startup");
    group.sample_size(10);
    for players in [10u64, 1_000_000] {
        let dir = tempfile::tempdir().expect("temp dir");
        runtime.block_on(async {
            let store = Store::open(dir.path(), &StoreConfig::default(), Arc::new(SystemClock))
                .expect("store");
            for chunk in (0..players).collect::<Vec<_>>().chunks(50_000) {
                let ops = chunk
                    .iter()
                    .map(|player| {
                        WriteOp::Put(
                            snapshot_key("session", &format!("player-{player}")),
                            vec![1u8; 200],
                        )
                    })
                    .collect();
                store.commit(ops).await.expect("fill");
            }
            store.close();
        });
        group.bench_function(
            BenchmarkId::new("open_and_read_outbox_index", players),
            |b| {
                b.iter(|| {
                    runtime.block_on(async {
                        let store =
                            Store::open(dir.path(), &StoreConfig::default(), Arc::new(SystemClock))
                                .expect("store");
                        let owing = store.owing("room").await.expect("index");
                        assert!(owing.is_empty());
                        store.close();
                    })
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, commit, startup);
criterion_main!(benches);
