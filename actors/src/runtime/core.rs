//! The part of an incarnation that is not the kind's: the followers of its stream (kept
//! across incarnations), the pipelined release of what its events allow, its one
//! deadline on the hub's timer, and the end of every message (release, reschedule, stop
//! if the journal refused a commit).

use crate::directory::Followers;
use crate::release::{Effects, Releaser};
use crate::store::CommitTicket;
use crate::timers::Timers;
use ractor::{ActorRef, Message};

#[derive(Debug)]
pub struct EntityCore<M: Message> {
    kind: &'static str,
    myself: ActorRef<M>,
    timers: Timers,
    /// The connections following the entity's streams.
    pub followers: Followers,
    /// What the message being handled leaves to release once its events are durable.
    pub effects: Effects,
    releaser: Releaser,
}

impl<M: Message> EntityCore<M> {
    /// The core of a new incarnation (from its `pre_start`).
    pub fn start(
        kind: &'static str,
        myself: &ActorRef<M>,
        timers: Timers,
        release_queue_max: usize,
        followers: Followers,
    ) -> Self {
        let releaser = Releaser::start(myself.get_cell(), kind, release_queue_max);
        EntityCore {
            kind,
            myself: myself.clone(),
            timers,
            followers,
            effects: Effects::default(),
            releaser,
        }
    }

    /// The incarnation's actor.
    pub fn myself(&self) -> &ActorRef<M> {
        &self.myself
    }

    /// What is pushed from now on waits for this commit.
    pub fn after(&mut self, ticket: Option<CommitTicket>) {
        if let Some(ticket) = ticket {
            self.effects.after(ticket);
        }
    }

    /// Sets the entity's one deadline: at `due_ms`, the timer casts it `wake()`.
    pub fn schedule(&self, due_ms: Option<u64>, wake: fn() -> M) {
        self.timers.schedule(self.myself.get_id(), due_ms, || {
            // Built only when the deadline moves: most messages leave it as it was.
            let actor = self.myself.clone();
            Box::new(move || {
                // A stopped entity has nothing left to do.
                let _ = actor.cast(wake());
            })
        });
    }

    /// Closes a message: releases its effects in order, sets the next deadline, and
    /// stops the entity if its journal refused a commit (`must_stop`) or a release
    /// failed.
    pub async fn finish(&mut self, due_ms: Option<u64>, wake: fn() -> M, must_stop: bool) {
        let effects = std::mem::take(&mut self.effects);
        self.releaser.release(effects).await;
        self.schedule(due_ms, wake);
        if must_stop || self.releaser.has_failed() {
            // A newer incarnation owns the journal, or a commit failed with events
            // already applied: this instance must not go on.
            tracing::error!(
                kind = self.kind,
                "the journal refused a commit; the entity stops"
            );
            metrics::counter!("playtree_actor_fenced_total", "kind" => self.kind).increment(1);
            self.myself
                .stop(Some("the journal refused a commit".into()));
        }
    }

    /// True once a commit this entity did not wait for (or one of its releases) failed:
    /// it is being stopped.
    pub fn has_failed(&self) -> bool {
        self.releaser.has_failed()
    }

    /// When an entity that was last active at `last_active_ms` should next look whether
    /// it may passivate, seen at `now_ms`. Activity does not move the check (that would
    /// reschedule the timer on every message); the check, when it comes, looks again.
    pub fn next_passivation_check(now_ms: u64, last_active_ms: u64, idle_ms_min: u64) -> u64 {
        if now_ms >= last_active_ms + idle_ms_min {
            // Idle long enough but still followed or owing: a full period from now.
            now_ms + idle_ms_min
        } else {
            last_active_ms + idle_ms_min
        }
    }

    /// The entity is stopping (from its `post_stop`): no deadline any more, and what
    /// its last messages left to release goes out now, before a new incarnation can
    /// start. Returns false if a commit or a release failed: the journal in the store
    /// is then the truth, and memory must not be snapshotted.
    pub async fn stop(&mut self) -> bool {
        self.timers.cancel(self.myself.get_id());
        self.releaser.close().await;
        !self.releaser.has_failed()
    }
}
