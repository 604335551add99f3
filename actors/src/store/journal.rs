//! A journaled entity: state that changes only by applying events that are durable first.
//! The live path ([`Journal::persist`]) and recovery ([`Journal::open`]) run the same
//! `apply`, so replay reproduces live state.

use super::{
    CommitTicket, Fence, Store, StoreError, WriteOp, decode_value, encode_value, incarnation_key,
    journal_key, outbox_index_key, snapshot_key,
};
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

    /// Whether the state holds grants not yet acknowledged (or other work the entity
    /// owes others and must finish by itself). The journal keeps the outbox index in
    /// step with it, in the same batch, so that start-up finds every entity that owes
    /// without reading any entity.
    fn owes_grants(_state: &Self::State) -> bool {
        false
    }
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
    /// This activation's number: every commit checks that the store still holds it.
    incarnation: u64,
    /// Whether the outbox index entry is present.
    indexed: bool,
    /// Set once a commit was refused because a newer incarnation exists: this instance
    /// must stop.
    fenced: bool,
    /// Set once a commit whose events were applied in memory failed.
    diverged: bool,
    store: Store,
}

/// An entity's state as recovered from the store: snapshot, then newer journal entries.
struct Recovered<S> {
    state: S,
    seq: u64,
    snapshot_seq: u64,
    incarnation: u64,
    /// Whether the outbox index entry is present.
    indexed: bool,
}

async fn recover<E: Entity>(store: &Store, id: &str) -> Result<Recovered<E::State>, StoreError> {
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
    Ok(Recovered {
        state,
        seq,
        snapshot_seq,
        incarnation: stored.incarnation,
        indexed: stored.indexed,
    })
}

impl<E: Entity> Journal<E> {
    /// Activates an entity: recovers its latest snapshot and every newer journal entry,
    /// then durably takes the next incarnation number. From then on a commit of any
    /// older incarnation is refused ([`StoreError::Fenced`]). Two activations racing
    /// for one number: the second is refused. A new entity starts from
    /// `E::State::default()` at seq 0.
    pub async fn open(store: Store, id: &str, snapshot_every: u64) -> Result<Self, StoreError> {
        let owner = format!("{}/{id}", E::KIND);
        // The fence goes up before anything is read: from then on every commit of an
        // older incarnation is refused, and whatever it committed before is in the
        // store for the recovery below to read. (Reading first would let an old
        // instance commit between the read and the bump, and the new one overwrite it.)
        let previous = store.incarnation(E::KIND, id).await?;
        let incarnation = previous + 1;
        let bump = Fence {
            key: incarnation_key(E::KIND, id),
            expect: previous,
            set: Some(incarnation),
            owner: owner.clone(),
        };
        store
            .submit_fenced(Some(bump), Vec::new())?
            .durable()
            .await?;
        let recovered = recover::<E>(&store, id).await?;
        if recovered.incarnation != incarnation {
            // Another activation bumped it again meanwhile: that one owns the entity.
            return Err(StoreError::Fenced {
                owner,
                incarnation,
                current: recovered.incarnation,
            });
        }
        let mut journal = Journal {
            id: id.to_owned(),
            state: recovered.state,
            seq: recovered.seq,
            snapshot_seq: recovered.snapshot_seq,
            snapshot_every,
            incarnation,
            indexed: recovered.indexed,
            fenced: false,
            diverged: false,
            store,
        };
        // Heal an outbox index entry that disagrees with the state (written by a
        // version that had none, or lost with a partial restore).
        if E::owes_grants(&journal.state) != journal.indexed {
            journal.commit_index(Vec::new()).await?;
        }
        Ok(journal)
    }

    /// Reads an entity's current durable state without activating it (no fence is
    /// taken): for inspection, tests and tools. Returns `(seq, state, incarnation)`.
    pub async fn inspect(store: &Store, id: &str) -> Result<(u64, E::State, u64), StoreError> {
        let recovered = recover::<E>(store, id).await?;
        Ok((recovered.seq, recovered.state, recovered.incarnation))
    }

    /// This activation's number; also the epoch of the entity's streams.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    fn fence(&self) -> Fence {
        Fence {
            key: incarnation_key(E::KIND, &self.id),
            expect: self.incarnation,
            set: None,
            owner: format!("{}/{}", E::KIND, self.id),
        }
    }

    /// The op that makes the outbox index entry say `owes`.
    fn index_op(&self, owes: bool) -> WriteOp {
        let key = outbox_index_key(E::KIND, &self.id);
        if owes {
            WriteOp::Put(key, Vec::new())
        } else {
            WriteOp::Delete(key)
        }
    }

    /// Commits `ops` with the outbox index entry set from the current state.
    async fn commit_index(&mut self, mut ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let owes = E::owes_grants(&self.state);
        ops.push(self.index_op(owes));
        self.commit(ops).await?;
        self.indexed = owes;
        Ok(())
    }

    /// Commits ops that change no state (snapshots, the index); a refusal to queue them
    /// changes nothing either.
    async fn commit(&mut self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        let ticket = self.store.submit_fenced(Some(self.fence()), ops)?;
        self.durable(ticket).await
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

    /// Applies `events` at once and submits their commit (a snapshot in the same batch
    /// once `snapshot_every` events have piled up); returns the ticket that resolves
    /// when they are durable. Nothing that depends on them may leave the entity before
    /// that (see [`crate::release`]). If this returns an error after applying, or a
    /// ticket awaited through [`Journal::durable`] fails, [`Journal::must_stop`] says so;
    /// a ticket awaited elsewhere (an entity's releaser) must be reported back with
    /// [`Journal::mark_diverged`]. Either way the entity must stop.
    pub fn append(&mut self, events: Vec<E::Event>) -> Result<Option<CommitTicket>, StoreError> {
        if events.is_empty() {
            return Ok(None);
        }
        if self.must_stop() {
            return Err(StoreError::FailStopped(
                "this incarnation's journal is ahead of the store; it is stopping".into(),
            ));
        }
        // A full commit queue is refused here, before anything changes.
        let slot = self.store.reserve()?;
        let encoded = events
            .iter()
            .map(encode_value)
            .collect::<Result<Vec<_>, _>>()?;
        // Applied in place, without a copy of the state: from here on a failure leaves
        // memory ahead of the store, and the entity must stop.
        events
            .iter()
            .for_each(|event| E::apply(&mut self.state, event));
        self.submit_applied(Some(slot), encoded, Vec::new())
    }

    /// What a decision needs to change the state itself (see
    /// [`crate::runtime::Decide::emit`]): the state, and the store to reserve a place in
    /// the commit queue from, or `None` once this journal must take nothing more.
    pub(crate) fn decide_parts(&mut self) -> (&mut E::State, Option<&Store>) {
        let open = !self.must_stop();
        (&mut self.state, open.then_some(&self.store))
    }

    /// Journals events a decision has already applied to the state (`encoded`, in
    /// order), with `extra` writes that must be in the same batch (dead letters), in
    /// the place `slot` reserved; with no slot (a decision without a store) nothing is
    /// written. A snapshot joins the batch once `snapshot_every` events have piled up,
    /// and the outbox index follows the state.
    pub(crate) fn submit_applied(
        &mut self,
        slot: Option<super::CommitSlot>,
        encoded: Vec<Vec<u8>>,
        extra: Vec<WriteOp>,
    ) -> Result<Option<CommitTicket>, StoreError> {
        let Some(slot) = slot else {
            return Ok(None);
        };
        let events = encoded.len() as u64;
        let mut ops = Vec::with_capacity(encoded.len() + extra.len() + 2);
        for (offset, event) in encoded.into_iter().enumerate() {
            let seq = self.seq + 1 + offset as u64;
            ops.push(WriteOp::Put(journal_key(E::KIND, &self.id, seq), event));
        }
        ops.extend(extra);
        let last_seq = self.seq + events;
        let snapshot_due = last_seq - self.snapshot_seq >= self.snapshot_every;
        if snapshot_due {
            let snapshot = self.snapshot_ops(last_seq, &self.state).inspect_err(|_| {
                self.diverged = true;
            })?;
            ops.extend(snapshot);
        }
        let owes = E::owes_grants(&self.state);
        if owes != self.indexed {
            ops.push(self.index_op(owes));
        }
        let ticket = slot.submit(Some(self.fence()), ops);
        self.indexed = owes;
        self.seq = last_seq;
        if snapshot_due {
            self.snapshot_seq = last_seq;
        }
        Ok(Some(ticket))
    }

    /// Makes `events` durable, then returns; the state has them at once (see
    /// [`Journal::append`]). On an error the entity must stop.
    pub async fn persist(&mut self, events: Vec<E::Event>) -> Result<(), StoreError> {
        match self.append(events)? {
            Some(ticket) => self.durable(ticket).await,
            None => Ok(()),
        }
    }

    /// Waits for a ticket of this journal, noting a failure.
    pub async fn durable(&mut self, ticket: CommitTicket) -> Result<(), StoreError> {
        ticket
            .durable()
            .await
            .inspect_err(|error| self.note_failure(error))
    }

    /// A ticket of this journal failed: its events are applied in memory but may not
    /// be in the store, so this instance must stop whatever the error.
    fn note_failure(&mut self, error: &StoreError) {
        if let StoreError::Fenced { .. } = error {
            self.fenced = true;
        }
        self.diverged = true;
    }

    /// Marks the journal as ahead of the store (a commit it did not wait for failed).
    pub fn mark_diverged(&mut self) {
        self.diverged = true;
    }

    /// True once this instance must stop: a newer incarnation took over, or a commit
    /// whose events are already applied in memory failed.
    pub fn must_stop(&self) -> bool {
        self.fenced || self.diverged
    }

    /// Writes a snapshot of the current state and drops the journal it covers.
    pub async fn snapshot(&mut self) -> Result<(), StoreError> {
        if self.must_stop() {
            // Memory may hold events whose commit failed: never write them as a
            // snapshot. The journal in the store is the truth.
            return Err(StoreError::FailStopped(
                "no snapshot of a journal that is ahead of the store".into(),
            ));
        }
        if self.snapshot_seq == self.seq {
            return Ok(());
        }
        let ops = self.snapshot_ops(self.seq, &self.state)?;
        self.commit(ops).await?;
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
