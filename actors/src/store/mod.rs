//! The persistent store: per-entity journals and snapshots in sled, written by one
//! group-commit task so that a single flush makes many writers' events durable.
//!
//! Key layout (one sled tree): `'j' kind id seq` → journal entry and `'s' kind id` →
//! snapshot, with `kind` and `id` length-prefixed and `seq` big-endian so that one
//! entity's journal is a contiguous, ordered range. Values start with a format byte.

mod commit;
mod journal;

pub use journal::{Entity, Journal};

use crate::config::StoreConfig;
use commit::CommitRequest;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// Format byte that starts every stored value; bump it when the encoding changes.
pub const RECORD_FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error, Clone)]
pub enum StoreError {
    #[error("storage error: {0}")]
    Sled(String),
    #[error("stored record {key} is unreadable: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("record does not encode: {0}")]
    Encode(String),
    #[error("the store is closed")]
    Closed,
    #[error("the store's commit queue is full ({max} requests waiting)")]
    Overloaded { max: usize },
}

impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Sled(error.to_string())
    }
}

/// One change in a commit.
#[derive(Debug, Clone)]
pub enum WriteOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    db: sled::Db,
    commits: mpsc::Sender<CommitRequest>,
    queue_max: usize,
    flushes: Arc<AtomicU64>,
}

/// Resolves once the submitted ops are durable.
#[derive(Debug)]
pub struct CommitTicket(oneshot::Receiver<Result<(), StoreError>>);

impl CommitTicket {
    pub async fn durable(self) -> Result<(), StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

impl Store {
    /// Opens (or creates) the store under `path` and starts its group-commit task on the
    /// current tokio runtime.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<Store, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        let (commits, receiver) = mpsc::channel(config.commit_queue_max);
        let flushes = Arc::new(AtomicU64::new(0));
        tokio::spawn(commit::run(
            db.clone(),
            receiver,
            config.commit_batch_max,
            flushes.clone(),
        ));
        Ok(Store {
            inner: Arc::new(StoreInner {
                db,
                commits,
                queue_max: config.commit_queue_max,
                flushes,
            }),
        })
    }

    /// Writes `ops` atomically and returns once they are durable (flushed to disk).
    pub async fn commit(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        self.submit(ops)?.durable().await
    }

    /// Queues `ops` for the next group commit without waiting. Every request queued
    /// while a flush runs is served by the following single flush.
    pub fn submit(&self, ops: Vec<WriteOp>) -> Result<CommitTicket, StoreError> {
        let (done, ticket) = oneshot::channel();
        self.inner
            .commits
            .try_send(CommitRequest { ops, done })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded {
                    max: self.inner.queue_max,
                },
                mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
            })?;
        Ok(CommitTicket(ticket))
    }

    /// How many flushes the group-commit task has made.
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// A fresh id, unique across restarts (sled persists the counter).
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()?)
    }

    /// Everything stored for one entity: its snapshot (if any) and the journal entries
    /// after it, in order. Runs on the blocking pool: sled reads may touch the disk.
    pub async fn load(&self, kind: &str, id: &str) -> Result<StoredEntity, StoreError> {
        let db = self.inner.db.clone();
        let snapshot_key = snapshot_key(kind, id);
        let journal_prefix = journal_prefix(kind, id);
        tokio::task::spawn_blocking(move || {
            let snapshot = db.get(&snapshot_key)?.map(|value| value.to_vec());
            let mut journal = Vec::new();
            for entry in db.scan_prefix(&journal_prefix) {
                let (key, value) = entry?;
                let seq_bytes: [u8; 8] =
                    key[journal_prefix.len()..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt {
                            key: format!("{key:?}"),
                            reason: "journal key does not end in an 8-byte sequence number".into(),
                        })?;
                journal.push((u64::from_be_bytes(seq_bytes), value.to_vec()));
            }
            Ok(StoredEntity { snapshot, journal })
        })
        .await
        .map_err(|error| StoreError::Sled(format!("load task failed: {error}")))?
    }

    /// Flushes everything written so far; used at shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.db.flush_async().await?;
        Ok(())
    }
}

/// Raw records of one entity, before decoding.
#[derive(Debug, Default)]
pub struct StoredEntity {
    pub snapshot: Option<Vec<u8>>,
    pub journal: Vec<(u64, Vec<u8>)>,
}

fn entity_prefix(tag: u8, kind: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + kind.len() + id.len() + 8);
    key.push(tag);
    // Invariant: kinds are short static names and ids are bounded by the token size
    // limit, so both lengths fit their prefixes; truncating would only merge no keys
    // because the lengths are checked here.
    key.push(u8::try_from(kind.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(kind.as_bytes());
    key.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

pub fn journal_prefix(kind: &str, id: &str) -> Vec<u8> {
    entity_prefix(b'j', kind, id)
}

pub fn journal_key(kind: &str, id: &str, seq: u64) -> Vec<u8> {
    let mut key = journal_prefix(kind, id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn snapshot_key(kind: &str, id: &str) -> Vec<u8> {
    entity_prefix(b's', kind, id)
}
