//! The one runtime every entity kind runs on. `EntityRuntime<B>` is the actor: it
//! activates the entity (storage fence, recovery, creation), hands each message to the
//! kind's pure [`Behaviour::decide`], journals the events that decision emitted in one
//! commit, interprets its effects once that commit is durable (pipelined: the mailbox
//! goes on meanwhile), keeps the entity's one deadline on the hub's timer, and
//! passivates it when nobody follows it and it owes nothing.
//!
//! A kind is one module: its state, events and `apply` (the journal's [`Entity`]), its
//! inputs, memory and `decide` ([`Behaviour`]).

mod core;
mod decide;
#[cfg(test)]
mod replay;
#[cfg(test)]
pub(crate) mod testing;

pub use self::core::EntityCore;
pub use decide::{ActivationError, Behaviour, Decide, Decided, Effect, Env};

use crate::directory::{Followers, followers_of};
use crate::hub::Hub;
use crate::store::{CommitTicket, Journal, StoreError};
use crate::stream::Stream;
use decide::Gate;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use std::marker::PhantomData;

/// The actor that runs entities of kind `B`.
pub struct EntityRuntime<B>(PhantomData<fn() -> B>);

impl<B> std::fmt::Debug for EntityRuntime<B> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("EntityRuntime")
    }
}

impl<B> Default for EntityRuntime<B> {
    fn default() -> Self {
        EntityRuntime(PhantomData)
    }
}

/// What activating an entity takes.
#[derive(Debug)]
pub struct EntityArgs<B: Behaviour> {
    pub id: B::Id,
    pub start: B::Start,
    /// The connections following the entity, kept across its incarnations.
    pub followers: Followers,
    pub hub: Hub,
}

/// A live incarnation.
#[derive(Debug)]
pub struct Incarnation<B: Behaviour> {
    id: B::Id,
    actor: ActorId,
    env: Env,
    journal: Journal<B>,
    memory: B::Memory,
    stream: Stream,
    core: EntityCore<B::Msg>,
    last_active_ms: u64,
    /// When to look next whether the entity may passivate (activity does not move it:
    /// that would reschedule the timer on every message).
    passivate_check_ms: u64,
    /// Set once the entity passivates: what it is still sent goes to its next
    /// incarnation (see [`Behaviour::redirect`]).
    draining: bool,
}

impl<B: Behaviour> Incarnation<B> {
    /// The decision context over the live state; `journaled` lets it emit events (a
    /// read-only context, for a snapshot, does not).
    fn context(&mut self, now_ms: u64, journaled: bool) -> Decide<'_, B> {
        let (state, store) = self.journal.decide_parts();
        let gate = match store {
            Some(store) if journaled => Gate::Store(store),
            _ => Gate::Closed,
        };
        Decide::new(
            &self.id,
            &self.env,
            now_ms,
            self.actor,
            state,
            &mut self.memory,
            &mut self.stream,
            &self.core.followers,
            gate,
        )
    }

    /// Runs one decision on the live state: its events go into one commit, whose
    /// ticket comes back with the effects to release after it.
    fn decide(
        &mut self,
        now_ms: u64,
        decision: impl FnOnce(&mut Decide<'_, B>),
    ) -> Result<(Option<CommitTicket>, Vec<Effect<B>>), StoreError> {
        let mut cx = self.context(now_ms, true);
        decision(&mut cx);
        let mut decided = cx.finish();
        let store = &self.core.hub.store;
        let mut extra = decided
            .letters
            .iter()
            .map(|letter| store.dead_letter_op(letter))
            .collect::<Result<Vec<_>, _>>()?;
        extra.append(&mut decided.writes);
        let ticket = self
            .journal
            .submit_applied(decided.slot, decided.encoded, extra)?;
        for letter in decided.letters {
            // Logged and counted once durable, with the rest of the decision.
            decided
                .effects
                .push(Effect::Then(Box::new(move || letter.filed())));
        }
        Ok((ticket, decided.effects))
    }

    /// Queues `effects` behind `ticket` (and so behind every earlier commit).
    fn release_after(&mut self, ticket: Option<CommitTicket>, effects: Vec<Effect<B>>) {
        self.core.after(ticket);
        for effect in effects {
            self.interpret(effect);
        }
    }

    /// Queues an effect behind the commit that covers the events before it (an index
    /// update is done at once).
    fn interpret(&mut self, effect: Effect<B>) {
        let core = &mut self.core;
        match effect {
            Effect::Publish { frame, epoch } => {
                let followers = core.followers.clone();
                core.effects
                    .push(move || followers_of(&followers).send_in_epoch(epoch, &frame));
            }
            Effect::Reply(reply) | Effect::Then(reply) => core.effects.push(reply),
            Effect::Follow {
                player,
                outbound,
                frames,
                epoch,
            } => {
                let (followers, id) = (core.followers.clone(), self.id.clone());
                core.effects.push(move || {
                    let mut followers = followers_of(&followers);
                    if followers.superseded(epoch) {
                        outbound.close_for_resync();
                        return;
                    }
                    for frame in frames {
                        outbound.push("event", frame);
                    }
                    B::followed(&id, &outbound);
                    followers.add(&player, outbound);
                });
            }
            Effect::Unfollow { player, connection } => {
                let (followers, id) = (core.followers.clone(), self.id.clone());
                core.effects.push(move || {
                    let removed = followers_of(&followers).remove_connection(&player, connection);
                    if let Some(outbound) = removed {
                        B::unfollowed(&id, &outbound);
                    }
                });
            }
            Effect::UnfollowPlayer { player } => {
                let (followers, id) = (core.followers.clone(), self.id.clone());
                core.effects.push(move || {
                    for outbound in followers_of(&followers).remove_player(&player) {
                        B::unfollowed(&id, &outbound);
                    }
                });
            }
            Effect::ToSession { player, message } => {
                let hub = core.hub.clone();
                core.effects
                    .push(move || hub.send_to_session(player, message));
            }
            Effect::ToRoom { room, message } => {
                let hub = core.hub.clone();
                core.effects.push(move || hub.send_to_room(room, message));
            }
            Effect::ToTree { root, message } => {
                let hub = core.hub.clone();
                core.effects.push(move || hub.send_to_tree(root, message));
            }
            Effect::Own(effect) => {
                let (hub, id, myself) = (core.hub.clone(), self.id.clone(), core.myself().clone());
                core.effects
                    .push(move || B::perform(&hub, &id, &myself, effect));
            }
            Effect::Index(effect) => B::perform(&core.hub, &self.id, core.myself(), effect),
        }
    }

    /// A new incarnation tells the connections that followed an older one where the
    /// entity stands now: a snapshot in the new epoch, never silence.
    fn resync_followers(&mut self, now_ms: u64) {
        let cx = self.context(now_ms, false);
        let snapshot = B::snapshot(&cx);
        drop(cx);
        let mut followers = followers_of(&self.core.followers);
        // Frames an older incarnation still has on their way are stale from now on.
        followers.begin_epoch(self.stream.epoch());
        if followers.is_empty() {
            return;
        }
        let state = self.journal.state();
        for outbound in followers.retain_players(|player| B::keeps_follower(state, player)) {
            B::unfollowed(&self.id, &outbound);
        }
        followers.send(&self.stream.snapshot_frame(snapshot));
        metrics::counter!("playtree_resumes_total", "outcome" => "restart_snapshot").increment(1);
    }

    fn next_deadline(&self) -> Option<u64> {
        let own = B::next_deadline(&self.env, self.journal.state(), &self.memory);
        crate::timers::earliest([own, Some(self.passivate_check_ms)])
    }

    /// At its deadline: passivates if the entity has been idle long enough, it may, and
    /// nobody follows it (or its kind passivates while followed); says whether it did.
    fn passivate_if_idle(&mut self, myself: &ActorRef<B::Msg>, now_ms: u64) -> bool {
        let hub = &self.core.hub;
        let idle_after_ms = B::passivate_after_ms(&hub.config);
        let idle_ms = now_ms.saturating_sub(self.last_active_ms);
        if idle_ms < idle_after_ms
            || (!B::passivates_while_followed() && !followers_of(&self.core.followers).is_empty())
            || !B::may_passivate(self.journal.state(), &self.memory)
        {
            self.passivate_check_ms = EntityCore::<B::Msg>::next_passivation_check(
                now_ms,
                self.last_active_ms,
                idle_after_ms,
            );
            return false;
        }
        hub.mark_draining(B::ENTITY, myself.get_id());
        self.draining = true;
        metrics::counter!("playtree_actor_passivations_total", "kind" => B::KIND).increment(1);
        // Messages already queued are handled before the actor stops; later sends fail
        // and re-resolve through the directory, which waits for this stop.
        let _ = myself.drain();
        true
    }
}

impl<B: Behaviour> Actor for EntityRuntime<B> {
    type Msg = B::Msg;
    type State = Incarnation<B>;
    type Arguments = EntityArgs<B>;

    async fn pre_start(
        &self,
        myself: ActorRef<B::Msg>,
        args: EntityArgs<B>,
    ) -> Result<Incarnation<B>, ActorProcessingErr> {
        let hub = args.hub;
        let key = args.id.to_string();
        // A lookup of an entity that never existed must not leave a trace in the store
        // (activation writes the incarnation).
        if B::must_exist(&args.start) && !hub.store.exists(B::KIND, &key).await? {
            return Err(ActivationError::Unknown(format!("{} {key}", B::KIND)).into());
        }
        let journal: Journal<B> =
            Journal::open(hub.store.clone(), &key, hub.config.store.snapshot_every).await?;
        let now_ms = hub.now_ms();
        // The stream's epoch is the incarnation number: unique per activation, whatever
        // the clock says.
        let stream = Stream::new(
            B::stream(&args.id),
            journal.incarnation(),
            B::history_len(&hub.config),
        );
        let mut incarnation = Incarnation {
            id: args.id,
            actor: myself.get_id(),
            env: Env::of(&hub),
            journal,
            memory: B::Memory::default(),
            stream,
            core: EntityCore::start(B::KIND, &myself, hub.clone(), args.followers),
            last_active_ms: now_ms,
            passivate_check_ms: now_ms + B::passivate_after_ms(&hub.config),
            draining: false,
        };
        let mut refused = None;
        let start = args.start;
        let (ticket, effects) =
            incarnation.decide(now_ms, |cx| refused = B::activate(cx, start).err())?;
        if let Some(error) = refused {
            return Err(error.into());
        }
        if let Some(ticket) = ticket {
            // What creates the entity is durable before it serves anyone.
            incarnation.journal.durable(ticket).await?;
        }
        incarnation.resync_followers(now_ms);
        incarnation.release_after(None, effects);
        hub.register(B::ENTITY, myself.get_id(), &key);
        let due = incarnation.next_deadline();
        incarnation.core.finish(due, B::deadline, false).await;
        Ok(incarnation)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<B::Msg>,
        incarnation: &mut Incarnation<B>,
    ) -> Result<(), ActorProcessingErr> {
        if !incarnation.core.stop().await {
            incarnation.journal.mark_diverged();
        }
        B::unlist(&incarnation.core.hub, &incarnation.id, incarnation.actor);
        if let Err(error) = incarnation.journal.snapshot().await {
            tracing::warn!(kind = B::KIND, id = %incarnation.id, %error, "snapshot on stop failed; the journal still holds every event");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<B::Msg>,
        message: B::Msg,
        incarnation: &mut Incarnation<B>,
    ) -> Result<(), ActorProcessingErr> {
        if incarnation.core.has_failed() {
            // A commit of this entity failed: its memory is ahead of the store, so
            // nothing more is journaled or snapshotted; it is stopping.
            incarnation.journal.mark_diverged();
        }
        if incarnation.draining && B::is_activity(&message) {
            // Queued before the passivation: the next incarnation takes it.
            metrics::counter!("playtree_actor_redirected_total", "kind" => B::KIND).increment(1);
            B::redirect(&incarnation.core.hub, &incarnation.id, message);
            return Ok(());
        }
        let now_ms = incarnation.core.hub.now_ms();
        if B::is_activity(&message) {
            incarnation.last_active_ms = now_ms;
        }
        let deadline = B::is_deadline(&message);
        match incarnation.decide(now_ms, |cx| B::decide(cx, message)) {
            Ok((ticket, effects)) => incarnation.release_after(ticket, effects),
            Err(error) => {
                // `must_stop` says so now; `finish` stops the entity.
                tracing::error!(kind = B::KIND, id = %incarnation.id, %error, "events applied but not journaled; the entity stops");
            }
        }
        if deadline && now_ms >= incarnation.passivate_check_ms {
            incarnation.passivate_if_idle(&myself, now_ms);
        }
        let due = incarnation.next_deadline();
        let must_stop = incarnation.journal.must_stop();
        incarnation.core.finish(due, B::deadline, must_stop).await;
        Ok(())
    }
}
