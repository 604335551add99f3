//! The persistent store: per-entity journals and snapshots in sled, written by one
//! group-commit task so that a single flush makes many writers' events durable.
//!
//! Key layout (one sled tree): `'j' kind id seq` → journal record (one per commit),
//! `'s' kind id` → snapshot (the whole state, or its head when it keeps parts),
//! `'p' kind id part` → one part of a snapshot (see [`Entity::parts`]),
//! `'i' kind id` → the fence (incarnation and last record), `'o' kind id` → outbox index entry,
//! `'d' n` → dead letter, `'c' code` → the player whose referral code it is, `'m' name`
//! → server-wide values (the referral code and seed keys, the clock's high water),
//! `'l' offset` → the partner event log,
//! `'a' partner` → a partner's acknowledged log offset, `'r' rank player` → the referral
//! leaderboard; `kind` and `id` are length-prefixed and `seq` big-endian so
//! that one entity's journal is a contiguous, ordered range. Values start with a format
//! byte.

mod backend;
mod clock;
mod commit;
mod journal;

pub use backend::{Fault, FaultyBackend, MemoryBackend, Pairs, SledBackend, StoreBackend};
pub use clock::StoreClock;
pub use commit::{Fence, FenceValue};
pub use journal::{Entity, Journal};

use crate::clock::Clock;
use crate::config::StoreConfig;
use commit::CommitRequest;
use playtree_protocol::codec::{decode_record, encode_record};
use playtree_protocol::limits::RECORD_BYTES_HARD_MAX;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Format byte that starts every stored value; bump it when the encoding changes.
/// 2: grants carry the previous grant to the same beneficiary; wallets keep watermarks.
/// 3: sessions keep their referral link (a store of format 2 is not read: no migration).
/// 4: referral tree nodes keep leaderboard and suspect fields (format 3 existed only
/// during development).
/// 5: velocity limits are sliding counts, and trees keep partner answers for a while
/// (a store of format 4 is not read: no migration).
/// 6: entities talk by durable letters (every state holds its post office), one journal
/// record per commit, fences hold the last record, trees snapshot in parts, the player
/// stream is durable (a store of format 5 is not read: no migration).
pub const RECORD_FORMAT_VERSION: u8 = 6;

/// Where the store's clock keeps the highest time it handed out.
pub const CLOCK_KEY: &[u8] = b"mstore-clock";

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
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
    #[error(
        "{owner} incarnation {incarnation} was superseded by incarnation {current}; its write was refused"
    )]
    Fenced {
        owner: String,
        incarnation: u64,
        current: u64,
    },
    #[error(
        "the store failed ({0}); the server stops and recovers from its journal, so the outcome of this request is unknown until it is back"
    )]
    FailStopped(String),
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
    /// An entry for the end of the event log: the commit thread gives it the next
    /// offset as it writes the batch, so offsets follow the order of durability.
    Append(Vec<u8>),
}

/// The key of the event log's entry at `offset`.
pub fn log_key(offset: u64) -> Vec<u8> {
    let mut key = vec![b'l'];
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

fn log_offset(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// A record of something that can never be done (a spin whose room or wheel is gone, a
/// grant addressed to someone else): kept for an operator, counted, and out of the way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub kind: String,
    pub id: String,
    pub what: String,
    pub reason: String,
}

impl DeadLetter {
    /// Logs and counts a letter once it is durable.
    pub fn filed(&self) {
        tracing::error!(kind = %self.kind, id = %self.id, what = %self.what, reason = %self.reason, "dead letter");
        metrics::counter!("playtree_dead_letters_total", "kind" => self.kind.clone()).increment(1);
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<StoreInner>,
}

#[derive(Debug)]
struct StoreInner {
    backend: Arc<dyn StoreBackend>,
    commits: mpsc::Sender<CommitRequest>,
    queue_max: usize,
    flushes: Arc<AtomicU64>,
    committed: Arc<AtomicU64>,
    failure: watch::Receiver<Option<StoreError>>,
    /// The offset the event log's next entry will get (every entry below is durable).
    log_head: watch::Receiver<u64>,
    clock: Arc<StoreClock>,
    writer: std::thread::JoinHandle<()>,
}

/// A reserved place in the commit queue (see [`Store::reserve`]).
#[derive(Debug)]
pub struct CommitSlot(mpsc::OwnedPermit<CommitRequest>);

impl CommitSlot {
    /// Submits `ops` under `fence` in the reserved place; cannot be refused now.
    pub fn submit(self, fence: Option<Fence>, ops: Vec<WriteOp>) -> CommitTicket {
        let (done, ticket) = oneshot::channel();
        self.0.send(CommitRequest { fence, ops, done });
        CommitTicket(ticket)
    }
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
    /// Opens (or creates) the sled store under `path`, durable by fdatasync unless
    /// `config.fdatasync` is off; its clock is made from `clock`.
    pub fn open(
        path: &Path,
        config: &StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        let backend = SledBackend::open(path, config.fdatasync)?;
        Store::with_backend(Arc::new(backend), config, clock)
    }

    /// A store over any backend; starts its commit thread, which ends when the last
    /// handle is dropped.
    pub fn with_backend(
        backend: Arc<dyn StoreBackend>,
        config: &StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Store, StoreError> {
        let high_water_ms = match backend.get(CLOCK_KEY)? {
            Some(bytes) => commit::decode_counter(&bytes).ok_or_else(|| StoreError::Corrupt {
                key: "store clock".into(),
                reason: "the clock's high water is not an 8-byte counter".into(),
            })?,
            None => 0,
        };
        let clock = Arc::new(StoreClock::start(
            clock,
            high_water_ms,
            config.clock_restart_forward_max_ms,
            config.clock_slew_permille,
        ));
        let (commits, receiver) = mpsc::channel(config.commit_queue_max.max(1));
        let flushes = Arc::new(AtomicU64::new(0));
        let (failed, failure) = watch::channel(None);
        let failed = Arc::new(failed);
        let progress = Arc::new(commit::Progress::new());
        let thread_error =
            |error: std::io::Error| StoreError::Sled(format!("starting a store thread: {error}"));
        {
            let (progress, failed) = (progress.clone(), failed.clone());
            let deadline = Duration::from_millis(config.write_deadline_ms.max(1));
            std::thread::Builder::new()
                .name("playtree-store-watchdog".into())
                .spawn(move || commit::watchdog(progress, failed, deadline))
                .map_err(thread_error)?;
        }
        let log_start = backend
            .last_with_prefix(b"l")?
            .and_then(|key| log_offset(&key))
            .map_or(1, |last| last + 1);
        let (log_sender, log_head) = watch::channel(log_start);
        let writer = backend.clone();
        let batch_max = config.commit_batch_max.max(1);
        let committed = Arc::new(AtomicU64::new(0));
        let counters = (flushes.clone(), committed.clone());
        let thread_clock = clock.clone();
        let writer = std::thread::Builder::new()
            .name("playtree-store-commit".into())
            .spawn(move || {
                let (flushes, committed) = counters;
                commit::run(
                    writer,
                    receiver,
                    batch_max,
                    commit::Counters { flushes, committed },
                    failed,
                    progress,
                    log_sender,
                    thread_clock,
                )
            })
            .map_err(thread_error)?;
        Ok(Store {
            inner: Arc::new(StoreInner {
                backend,
                commits,
                queue_max: config.commit_queue_max,
                flushes,
                committed,
                failure,
                log_head,
                clock,
                writer,
            }),
        })
    }

    /// The store's clock: every stored time comes from it.
    pub fn clock(&self) -> &Arc<StoreClock> {
        &self.inner.clock
    }

    /// Store time now.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.now_ms()
    }

    /// Closes the store once this is its last handle: the commit thread finishes what
    /// is queued and ends, and the backend (sled's files and lock) is released, so the
    /// same path can be opened again. With other handles alive it only drops this one.
    pub fn close(self) {
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let StoreInner {
                backend,
                commits,
                writer,
                ..
            } = inner;
            drop(commits);
            if writer.join().is_err() {
                tracing::error!("the store's commit thread panicked");
            }
            drop(backend);
        }
    }

    /// Writes `ops` atomically and returns once they are durable (flushed to disk).
    pub async fn commit(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        self.submit(ops)?.durable().await
    }

    /// Queues `ops` for the next group commit without waiting. Every request queued
    /// while a flush runs is served by the following single flush.
    pub fn submit(&self, ops: Vec<WriteOp>) -> Result<CommitTicket, StoreError> {
        self.submit_fenced(None, ops)
    }

    /// Like [`Store::submit`], refused with [`StoreError::Fenced`] unless `fence` holds
    /// when the commit thread writes the batch.
    pub fn submit_fenced(
        &self,
        fence: Option<Fence>,
        ops: Vec<WriteOp>,
    ) -> Result<CommitTicket, StoreError> {
        Ok(self.reserve()?.submit(fence, ops))
    }

    /// Reserves a place in the commit queue, so that a writer can find out that the
    /// store is overloaded before it changes anything, and then submit infallibly.
    pub fn reserve(&self) -> Result<CommitSlot, StoreError> {
        if let Some(error) = self.failure() {
            return Err(error);
        }
        let permit =
            self.inner
                .commits
                .clone()
                .try_reserve_owned()
                .map_err(|error| match error {
                    mpsc::error::TrySendError::Full(_) => StoreError::Overloaded {
                        max: self.inner.queue_max,
                    },
                    mpsc::error::TrySendError::Closed(_) => StoreError::Closed,
                })?;
        Ok(CommitSlot(permit))
    }

    /// The failure that stopped the store, if one did (a commit thread that is gone
    /// counts as one).
    pub fn failure(&self) -> Option<StoreError> {
        if let Some(error) = self.inner.failure.borrow().clone() {
            return Some(error);
        }
        self.inner
            .commits
            .is_closed()
            .then(|| StoreError::FailStopped("the commit thread has stopped".into()))
    }

    /// Resolves when a commit has failed: the process must stop (fail-stop).
    pub async fn failed(&self) -> StoreError {
        let mut failure = self.inner.failure.clone();
        match failure.wait_for(Option::is_some).await {
            Ok(error) => error.clone().unwrap_or(StoreError::Closed),
            Err(_) => StoreError::Closed,
        }
    }

    /// How many flushes the group-commit thread has made.
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    /// How many commit requests those flushes have served.
    pub fn commit_count(&self) -> u64 {
        self.inner.committed.load(Ordering::Relaxed)
    }

    /// A fresh id, unique across restarts.
    pub fn generate_id(&self) -> Result<u64, StoreError> {
        self.inner.backend.generate_id()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&dyn StoreBackend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let backend = self.inner.backend.clone();
        // Reads may touch the disk: keep them off the workers that serve sockets.
        tokio::task::spawn_blocking(move || read(&*backend))
            .await
            .map_err(|error| StoreError::Sled(format!("read task failed: {error}")))?
    }

    /// A server-wide secret kept under `key`: drawn from `entropy` and made durable on
    /// first use, read back ever after.
    pub async fn secret_key(
        &self,
        key: &[u8],
        what: &str,
        entropy: &dyn crate::clock::Entropy,
    ) -> Result<[u8; 32], StoreError> {
        if let Some(bytes) = self.get_raw(key.to_vec()).await? {
            return bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    key: what.into(),
                    reason: format!("{} bytes, not 32", bytes.len()),
                });
        }
        let secret = entropy.server_seed();
        self.commit(vec![WriteOp::Put(key.to_vec(), secret.to_vec())])
            .await?;
        Ok(secret)
    }

    /// The value stored under `key`, if any (for indexes kept beside the entities).
    pub async fn get_raw(&self, key: Vec<u8>) -> Result<Option<Vec<u8>>, StoreError> {
        self.blocking(move |backend| backend.get(&key)).await
    }

    /// Watches the offset the event log's next entry will get: every entry below it is
    /// durable.
    pub fn log_head(&self) -> watch::Receiver<u64> {
        self.inner.log_head.clone()
    }

    /// At most `limit` event log entries from `from` on: `(offset, value)`.
    pub async fn log_entries(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.blocking(move |backend| {
            backend
                .scan_from(b"l", &log_key(from), limit)?
                .into_iter()
                .map(|(key, value)| {
                    let offset = log_offset(&key).ok_or_else(|| StoreError::Corrupt {
                        key: format!("{key:?}"),
                        reason: "a log key without its offset".into(),
                    })?;
                    Ok((offset, value))
                })
                .collect()
        })
        .await
    }

    /// The first `limit` keys that start with `prefix`, in order (an index's entries).
    pub async fn scan_index(
        &self,
        prefix: &'static [u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.blocking(move |backend| {
            Ok(backend
                .scan_from(prefix, prefix, limit)?
                .into_iter()
                .map(|(key, _)| key)
                .collect())
        })
        .await
    }

    /// The entity's fence: its incarnation number (0: never written) and its last
    /// journal record.
    pub async fn fence(&self, kind: &str, id: &str) -> Result<FenceValue, StoreError> {
        let key = incarnation_key(kind, id);
        self.blocking(move |backend| read_fence(backend, &key))
            .await
    }

    /// The entity's incarnation number (0: never written).
    pub async fn incarnation(&self, kind: &str, id: &str) -> Result<u64, StoreError> {
        Ok(self.fence(kind, id).await?.0)
    }

    /// Whether anything was ever journaled for the entity (without activating it).
    pub async fn exists(&self, kind: &str, id: &str) -> Result<bool, StoreError> {
        let snapshot_key = snapshot_key(kind, id);
        let journal_prefix = journal_prefix(kind, id);
        self.blocking(move |backend| {
            Ok(backend.get(&snapshot_key)?.is_some()
                || !backend.scan_prefix(&journal_prefix)?.is_empty())
        })
        .await
    }

    /// Everything stored for one entity: its fence, its snapshot (if any) with its
    /// parts, and the journal records after it, in order.
    pub async fn load(&self, kind: &str, id: &str) -> Result<StoredEntity, StoreError> {
        let snapshot_key = snapshot_key(kind, id);
        let incarnation_key = incarnation_key(kind, id);
        let index_key = outbox_index_key(kind, id);
        let journal_prefix = journal_prefix(kind, id);
        let parts_prefix = parts_prefix(kind, id);
        self.blocking(move |backend| {
            // The journal is read before the snapshot. A snapshot taken meanwhile only
            // truncates entries it covers, so the entries read after the snapshot's seq
            // still follow it without a gap: the pair is always consistent. (The other
            // order can pair an old snapshot with a journal already truncated past it.)
            let mut journal = Vec::new();
            for (key, value) in backend.scan_prefix(&journal_prefix)? {
                let seq_bytes: [u8; 8] =
                    key[journal_prefix.len()..]
                        .try_into()
                        .map_err(|_| StoreError::Corrupt {
                            key: format!("{key:?}"),
                            reason: "journal key does not end in an 8-byte sequence number".into(),
                        })?;
                journal.push((u64::from_be_bytes(seq_bytes), value));
            }
            let snapshot = backend.get(&snapshot_key)?;
            // Parts are read after the head, for the same reason: a snapshot writes its
            // head and its changed parts in one batch, so parts read later are as new
            // as the head or newer, and newer parts only hold what the journal records
            // after the head replay again (applying an event is idempotent on a part
            // that has it). Parts are never read without a head.
            let mut parts = Vec::new();
            if snapshot.is_some() {
                for (key, value) in backend.scan_prefix(&parts_prefix)? {
                    let name =
                        String::from_utf8(key[parts_prefix.len()..].to_vec()).map_err(|_| {
                            StoreError::Corrupt {
                                key: format!("{key:?}"),
                                reason: "a part's name is not UTF-8".into(),
                            }
                        })?;
                    parts.push((name, value));
                }
            }
            let indexed = backend.get(&index_key)?.is_some();
            // The fence last: it covers at least every record read above.
            let fence = read_fence(backend, &incarnation_key)?;
            Ok(StoredEntity {
                snapshot,
                parts,
                journal,
                fence,
                indexed,
            })
        })
        .await
    }

    /// Deletes everything stored for an entity that is gone for good (a closed room):
    /// its journal, snapshot, parts and index entry. Its fence stays, so that an
    /// incarnation that was still about cannot write it back.
    pub async fn collect(&self, kind: &str, id: &str) -> Result<usize, StoreError> {
        let prefixes = [journal_prefix(kind, id), parts_prefix(kind, id)];
        let single = [snapshot_key(kind, id), outbox_index_key(kind, id)];
        let ops = self
            .blocking(move |backend| {
                let mut ops = Vec::new();
                for prefix in &prefixes {
                    for (key, _) in backend.scan_prefix(prefix)? {
                        ops.push(WriteOp::Delete(key));
                    }
                }
                ops.extend(single.into_iter().map(WriteOp::Delete));
                Ok(ops)
            })
            .await?;
        let deleted = ops.len();
        self.commit(ops).await?;
        Ok(deleted)
    }

    /// The entities of `kind` whose outbox holds grants not yet acknowledged, from the
    /// outbox index (no entity is read).
    pub async fn owing(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        self.ids_under(b'o', kind).await
    }

    /// Every entity of `kind` ever activated (from their incarnation numbers; no entity
    /// is read): for tools and checks, not for serving.
    pub async fn ids(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        self.ids_under(b'i', kind).await
    }

    /// The ids in the keys `tag kind id` (one per entity).
    async fn ids_under(&self, tag: u8, kind: &str) -> Result<Vec<String>, StoreError> {
        let prefix = kind_prefix(tag, kind);
        self.blocking(move |backend| {
            backend
                .scan_prefix(&prefix)?
                .into_iter()
                .map(|(key, _)| {
                    let id = key
                        .get(prefix.len() + 2..)
                        .and_then(|id| String::from_utf8(id.to_vec()).ok())
                        .ok_or_else(|| StoreError::Corrupt {
                            key: format!("{key:?}"),
                            reason: "entity key does not end in an id".into(),
                        })?;
                    Ok(id)
                })
                .collect()
        })
        .await
    }

    /// Files a dead letter durably and counts it.
    pub async fn dead_letter(&self, letter: DeadLetter) -> Result<(), StoreError> {
        let op = self.dead_letter_op(&letter)?;
        self.commit(vec![op]).await?;
        letter.filed();
        Ok(())
    }

    /// The write that files `letter` (for a batch that must hold it with other writes).
    pub(crate) fn dead_letter_op(&self, letter: &DeadLetter) -> Result<WriteOp, StoreError> {
        let mut key = vec![b'd'];
        key.extend_from_slice(&self.generate_id()?.to_be_bytes());
        Ok(WriteOp::Put(key, encode_value(letter)?))
    }

    /// Drops the oldest dead letters beyond the newest `keep`; returns how many went.
    pub async fn trim_dead_letters(&self, keep: usize) -> Result<usize, StoreError> {
        let keys = self
            .blocking(|backend| {
                Ok(backend
                    .scan_prefix(b"d")?
                    .into_iter()
                    .map(|(key, _)| key)
                    .collect::<Vec<_>>())
            })
            .await?;
        let excess = keys.len().saturating_sub(keep);
        if excess == 0 {
            return Ok(0);
        }
        let ops = keys.into_iter().take(excess).map(WriteOp::Delete).collect();
        self.commit(ops).await?;
        metrics::counter!("playtree_dead_letters_trimmed_total").increment(excess as u64);
        Ok(excess)
    }

    /// Every dead letter filed, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let letters = self.blocking(|backend| backend.scan_prefix(b"d")).await?;
        letters
            .into_iter()
            .map(|(key, value)| decode_value(|| format!("dead letter {key:?}"), &value))
            .collect()
    }

    /// Makes everything written so far durable; used at shutdown.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await
    }
}

pub fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let body = encode_record(value).map_err(|error| StoreError::Encode(error.to_string()))?;
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.push(RECORD_FORMAT_VERSION);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

/// Records at most this large are certain to decode: the reader's limit counts what
/// decoding allocates, which is at most a small multiple of the bytes read (a varint
/// of one byte becomes a `u64` of eight, plus a collection's overhead).
const CERTAIN_TO_DECODE_BYTES: usize = RECORD_BYTES_HARD_MAX / 32;

/// Encodes `value`, which the reader will decode as a `D`, and refuses it if the reader
/// would refuse it: no record is ever written that recovery could not read back.
pub fn encode_checked<T: Serialize, D: serde::de::DeserializeOwned>(
    what: impl Fn() -> String,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let bytes = encode_value(value)?;
    if bytes.len() > CERTAIN_TO_DECODE_BYTES {
        // Rare (a large snapshot head): the same decode the reader will run, under the
        // same limit.
        decode_value::<D>(&what, &bytes).map_err(|error| {
            metrics::counter!("playtree_store_records_refused_total").increment(1);
            StoreError::Encode(format!(
                "{} would not decode ({} bytes): {error}",
                what(),
                bytes.len()
            ))
        })?;
    }
    Ok(bytes)
}

pub fn decode_value<T: serde::de::DeserializeOwned>(
    key: impl Fn() -> String,
    bytes: &[u8],
) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&RECORD_FORMAT_VERSION, body)) => {
            decode_record(body).map_err(|error| StoreError::Corrupt {
                key: key(),
                reason: error.to_string(),
            })
        }
        Some((version, _)) => Err(StoreError::Corrupt {
            key: key(),
            reason: format!("unknown record format {version}"),
        }),
        None => Err(StoreError::Corrupt {
            key: key(),
            reason: "empty record".into(),
        }),
    }
}

/// Raw records of one entity, before decoding.
#[derive(Debug, Default)]
pub struct StoredEntity {
    pub snapshot: Option<Vec<u8>>,
    /// The snapshot's parts, by name.
    pub parts: Vec<(String, Vec<u8>)>,
    pub journal: Vec<(u64, Vec<u8>)>,
    /// The incarnation that last wrote, and its last record (`(0, 0)`: never written).
    pub fence: FenceValue,
    /// Whether its outbox index entry is present.
    pub indexed: bool,
}

fn read_fence(backend: &dyn StoreBackend, key: &[u8]) -> Result<FenceValue, StoreError> {
    match backend.get(key)? {
        Some(bytes) => commit::decode_fence(&bytes).ok_or_else(|| StoreError::Corrupt {
            key: format!("{key:?}"),
            reason: "a fence is not two 8-byte counters".into(),
        }),
        None => Ok((0, 0)),
    }
}

fn kind_prefix(tag: u8, kind: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + kind.len());
    key.push(tag);
    // Invariant: kinds are short static names and ids are bounded by the token size
    // limit, so both lengths fit their prefixes.
    key.push(u8::try_from(kind.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(kind.as_bytes());
    key
}

fn entity_prefix(tag: u8, kind: &str, id: &str) -> Vec<u8> {
    let mut key = kind_prefix(tag, kind);
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

pub fn parts_prefix(kind: &str, id: &str) -> Vec<u8> {
    entity_prefix(b'p', kind, id)
}

pub fn part_key(kind: &str, id: &str, part: &str) -> Vec<u8> {
    let mut key = parts_prefix(kind, id);
    key.extend_from_slice(part.as_bytes());
    key
}

/// The entity's fence: the incarnation that writes and its last record, checked and
/// moved by every commit.
pub fn incarnation_key(kind: &str, id: &str) -> Vec<u8> {
    entity_prefix(b'i', kind, id)
}

/// Present while the entity's outbox holds unacknowledged grants.
pub fn outbox_index_key(kind: &str, id: &str) -> Vec<u8> {
    entity_prefix(b'o', kind, id)
}
