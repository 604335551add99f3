//! What every entity actor runs on, whatever its kind: the followers of its streams (kept
//! across incarnations), the pipelined release of what its events allow (replies,
//! publications, messages to other entities), its one deadline on the hub's timer, and
//! the end of every message (release, reschedule, stop if the journal refused a commit).
//!
//! A kind brings its state, events and decisions; `EntityCore` is the rest. A handler
//! appends events to its journal, hands the commit ticket to [`EntityCore::after`], and
//! pushes what depends on them with [`EntityCore::reply`], [`EntityCore::publish`],
//! [`EntityCore::spawn_after`]; [`EntityCore::finish`] closes every message.

use crate::connections::Outbound;
use crate::directory::{Followers, followers_of};
use crate::hub::Hub;
use crate::release::{Effects, Releaser};
use crate::store::CommitTicket;
use crate::stream::Stream;
use bytes::Bytes;
use playtree_protocol::Event;
use ractor::{ActorRef, Message, RpcReplyPort};
use std::future::Future;

#[derive(Debug)]
pub struct EntityCore<M: Message> {
    kind: &'static str,
    myself: ActorRef<M>,
    pub hub: Hub,
    /// The connections following the entity's streams.
    pub followers: Followers,
    /// What the message being handled leaves to release once its events are durable.
    pub effects: Effects,
    releaser: Releaser,
}

impl<M: Message> EntityCore<M> {
    /// The core of a new incarnation (from its `pre_start`).
    pub fn start(kind: &'static str, myself: &ActorRef<M>, hub: Hub, followers: Followers) -> Self {
        let releaser =
            Releaser::start(myself.get_cell(), kind, hub.config.actors.release_queue_max);
        EntityCore {
            kind,
            myself: myself.clone(),
            hub,
            followers,
            effects: Effects::default(),
            releaser,
        }
    }

    /// What is pushed from now on waits for this commit.
    pub fn after(&mut self, ticket: Option<CommitTicket>) {
        if let Some(ticket) = ticket {
            self.effects.after(ticket);
        }
    }

    /// Answers a request once what it did is durable.
    pub fn reply<T: Send + 'static>(&mut self, port: RpcReplyPort<T>, value: T) {
        self.effects.push(move || {
            // A caller that stopped waiting has nothing left to tell.
            let _ = port.send(value);
        });
    }

    /// Encodes `event` once on `stream` (kept for resumes); every follower gets it once
    /// the events before it are durable, unless a newer incarnation has taken over.
    pub fn publish(&mut self, stream: &mut Stream, event: Event) {
        let frame = stream.publish(event);
        let (followers, epoch) = (self.followers.clone(), stream.epoch());
        self.effects
            .push(move || followers_of(&followers).send_in_epoch(epoch, &frame));
    }

    /// Makes `outbound` follow `stream` for `player`, in its turn among the releases:
    /// `frames` (a replay or a snapshot, computed now) hold every frame published before
    /// this point and reach it first; every later frame reaches it too. No gap, no
    /// duplicate, nothing before it is durable. If a newer incarnation has taken the
    /// followers over meanwhile, the connection is asked to reconnect and resume.
    pub fn follow(
        &mut self,
        stream: &Stream,
        player: String,
        outbound: Outbound,
        frames: Vec<Bytes>,
    ) {
        let (followers, epoch) = (self.followers.clone(), stream.epoch());
        self.effects.push(move || {
            let mut followers = followers_of(&followers);
            if followers.superseded(epoch) {
                outbound.close_for_resync();
                return;
            }
            for frame in frames {
                outbound.push("event", frame);
            }
            followers.add(&player, outbound);
        });
    }

    /// Runs `work` as a task of its own once the events so far are durable: messages to
    /// other entities, which may have to be activated first, are never awaited in a
    /// handler.
    pub fn spawn_after<F>(&mut self, work: impl FnOnce(Hub) -> F + Send + 'static)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let hub = self.hub.clone();
        self.effects.push(move || {
            tokio::spawn(work(hub));
        });
    }

    /// Sets the entity's one deadline: at `due_ms`, the timer casts it `wake()`.
    pub fn schedule(&self, due_ms: Option<u64>, wake: fn() -> M) {
        self.hub.timers.schedule(self.myself.get_id(), due_ms, || {
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
        self.hub.timers.cancel(self.myself.get_id());
        self.releaser.close().await;
        !self.releaser.has_failed()
    }
}
