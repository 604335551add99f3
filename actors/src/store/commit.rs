//! The group-commit task: applies every waiting writer's ops in one sled batch, flushes
//! once, and resolves all their tickets with the result.

use super::{StoreError, WriteOp};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug)]
pub(super) struct CommitRequest {
    pub ops: Vec<WriteOp>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

pub(super) async fn run(
    db: sled::Db,
    mut requests: mpsc::Receiver<CommitRequest>,
    batch_max: usize,
    flushes: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(batch_max);
    while requests.recv_many(&mut batch, batch_max).await > 0 {
        // Flush latency is a measurement of the machine for the metrics, not an input to
        // any decision, so reading the clock here does not break replayability.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let mut sled_batch = sled::Batch::default();
        for request in &batch {
            for op in &request.ops {
                match op {
                    WriteOp::Put(key, value) => sled_batch.insert(key.as_slice(), value.as_slice()),
                    WriteOp::Delete(key) => sled_batch.remove(key.as_slice()),
                }
            }
        }
        let result = match db.apply_batch(sled_batch) {
            Ok(()) => db.flush_async().await.map(|_| ()).map_err(StoreError::from),
            Err(error) => Err(StoreError::from(error)),
        };
        flushes.fetch_add(1, Ordering::Relaxed);
        metrics::histogram!("playtree_store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("playtree_store_commit_batch_size").record(batch.len() as f64);
        if let Err(error) = &result {
            tracing::error!(%error, "store commit failed");
            metrics::counter!("playtree_store_commit_failures_total").increment(1);
        }
        for request in batch.drain(..) {
            // A writer that stopped waiting has nothing left to tell.
            let _ = request.done.send(result.clone());
        }
    }
}
