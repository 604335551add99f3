//! A journaled entity: state that changes only by applying events that are durable first.
//! The live path ([`Journal::persist`]) and recovery ([`Journal::open`]) run the same
//! `apply`, so replay reproduces live state.

use super::{RECORD_FORMAT_VERSION, Store, StoreError, WriteOp, journal_key, snapshot_key};
use playtree_protocol::codec::{decode_record, encode_record};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;

/// A kind of persisted entity.
pub trait Entity: Send + 'static {
    /// Name of the kind in keys, logs and metrics ("session", "room").
    const KIND: &'static str;
    type State: Default + Serialize + DeserializeOwned + Send + Sync + Debug + Clone;
    type Event: Serialize + DeserializeOwned + Send + Sync + Debug + Clone;

    /// The only way state changes. Pure: no I/O, no clock, no randomness.
    fn apply(state: &mut Self::State, event: &Self::Event);
}

/// One entity's state with its journal position.
#[derive(Debug)]
pub struct Journal<E: Entity> {
    id: String,
    state: E::State,
    /// Sequence number of the last journaled event (0 before the first).
    seq: u64,
    /// Sequence number covered by the latest snapshot.
    snapshot_seq: u64,
    snapshot_every: u64,
    store: Store,
}

fn encode_value<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let body = encode_record(value).map_err(|error| StoreError::Encode(error.to_string()))?;
    let mut bytes = Vec::with_capacity(body.len() + 1);
    bytes.push(RECORD_FORMAT_VERSION);
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

fn decode_value<T: DeserializeOwned>(
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

impl<E: Entity> Journal<E> {
    /// Recovers an entity: its latest snapshot, then every newer journal entry applied
    /// in order. A new entity starts from `E::State::default()` at seq 0.
    pub async fn open(store: Store, id: &str, snapshot_every: u64) -> Result<Self, StoreError> {
        let stored = store.load(E::KIND, id).await?;
        let (mut seq, mut state) = match stored.snapshot {
            Some(bytes) => {
                decode_value::<(u64, E::State)>(|| format!("snapshot {}/{id}", E::KIND), &bytes)?
            }
            None => (0, E::State::default()),
        };
        let snapshot_seq = seq;
        for (entry_seq, bytes) in stored.journal {
            if entry_seq <= seq {
                // Left behind by a snapshot whose truncation did not finish; already in it.
                continue;
            }
            if entry_seq != seq + 1 {
                return Err(StoreError::Corrupt {
                    key: format!("journal {}/{id}", E::KIND),
                    reason: format!("gap: entry {entry_seq} follows {seq}"),
                });
            }
            let event: E::Event =
                decode_value(|| format!("journal {}/{id}#{entry_seq}", E::KIND), &bytes)?;
            E::apply(&mut state, &event);
            seq = entry_seq;
        }
        Ok(Journal {
            id: id.to_owned(),
            state,
            seq,
            snapshot_seq,
            snapshot_every,
            store,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> &E::State {
        &self.state
    }

    /// Sequence number of the last durable event.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The sequence number the next persisted event will get.
    pub fn next_seq(&self) -> u64 {
        self.seq + 1
    }

    /// Makes `events` durable, then applies them. On error nothing was applied.
    /// Takes a snapshot (in the same commit) once `snapshot_every` events have piled up.
    pub async fn persist(&mut self, events: Vec<E::Event>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut ops = Vec::with_capacity(events.len() + 1);
        let mut next_state = self.state.clone();
        for (offset, event) in events.iter().enumerate() {
            let seq = self.seq + 1 + offset as u64;
            ops.push(WriteOp::Put(
                journal_key(E::KIND, &self.id, seq),
                encode_value(event)?,
            ));
            E::apply(&mut next_state, event);
        }
        let last_seq = self.seq + events.len() as u64;
        let snapshot_due = last_seq - self.snapshot_seq >= self.snapshot_every;
        if snapshot_due {
            ops.extend(self.snapshot_ops(last_seq, &next_state)?);
        }
        self.store.commit(ops).await?;
        self.state = next_state;
        self.seq = last_seq;
        if snapshot_due {
            self.snapshot_seq = last_seq;
        }
        Ok(())
    }

    /// Writes a snapshot of the current state and drops the journal it covers.
    pub async fn snapshot(&mut self) -> Result<(), StoreError> {
        if self.snapshot_seq == self.seq {
            return Ok(());
        }
        let ops = self.snapshot_ops(self.seq, &self.state)?;
        self.store.commit(ops).await?;
        self.snapshot_seq = self.seq;
        Ok(())
    }

    fn snapshot_ops(&self, seq: u64, state: &E::State) -> Result<Vec<WriteOp>, StoreError> {
        let mut ops = vec![WriteOp::Put(
            snapshot_key(E::KIND, &self.id),
            encode_value(&(seq, state))?,
        )];
        ops.extend(
            (self.snapshot_seq + 1..=seq)
                .map(|old| WriteOp::Delete(journal_key(E::KIND, &self.id, old))),
        );
        Ok(ops)
    }
}
