//! Pipelined persistence (Akka's `persistAsync`, a database's early lock release): an
//! entity applies its events at once and goes on with its mailbox while their commit is
//! in flight; what depends on them (replies, publications, messages to other entities)
//! waits here, in order, and leaves only once the commit covering it is durable.
//!
//! Each entity's handler collects its [`Effects`]: the ticket of the last commit it
//! submitted and the deferred actions. The entity's [`Releaser`] task awaits tickets in
//! submission order (the commit thread is FIFO, so a later ticket is never durable
//! before an earlier one) and runs each batch's actions after its ticket. A batch with no
//! ticket runs at once when nothing is in flight, or in its turn otherwise. If a commit
//! fails, nothing more is released and the entity is stopped: its memory holds events
//! that may not be durable, and the next incarnation recovers from the journal.

use crate::store::{CommitTicket, StoreError};
use ractor::ActorCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::mpsc;

/// An action that may only happen once the events before it are durable.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// What one handler invocation leaves to release.
#[derive(Default)]
pub struct Effects {
    ticket: Option<CommitTicket>,
    /// Behind a lock only so that an entity's state stays `Sync` (its handlers hold
    /// `&self` across awaits); it is only ever touched through `&mut self`.
    deferred: std::sync::Mutex<Vec<Deferred>>,
}

impl fmt::Debug for Effects {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Effects")
            .field("ticket", &self.ticket.is_some())
            .field("deferred", &self.deferred_len())
            .finish()
    }
}

impl Effects {
    /// The actions pushed from now on wait for this commit (and so for every earlier one).
    pub fn after(&mut self, ticket: CommitTicket) {
        self.ticket = Some(ticket);
    }

    pub fn push(&mut self, action: impl FnOnce() + Send + 'static) {
        self.deferred_mut().push(Box::new(action));
    }

    fn deferred_mut(&mut self) -> &mut Vec<Deferred> {
        // `get_mut` needs no locking; a poisoned lock still holds a consistent Vec.
        self.deferred
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn deferred_len(&self) -> usize {
        self.deferred.lock().map_or(0, |deferred| deferred.len())
    }

    fn into_parts(mut self) -> (Option<CommitTicket>, Vec<Deferred>) {
        let deferred = std::mem::take(self.deferred_mut());
        (self.ticket, deferred)
    }

    fn is_empty(&mut self) -> bool {
        self.ticket.is_none() && self.deferred_mut().is_empty()
    }
}

struct Batch {
    ticket: Option<CommitTicket>,
    deferred: Vec<Deferred>,
}

/// One entity's release queue. Dropping it lets the task finish what is queued;
/// [`Releaser::close`] also waits for that. The task and its queue exist only once a
/// batch has had to wait for a commit: an entity that never commits (a connected player
/// who does nothing) costs no task.
#[derive(Debug)]
pub struct Releaser {
    batches: Option<mpsc::Sender<Batch>>,
    task: Option<tokio::task::JoinHandle<()>>,
    shared: Arc<Shared>,
    /// What starting the task takes, until it is started (or the releaser closed).
    unstarted: Option<Start>,
}

#[derive(Debug)]
struct Start {
    owner: ActorCell,
    kind: &'static str,
    queue_max: usize,
}

#[derive(Debug)]
struct Shared {
    /// Batches queued and not yet released.
    in_flight: AtomicUsize,
    failed: AtomicBool,
}

impl Releaser {
    /// Starts the release task of the entity `owner` (stopped if a commit fails).
    /// `queue_max` bounds the batches waiting; a full queue makes the handler wait,
    /// which holds back the entity's mailbox: backpressure, not memory.
    pub fn start(owner: ActorCell, kind: &'static str, queue_max: usize) -> Releaser {
        Releaser {
            batches: None,
            task: None,
            shared: Arc::new(Shared {
                in_flight: AtomicUsize::new(0),
                failed: AtomicBool::new(false),
            }),
            unstarted: Some(Start {
                owner,
                kind,
                queue_max,
            }),
        }
    }

    /// The queue, with its task started on first use; `None` once closed.
    fn queue(&mut self) -> Option<&mpsc::Sender<Batch>> {
        if let Some(Start {
            owner,
            kind,
            queue_max,
        }) = self.unstarted.take()
        {
            let (batches, mut receiver) = mpsc::channel::<Batch>(queue_max.max(1));
            let task_shared = self.shared.clone();
            let task = tokio::spawn(async move {
                while let Some(batch) = receiver.recv().await {
                    let durable = match batch.ticket {
                        Some(ticket) => ticket.durable().await,
                        None => Ok(()),
                    };
                    match durable {
                        Ok(()) if !task_shared.failed.load(Ordering::Acquire) => {
                            if let Err(error) = run(batch.deferred) {
                                fail(&task_shared, &owner, kind, &error);
                            }
                        }
                        Ok(()) => {}
                        Err(error) => fail(&task_shared, &owner, kind, &error),
                    }
                    task_shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            });
            self.batches = Some(batches);
            self.task = Some(task);
        }
        self.batches.as_ref()
    }

    /// Releases what is queued (as its commits become durable), then ends the task:
    /// an entity calls it when it stops, so that nothing of an old incarnation is
    /// released after it has gone.
    pub async fn close(&mut self) {
        self.unstarted = None;
        self.batches = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// True once a commit of this entity failed: it is being stopped.
    pub fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Queues the handler's effects behind its commit; runs them at once when there is
    /// no commit to wait for.
    pub async fn release(&mut self, mut effects: Effects) {
        // `in_flight` is read before `failed`: the task marks a failure before it
        // counts the failed batch done, so an idle queue seen here after a failure is
        // always seen failed too.
        let idle = self.shared.in_flight.load(Ordering::Acquire) == 0;
        if effects.is_empty() || self.has_failed() {
            return;
        }
        let (ticket, deferred) = effects.into_parts();
        if ticket.is_none() && idle {
            if let Err(error) = run(deferred) {
                tracing::error!(%error, "an effect panicked");
                self.shared.failed.store(true, Ordering::Release);
            }
            return;
        }
        let shared = self.shared.clone();
        let Some(batches) = self.queue() else {
            return;
        };
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        if batches.send(Batch { ticket, deferred }).await.is_err() {
            // The task is gone (it panicked, or the runtime is shutting down): nothing
            // can be released in order any more.
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            shared.failed.store(true, Ordering::Release);
        }
    }
}

/// Runs a batch's actions in order; a panicking action ends the batch as a failure
/// instead of killing the release task (which would silently drop everything after).
fn run(deferred: Vec<Deferred>) -> Result<(), StoreError> {
    for action in deferred {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(action))
            .map_err(|_| StoreError::Encode("an effect of the entity panicked".into()))?;
    }
    Ok(())
}

fn fail(shared: &Shared, owner: &ActorCell, kind: &'static str, error: &StoreError) {
    if shared.failed.swap(true, Ordering::AcqRel) {
        return;
    }
    tracing::error!(kind, %error, "a commit failed; the entity stops and recovers from its journal");
    metrics::counter!("playtree_actor_commit_failures_total", "kind" => kind).increment(1);
    owner.stop(Some(format!("commit failed: {error}")));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::{MemoryBackend, Store, WriteOp};
    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use std::sync::Mutex;

    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn effects_leave_in_order_and_only_after_their_commit() {
        let store = Store::with_backend(
            Arc::new(MemoryBackend::default()),
            &StoreConfig::default(),
            Arc::new(crate::clock::FixedClock(1)),
        )
        .expect("store");
        let (owner, _) = Actor::spawn(None, Idle, ()).await.expect("actor");
        let mut releaser = Releaser::start(owner.get_cell(), "test", 16);
        let log = Arc::new(Mutex::new(Vec::new()));
        for step in 0..50u64 {
            let mut effects = Effects::default();
            if step % 3 == 0 {
                let key = step.to_be_bytes().to_vec();
                effects.after(
                    store
                        .submit(vec![WriteOp::Put(key, vec![1])])
                        .expect("queued"),
                );
            }
            let (log, probe) = (log.clone(), store.clone());
            effects.push(move || {
                // Every commit submitted up to this step is durable when it runs.
                let durable = probe.flush_count();
                log.lock().expect("log").push((step, durable));
            });
            releaser.release(effects).await;
        }
        let wait = std::time::Duration::from_secs(10);
        tokio::time::timeout(wait, async {
            while log.lock().expect("log").len() < 50 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("everything released");
        let log = log.lock().expect("log");
        let steps: Vec<u64> = log.iter().map(|(step, _)| *step).collect();
        assert_eq!(steps, (0..50).collect::<Vec<_>>(), "in order");
        assert!(log[0].1 >= 1, "the first action waited for its commit");
    }

    #[tokio::test]
    async fn after_a_failed_commit_nothing_more_is_released_and_the_owner_stops() {
        use crate::store::{Fault, FaultyBackend};
        let faulty = Arc::new(FaultyBackend::new(Arc::new(MemoryBackend::default())));
        let store = Store::with_backend(
            faulty.clone(),
            &StoreConfig::default(),
            Arc::new(crate::clock::FixedClock(1)),
        )
        .expect("store");
        let (owner, _) = Actor::spawn(None, Idle, ()).await.expect("actor");
        let mut releaser = Releaser::start(owner.get_cell(), "test", 16);
        let released = Arc::new(Mutex::new(Vec::new()));
        faulty.fail_next_write(Fault::FailBeforeWrite);
        for step in 0..3u64 {
            let mut effects = Effects::default();
            if step == 0 {
                effects.after(
                    store
                        .submit(vec![WriteOp::Put(vec![1], vec![1])])
                        .expect("queued"),
                );
            }
            let released = released.clone();
            effects.push(move || released.lock().expect("log").push(step));
            releaser.release(effects).await;
        }
        owner
            .wait(Some(std::time::Duration::from_secs(10)))
            .await
            .expect("the owner is stopped");
        assert!(releaser.has_failed());
        assert!(
            released.lock().expect("log").is_empty(),
            "nothing was released"
        );
    }
}
