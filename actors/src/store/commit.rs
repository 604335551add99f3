//! The group-commit thread: the store's only writer. It takes every waiting request,
//! checks each one's fence, writes the accepted ops in one durable batch, and resolves
//! all their tickets with the result.
//!
//! Fail-stop: when a write fails its outcome is unknown (the batch may still be on disk),
//! so no ticket is told "nothing changed". Every waiting and later request is answered
//! [`StoreError::FailStopped`] and the failure is published for the server, which exits;
//! recovery replays the journal.

use super::backend::StoreBackend;
use super::{StoreError, WriteOp};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// An entity's fence: its incarnation and the number of its last journal record.
pub type FenceValue = (u64, u64);

/// A precondition on an entity's fence, checked by the commit thread right before the
/// write: the request is refused unless the stored fence (`(0, 0)` when absent) is
/// `expect`; the same batch then stores `set`. It is JetStream's "expected last
/// sequence": an incarnation that another has superseded, or whose journal moved on
/// without it, can never write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub expect: FenceValue,
    pub set: FenceValue,
    /// Names the fenced entity in the error.
    pub owner: String,
}

#[derive(Debug)]
pub struct CommitRequest {
    pub fence: Option<Fence>,
    pub ops: Vec<WriteOp>,
    pub done: oneshot::Sender<Result<(), StoreError>>,
}

pub(super) fn decode_counter(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

pub(super) fn encode_fence((incarnation, seq): FenceValue) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&incarnation.to_be_bytes());
    bytes.extend_from_slice(&seq.to_be_bytes());
    bytes
}

pub(super) fn decode_fence(bytes: &[u8]) -> Option<FenceValue> {
    let incarnation = decode_counter(bytes.get(..8)?)?;
    let seq = decode_counter(bytes.get(8..16)?)?;
    (bytes.len() == 16).then_some((incarnation, seq))
}

fn check_fence(
    backend: &dyn StoreBackend,
    fence: &Fence,
    written_in_batch: &HashMap<Vec<u8>, FenceValue>,
) -> Result<(), StoreError> {
    let stored = match written_in_batch.get(&fence.key) {
        Some(value) => *value,
        None => match backend.get(&fence.key)? {
            Some(bytes) => decode_fence(&bytes).ok_or_else(|| StoreError::Corrupt {
                key: fence.owner.clone(),
                reason: "a fence is not two 8-byte counters".into(),
            })?,
            None => (0, 0),
        },
    };
    if stored == fence.expect {
        Ok(())
    } else {
        Err(StoreError::Fenced {
            owner: fence.owner.clone(),
            incarnation: fence.expect.0,
            current: stored.0,
        })
    }
}

/// What the commit thread is doing, for the watchdog.
#[derive(Debug)]
pub(super) struct Progress {
    /// When the store started; write times are measured from here.
    base: Instant,
    /// Milliseconds after `base` (plus one) at which the write under way began; 0 idle.
    write_started_ms: AtomicU64,
    stopped: AtomicBool,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            // A measurement of the machine for the watchdog, not an input to any
            // replayed decision.
            #[allow(clippy::disallowed_methods)]
            base: Instant::now(),
            write_started_ms: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }
}

/// Fail-stop also for a write that never returns (a dead disk): past `deadline` the
/// store is declared failed, so the process exits instead of hanging every entity.
pub(super) fn watchdog(
    progress: Arc<Progress>,
    failure: Arc<watch::Sender<Option<StoreError>>>,
    deadline: Duration,
) {
    let deadline_ms = deadline.as_millis() as u64;
    let every = (deadline / 4).max(Duration::from_millis(10));
    while !progress.stopped.load(Ordering::Acquire) {
        std::thread::sleep(every);
        let started = progress.write_started_ms.load(Ordering::Acquire);
        if started != 0 && progress.now_ms().saturating_sub(started) > deadline_ms {
            tracing::error!(deadline_ms, "a store write has not finished; failing stop");
            metrics::counter!("playtree_store_commit_failures_total").increment(1);
            failure.send_replace(Some(StoreError::FailStopped(format!(
                "a write did not finish within {deadline_ms} ms"
            ))));
            return;
        }
    }
}

/// What the commit thread counts.
pub(super) struct Counters {
    pub flushes: Arc<AtomicU64>,
    pub committed: Arc<AtomicU64>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    backend: Arc<dyn StoreBackend>,
    mut requests: mpsc::Receiver<CommitRequest>,
    batch_max: usize,
    counters: Counters,
    failure: Arc<watch::Sender<Option<StoreError>>>,
    progress: Arc<Progress>,
    log_head: watch::Sender<u64>,
    clock: Arc<super::StoreClock>,
) {
    let Counters { flushes, committed } = counters;
    // The next log offset; an offset given to a batch that then failed is never given
    // again (the process stops on a failed write anyway).
    let mut next_offset = *log_head.borrow();
    let mut batch: Vec<CommitRequest> = Vec::with_capacity(batch_max);
    while let Some(first) = requests.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if let Some(error) = failure.borrow().clone() {
            for request in batch.drain(..) {
                let _ = request.done.send(Err(error.clone()));
            }
            continue;
        }
        // Flush latency is a measurement of the machine for the metrics, not an input to
        // any decision, so reading the clock here does not break replayability.
        #[allow(clippy::disallowed_methods)]
        let started = Instant::now();
        let mut ops = Vec::new();
        let mut written_in_batch = HashMap::new();
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut unreadable = None;
        for request in &mut batch {
            let verdict = match &request.fence {
                None => Ok(()),
                Some(fence) => check_fence(&*backend, fence, &written_in_batch),
            };
            // A fence that cannot be read is a store failure, not one writer's refusal:
            // the entities behind this batch have applied their events already.
            if let Err(error) = &verdict
                && !matches!(error, StoreError::Fenced { .. })
            {
                unreadable = Some(error.clone());
            }
            if verdict.is_ok() {
                if let Some(fence) = &request.fence
                    && fence.set != fence.expect
                {
                    written_in_batch.insert(fence.key.clone(), fence.set);
                    ops.push(WriteOp::Put(fence.key.clone(), encode_fence(fence.set)));
                }
                for op in request.ops.drain(..) {
                    ops.push(match op {
                        WriteOp::Append(value) => {
                            next_offset += 1;
                            WriteOp::Put(super::log_key(next_offset - 1), value)
                        }
                        other => other,
                    });
                }
            } else {
                metrics::counter!("playtree_store_fenced_commits_total").increment(1);
            }
            verdicts.push(verdict);
        }
        // Every time this batch holds was read before it was submitted: stamping the
        // batch with store time now keeps the store's high water above all of them, so
        // that store time never goes back across a restart.
        ops.push(WriteOp::Put(
            super::CLOCK_KEY.to_vec(),
            clock.now_ms().to_be_bytes().to_vec(),
        ));
        progress
            .write_started_ms
            .store(progress.now_ms(), Ordering::Release);
        let written = match unreadable {
            Some(error) => Err(error),
            None => backend.write_durable(&ops),
        };
        progress.write_started_ms.store(0, Ordering::Release);
        flushes.fetch_add(1, Ordering::Relaxed);
        committed.fetch_add(batch.len() as u64, Ordering::Relaxed);
        metrics::histogram!("playtree_store_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("playtree_store_commit_batch_size").record(batch.len() as f64);
        if let Err(error) = written {
            tracing::error!(%error, "store commit failed; the server stops and recovers from its journal");
            metrics::counter!("playtree_store_commit_failures_total").increment(1);
            let stopped = StoreError::FailStopped(error.to_string());
            failure.send_replace(Some(stopped.clone()));
            for request in batch.drain(..) {
                let _ = request.done.send(Err(stopped.clone()));
            }
            continue;
        }
        if let Some(error) = failure.borrow().clone() {
            // The watchdog gave up on this write while it ran: it was answered as failed
            // to nobody yet, and must not be answered as done either.
            for request in batch.drain(..) {
                let _ = request.done.send(Err(error.clone()));
            }
            continue;
        }
        log_head.send_if_modified(|head| {
            let moved = *head != next_offset;
            *head = next_offset;
            moved
        });
        for (request, verdict) in batch.drain(..).zip(verdicts) {
            // A writer that stopped waiting has nothing left to tell.
            let _ = request.done.send(verdict);
        }
    }
    progress.stopped.store(true, Ordering::Release);
}
