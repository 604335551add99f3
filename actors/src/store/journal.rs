//! A journaled entity: state that changes only by applying events, each commit's events
//! durable before anything that depends on them leaves the entity. The live path
//! ([`Journal::submit_applied`]) and recovery ([`Journal::open`]) run the same `apply`,
//! so replay reproduces live state.
//!
//! The fence: every commit of an entity carries the incarnation that makes it and the
//! number of the journal record it expects to follow (JetStream's "expected last
//! sequence"). An activation reads the entity and takes the next incarnation number in
//! memory; its first commit writes it. An older incarnation (one that lost its turn, or
//! a paused one waking up) can never write again, and a commit that raced an older one
//! is refused instead of writing beside it. An activation that only reads (a wallet, a
//! statistic) costs no write at all.

use super::{
    CommitSlot, CommitTicket, Fence, FenceValue, Store, StoreError, WriteOp, decode_value,
    encode_checked, incarnation_key, journal_key, outbox_index_key, part_key, snapshot_key,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;

/// A kind of persisted entity.
pub trait Entity: Send + 'static {
    /// Name of the kind in keys, logs and metrics ("session", "room").
    const KIND: &'static str;
    type State: Default + Serialize + DeserializeOwned + Send + Sync + Debug + Clone;
    type Event: Serialize + DeserializeOwned + Send + Sync + Debug + Clone;
    /// One part of a state snapshotted in parts (see [`Entity::parts`]); `()` for a
    /// state snapshotted whole.
    type Part: Serialize + DeserializeOwned + Send + Sync + Debug + Clone;

    /// The only way state changes. Pure: no I/O, no clock, no randomness.
    fn apply(state: &mut Self::State, event: &Self::Event);

    /// Whether the state holds work the entity owes others and must finish by itself
    /// (letters not yet acknowledged). The journal keeps the outbox index in step with
    /// it, in the same batch, so that start-up finds every entity that owes without
    /// reading any entity.
    fn owes(_state: &Self::State) -> bool {
        false
    }

    /// Incremental snapshots: a state whose bulk is one map (a referral tree's nodes)
    /// is snapshotted as a head (the state with the map empty) plus one record per
    /// part, and a snapshot writes only the parts changed since the last one. `None`:
    /// the state is snapshotted whole.
    fn parts(_state: &mut Self::State) -> Option<&mut BTreeMap<String, Self::Part>> {
        None
    }

    /// Notes in `touched` the parts `event` changed (called after applying it).
    fn touched(_state: &Self::State, _event: &Self::Event, _touched: &mut BTreeSet<String>) {}
}

/// One entity's state with its journal position.
#[derive(Debug)]
pub struct Journal<E: Entity> {
    id: String,
    state: E::State,
    /// Number of the last journal record (0 before the first).
    seq: u64,
    /// Number of the record the latest snapshot covers.
    snapshot_seq: u64,
    snapshot_every: u64,
    /// The fence as the store holds it (after this incarnation's commits so far).
    fence: FenceValue,
    /// This activation's number: the fence's once its first commit is submitted.
    incarnation: u64,
    /// Parts changed since the last snapshot.
    dirty: BTreeSet<String>,
    /// Whether the outbox index entry is present.
    indexed: bool,
    /// Set once a commit was refused because a newer incarnation exists: this instance
    /// must stop.
    fenced: bool,
    /// Set once a commit whose events were applied in memory failed.
    diverged: bool,
    store: Store,
}

/// An entity's state as recovered from the store: snapshot, then newer journal records.
struct Recovered<S> {
    state: S,
    seq: u64,
    snapshot_seq: u64,
    fence: FenceValue,
    /// Parts the records after the snapshot changed: the next snapshot writes them.
    dirty: BTreeSet<String>,
    /// Whether the outbox index entry is present.
    indexed: bool,
}

/// Reads made while an older incarnation still wrote disagree with its fence; they are
/// read again this many times before activation is refused.
const RECOVERY_READS_MAX: usize = 3;

async fn recover<E: Entity>(store: &Store, id: &str) -> Result<Recovered<E::State>, StoreError> {
    let mut reads = 0;
    loop {
        reads += 1;
        match recover_once::<E>(store, id).await {
            Err(StoreError::Fenced { .. }) if reads < RECOVERY_READS_MAX => continue,
            result => return result,
        }
    }
}

async fn recover_once<E: Entity>(
    store: &Store,
    id: &str,
) -> Result<Recovered<E::State>, StoreError> {
    let stored = store.load(E::KIND, id).await?;
    let (mut seq, mut state) = match stored.snapshot {
        Some(bytes) => {
            decode_value::<(u64, E::State)>(|| format!("snapshot {}/{id}", E::KIND), &bytes)?
        }
        None => (0, E::State::default()),
    };
    if let Some(parts) = E::parts(&mut state) {
        for (name, bytes) in stored.parts {
            let part: E::Part = decode_value(|| format!("part {}/{id}/{name}", E::KIND), &bytes)?;
            parts.insert(name, part);
        }
    }
    let snapshot_seq = seq;
    let mut dirty = BTreeSet::new();
    for (entry_seq, bytes) in stored.journal {
        if entry_seq <= seq {
            // Left behind by a snapshot whose truncation did not finish; already in it.
            continue;
        }
        if entry_seq != seq + 1 {
            return Err(StoreError::Corrupt {
                key: format!("journal {}/{id}", E::KIND),
                reason: format!("gap: record {entry_seq} follows {seq}"),
            });
        }
        let event: E::Event =
            decode_value(|| format!("journal {}/{id}#{entry_seq}", E::KIND), &bytes)?;
        E::apply(&mut state, &event);
        E::touched(&state, &event, &mut dirty);
        seq = entry_seq;
    }
    let (incarnation, fenced_seq) = stored.fence;
    if fenced_seq != seq {
        if fenced_seq > seq {
            // Written meanwhile (an older incarnation still finishing): read again.
            return Err(StoreError::Fenced {
                owner: format!("{}/{id}", E::KIND),
                incarnation,
                current: incarnation,
            });
        }
        return Err(StoreError::Corrupt {
            key: format!("journal {}/{id}", E::KIND),
            reason: format!("the journal reaches record {seq} beyond its fence's {fenced_seq}"),
        });
    }
    Ok(Recovered {
        state,
        seq,
        snapshot_seq,
        fence: stored.fence,
        dirty,
        indexed: stored.indexed,
    })
}

impl<E: Entity> Journal<E> {
    /// Activates an entity: recovers its latest snapshot and every newer record, and
    /// takes the next incarnation number (written by its first commit). A new entity
    /// starts from `E::State::default()` at record 0.
    pub async fn open(store: Store, id: &str, snapshot_every: u64) -> Result<Self, StoreError> {
        let recovered = recover::<E>(&store, id).await?;
        let mut journal = Journal {
            id: id.to_owned(),
            state: recovered.state,
            seq: recovered.seq,
            snapshot_seq: recovered.snapshot_seq,
            snapshot_every,
            fence: recovered.fence,
            incarnation: recovered.fence.0 + 1,
            dirty: recovered.dirty,
            indexed: recovered.indexed,
            fenced: false,
            diverged: false,
            store,
        };
        // Heal an outbox index entry that disagrees with the state (lost with a
        // partial restore): the entity claims its incarnation with it.
        if E::owes(&journal.state) != journal.indexed {
            let ticket = journal.commit_ops(Vec::new())?;
            journal.durable(ticket).await?;
        }
        Ok(journal)
    }

    /// Reads an entity's current durable state without activating it (no fence is
    /// taken): for inspection, tests and tools. Returns `(seq, state, incarnation)`.
    pub async fn inspect(store: &Store, id: &str) -> Result<(u64, E::State, u64), StoreError> {
        let recovered = recover::<E>(store, id).await?;
        Ok((recovered.seq, recovered.state, recovered.fence.0))
    }

    /// This activation's number; also the epoch of the entity's streams, once
    /// [`Journal::is_claimed`].
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether this incarnation's number is in the store (its first commit was
    /// submitted): an epoch may be handed out only then, or it could be handed out
    /// again by the next activation.
    pub fn is_claimed(&self) -> bool {
        self.fence.0 == self.incarnation
    }

    /// Writes this incarnation's number if no commit has yet: for an entity that is
    /// about to hand out an epoch before anything else made it write.
    pub fn claim(&mut self) -> Result<Option<CommitTicket>, StoreError> {
        if self.is_claimed() {
            return Ok(None);
        }
        self.commit_ops(Vec::new()).map(Some)
    }

    /// The fence of the next commit: expect what the store holds, set this
    /// incarnation and the record `seq`.
    fn next_fence(&mut self, seq: u64) -> Fence {
        let fence = Fence {
            key: incarnation_key(E::KIND, &self.id),
            expect: self.fence,
            set: (self.incarnation, seq),
            owner: format!("{}/{}", E::KIND, self.id),
        };
        self.fence = fence.set;
        fence
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

    /// Submits ops that change no state (a snapshot, the index, the fence alone), with
    /// the outbox index set from the state; a refusal to queue them changes nothing.
    fn commit_ops(&mut self, mut ops: Vec<WriteOp>) -> Result<CommitTicket, StoreError> {
        let slot = self.store.reserve()?;
        let owes = E::owes(&self.state);
        if owes != self.indexed {
            ops.push(self.index_op(owes));
            self.indexed = owes;
        }
        let fence = self.next_fence(self.seq);
        Ok(slot.submit(Some(fence), ops))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> &E::State {
        &self.state
    }

    /// Number of the last journal record.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// What a decision needs to change the state itself: the state, the parts it
    /// touched, and the store to reserve a place in the commit queue from, or `None`
    /// once this journal must take nothing more.
    pub(crate) fn decide_parts(
        &mut self,
    ) -> (&mut E::State, &mut BTreeSet<String>, Option<&Store>) {
        let open = !self.must_stop();
        (
            &mut self.state,
            &mut self.dirty,
            open.then_some(&self.store),
        )
    }

    /// Journals events a decision has already applied to the state (`encoded`, in
    /// order, one record each), with `extra` writes that must be in the same batch, in
    /// the place `slot` reserved; with no slot (a decision without a store) nothing is
    /// written. A snapshot joins the batch once `snapshot_every` records have piled up,
    /// and the outbox index follows the state. If this returns an error, or a ticket
    /// awaited elsewhere (an entity's releaser) fails, the entity must stop (see
    /// [`Journal::mark_diverged`]).
    pub(crate) fn submit_applied(
        &mut self,
        slot: Option<CommitSlot>,
        encoded: Vec<Vec<u8>>,
        extra: Vec<WriteOp>,
    ) -> Result<Option<CommitTicket>, StoreError> {
        let Some(slot) = slot else {
            return Ok(None);
        };
        let records = encoded.len() as u64;
        let mut ops = Vec::with_capacity(encoded.len() + extra.len() + 2);
        for (offset, record) in encoded.into_iter().enumerate() {
            let seq = self.seq + 1 + offset as u64;
            ops.push(WriteOp::Put(journal_key(E::KIND, &self.id, seq), record));
        }
        ops.extend(extra);
        let last_seq = self.seq + records;
        let snapshot_due = last_seq - self.snapshot_seq >= self.snapshot_every;
        if snapshot_due {
            let snapshot = self.snapshot_ops(last_seq).inspect_err(|_| {
                self.diverged = true;
            })?;
            ops.extend(snapshot);
        }
        let owes = E::owes(&self.state);
        if owes != self.indexed {
            ops.push(self.index_op(owes));
            self.indexed = owes;
        }
        let fence = self.next_fence(last_seq);
        let ticket = slot.submit(Some(fence), ops);
        self.seq = last_seq;
        if snapshot_due {
            self.snapshot_seq = last_seq;
        }
        Ok(Some(ticket))
    }

    /// Applies `events` at once and submits their commit (one record each); the ticket
    /// resolves when they are durable. For tools and tests: entities journal through
    /// their runtime. On an error the entity must stop ([`Journal::must_stop`]).
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
            .map(|event| {
                encode_checked::<_, E::Event>(
                    || format!("record of {}/{}", E::KIND, self.id),
                    event,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        for event in &events {
            E::apply(&mut self.state, event);
            E::touched(&self.state, event, &mut self.dirty);
        }
        self.submit_applied(Some(slot), encoded, Vec::new())
    }

    /// Makes `events` durable, then returns (see [`Journal::append`]).
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
        let ops = self.snapshot_ops(self.seq)?;
        let ticket = self.commit_ops(ops)?;
        self.durable(ticket).await?;
        self.snapshot_seq = self.seq;
        Ok(())
    }

    /// The writes of a snapshot at record `seq`: the whole state, or its head and the
    /// parts changed since the last one; then the journal it covers is dropped.
    fn snapshot_ops(&mut self, seq: u64) -> Result<Vec<WriteOp>, StoreError> {
        let label = format!("snapshot {}/{}", E::KIND, self.id);
        let what = || label.clone();
        let mut ops = Vec::new();
        match E::parts(&mut self.state).map(std::mem::take) {
            None => ops.push(WriteOp::Put(
                snapshot_key(E::KIND, &self.id),
                encode_checked::<_, (u64, E::State)>(what, &(seq, &self.state))?,
            )),
            Some(parts) => {
                // The head is the state with its parts taken out for a moment.
                let head = encode_checked::<_, (u64, E::State)>(what, &(seq, &self.state));
                if let Some(slot) = E::parts(&mut self.state) {
                    *slot = parts;
                }
                ops.push(WriteOp::Put(snapshot_key(E::KIND, &self.id), head?));
                let parts = E::parts(&mut self.state);
                for name in std::mem::take(&mut self.dirty) {
                    let key = part_key(E::KIND, &self.id, &name);
                    match parts.as_ref().and_then(|parts| parts.get(&name)) {
                        Some(part) => ops.push(WriteOp::Put(
                            key,
                            encode_checked::<_, E::Part>(|| format!("{label}/{name}"), part)?,
                        )),
                        None => ops.push(WriteOp::Delete(key)),
                    }
                }
            }
        }
        ops.extend(
            (self.snapshot_seq + 1..=seq)
                .map(|old| WriteOp::Delete(journal_key(E::KIND, &self.id, old))),
        );
        Ok(ops)
    }
}
