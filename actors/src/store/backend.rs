//! What the store needs from a disk: point reads, prefix scans, and atomic batches that
//! are durable when the call returns. sled is the implementation the server runs on;
//! the in-memory backend and the fault-injecting wrapper let tests and the simulation
//! crash, fail and reopen a store without a real disk.

use super::{StoreError, WriteOp};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Blocking key-value storage. The commit thread is its only writer.
pub trait StoreBackend: Send + Sync + Debug + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every pair whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError>;
    /// Applies `ops` atomically and returns once they survive a power loss. An error
    /// means the outcome is unknown: the batch may or may not be on disk.
    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError>;
    /// A fresh id, never handed out before, across restarts too.
    fn generate_id(&self) -> Result<u64, StoreError>;
}

/// sled, with the data file fdatasync'd after every flush: sled 0.34's own flush ends in
/// `sync_file_range`, which flushes neither the device cache nor the file's metadata.
#[derive(Debug)]
pub struct SledBackend {
    db: sled::Db,
    /// sled's one data file; `None` when syncing is turned off (benchmarks only).
    data_file: Option<File>,
}

impl SledBackend {
    pub fn open(path: &Path, fdatasync: bool) -> Result<SledBackend, StoreError> {
        let db = sled::Config::new().path(path).open()?;
        // sled 0.34 keeps everything but large blobs in `<path>/db` (see its
        // `Config::db_path`); blobs are fsync'd by sled when written.
        let data_file = if fdatasync {
            Some(File::open(path.join("db")).map_err(|error| {
                StoreError::Sled(format!("opening sled's data file for fdatasync: {error}"))
            })?)
        } else {
            None
        };
        Ok(SledBackend { db, data_file })
    }
}

impl StoreBackend for SledBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key)?.map(|value| value.to_vec()))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.db
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                WriteOp::Put(key, value) => batch.insert(key.as_slice(), value.as_slice()),
                WriteOp::Delete(key) => batch.remove(key.as_slice()),
            }
        }
        self.db.apply_batch(batch)?;
        self.db.flush()?;
        if let Some(file) = &self.data_file {
            file.sync_data()
                .map_err(|error| StoreError::Sled(format!("fdatasync of the data file: {error}")))?;
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

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        Ok(lock(&self.map)
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn write_durable(&self, ops: &[WriteOp]) -> Result<(), StoreError> {
        let mut map = lock(&self.map);
        for op in ops {
            match op {
                WriteOp::Put(key, value) => {
                    map.insert(key.clone(), value.clone());
                }
                WriteOp::Delete(key) => {
                    map.remove(key);
                }
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

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(prefix)
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
