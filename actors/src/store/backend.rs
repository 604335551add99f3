//! What the store needs from a disk: point reads, prefix scans, and atomic batches that
//! are durable when the call returns. sled is the implementation the server runs on;
//! the in-memory backend and the fault-injecting wrapper let tests and the simulation
//! crash, fail and reopen a store without a real disk.

use super::{StoreError, WriteOp};
use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fmt::Debug;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Key-value pairs, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Blocking key-value storage. The commit thread is its only writer.
pub trait StoreBackend: Send + Sync + Debug + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError>;

    /// At most `limit` pairs whose keys start with `prefix`, from `start` on, in order.
    fn scan_from(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Pairs, StoreError>;

    /// The greatest key that starts with `prefix`.
    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies `ops` atomically and returns once they survive a power loss. An error
    /// means the outcome is unknown: the batch may or may not be on disk.
    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError>;
    /// A fresh id, never handed out before, across restarts too.
    fn generate_id(&self) -> Result<u64, StoreError>;
}

/// sled, with its files fdatasync'd after every flush: sled 0.34's own flush ends in
/// `sync_file_range`, which flushes neither the device cache nor the file's metadata,
/// and it writes log items too large for a segment to files under `blobs/` without
/// syncing them at all.
#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
    /// sled's data file and blob folder; `None` when syncing is turned off (benchmarks).
    sync: Option<SyncFiles>,
}

#[derive(Debug)]
struct SyncFiles {
    data_file: File,
    blobs_dir: PathBuf,
    /// Blob files known to be synced; sled never rewrites a blob in place.
    synced_blobs: Mutex<HashSet<OsString>>,
}

/// The commit thread gives every log append its offset before the backend sees it.
fn unresolved_append() -> StoreError {
    StoreError::Encode("a log append reached the backend without its offset".into())
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |error| StoreError::Sled(format!("{what}: {error}"))
}

/// fsyncs a folder, so that the files created in it survive a power loss.
fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing a store folder"))
}

impl SyncFiles {
    fn open(path: &Path) -> Result<SyncFiles, StoreError> {
        // sled 0.34 keeps its log in `<path>/db` and large items in `<path>/blobs/`
        // (see its `Config::db_path` and `blob_path`).
        let data_file = File::open(path.join("db"))
            .map_err(io_error("opening sled's data file for fdatasync"))?;
        sync_dir(path)?;
        Ok(SyncFiles {
            data_file,
            blobs_dir: path.join("blobs"),
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    /// fdatasyncs the log, then any blob file written since the last call (and the
    /// blob folder that names it).
    fn sync(&self) -> Result<(), StoreError> {
        self.data_file
            .sync_data()
            .map_err(io_error("fdatasync of the data file"))?;
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(io_error("listing sled's blobs")(error)),
        };
        let mut synced = lock(&self.synced_blobs);
        let mut new_blobs = false;
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry.map_err(io_error("listing sled's blobs"))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                File::open(entry.path())
                    .and_then(|blob| blob.sync_data())
                    .map_err(io_error("fdatasync of a blob"))?;
                new_blobs = true;
            }
            present.insert(name);
        }
        if new_blobs {
            sync_dir(&self.blobs_dir)?;
        }
        // Forget blobs sled has removed, so the set stays as small as the folder.
        *synced = present;
        Ok(())
    }
}

impl SledBackend {
    pub fn open(path: &Path, fdatasync: bool) -> Result<SledBackend, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        let sync = if fdatasync {
            Some(SyncFiles::open(path)?)
        } else {
            None
        };
        Ok(SledBackend { db, sync })
    }
}

impl StoreBackend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.db
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn scan_from(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Pairs, StoreError> {
        self.db
            .range(start.to_vec()..)
            .take_while(|entry| {
                entry
                    .as_ref()
                    .map_or(true, |(key, _)| key.starts_with(prefix))
            })
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db
            .scan_prefix(prefix)
            .next_back()
            .transpose()?
            .map(|(key, _)| key.to_vec()))
    }

    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                WriteOp::Put(key, value) => batch.insert(key.as_slice(), value.as_slice()),
                WriteOp::Delete(key) => batch.remove(key.as_slice()),
                WriteOp::Append(_) => return Err(unresolved_append()),
            }
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        if let Some(sync) = &self.sync {
            sync.sync()?;
        }
        Ok(())
    }

    fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The map is only mutated inside one short critical section that cannot panic
    // halfway, so a poisoned lock still guards consistent data.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Everything in memory: what is "on disk" is what survives dropping every `Store` on
/// it and opening a new one, which is how tests simulate a crash and restart.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    next_id: AtomicU64,
}

impl StoreBackend for MemoryBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.map).get(key).cloned())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        Ok(lock(&self.map)
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn scan_from(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Pairs, StoreError> {
        Ok(lock(&self.map)
            .range(start.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.map)
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .last()
            .map(|(key, _)| key.clone()))
    }

    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut map = lock(&self.map);
        if ops.iter().any(|op| matches!(op, WriteOp::Append(_))) {
            return Err(unresolved_append());
        }
        for op in ops {
            match op {
                WriteOp::Put(key, value) => {
                    map.insert(key.clone(), value.clone());
                }
                WriteOp::Delete(key) => {
                    map.remove(key);
                }
                WriteOp::Append(_) => {}
            }
        }
        Ok(())
    }

    fn generate_id(&self) -> Result<u64, StoreError> {
        Ok(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// A fault to inject into the next write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The write fails and nothing reaches the disk.
    FailBeforeWrite,
    /// The batch reaches the disk, then the call reports an error (a lost fsync
    /// answer): the writer cannot know whether it was kept.
    FailAfterWrite,
}

/// Wraps a backend and fails the writes it is told to.
#[derive(Debug)]
pub struct FaultyBackend {
    inner: Arc<dyn StoreBackend>,
    next_fault: Mutex<Option<Fault>>,
}

impl FaultyBackend {
    pub fn new(inner: Arc<dyn StoreBackend>) -> FaultyBackend {
        FaultyBackend {
            inner,
            next_fault: Mutex::new(None),
        }
    }

    /// The next non-empty write fails this way.
    pub fn fail_next_write(&self, fault: Fault) {
        *lock(&self.next_fault) = Some(fault);
    }
}

impl StoreBackend for FaultyBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Pairs, StoreError> {
        self.inner.scan_prefix(prefix)
    }

    fn scan_from(&self, prefix: &[u8], start: &[u8], limit: usize) -> Result<Pairs, StoreError> {
        self.inner.scan_from(prefix, start, limit)
    }

    fn last_with_prefix(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.last_with_prefix(prefix)
    }

    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let fault = if ops.is_empty() {
            None
        } else {
            lock(&self.next_fault).take()
        };
        match fault {
            None => self.inner.write_durable(ops),
            Some(Fault::FailBeforeWrite) => Err(StoreError::Sled("injected write failure".into())),
            Some(Fault::FailAfterWrite) => {
                self.inner.write_durable(ops)?;
                Err(StoreError::Sled("injected failure after the write".into()))
            }
        }
    }

    fn generate_id(&self) -> Result<u64, StoreError> {
        self.inner.generate_id()
    }
}
