//! The one runtime every entity kind runs on. `EntityRuntime<B>` is the actor: it
//! activates the entity (recovery, creation), hands each input to the kind's pure
//! decisions, journals what a decision emitted and sent in one commit, interprets its
//! effects once that commit is durable (pipelined: the mailbox goes on meanwhile),
//! keeps the entity's one deadline on the hub's timer, and passivates it when nobody
//! follows it and it owes nothing.
//!
//! It also runs every entity's post office: a letter taken is checked against the
//! sender's mark (a duplicate is only acknowledged again) and recorded in the commit of
//! what the kind did about it, then acknowledged; a letter sent is delivered once its
//! commit is durable and again, with backoff, until acknowledged; acknowledgements are
//! journaled together, with the entity's next commit.
//!
//! The runtime names no kind and no hub: it is given [`Services`] (the store, the
//! timer, the [`Postman`] that carries mail, the directory's [`Registry`]).

mod core;
mod decide;
pub mod durable;
mod mailroom;
#[cfg(test)]
mod replay;
#[cfg(test)]
pub(crate) mod testing;

pub use self::core::EntityCore;
pub use decide::{
    ActivationError, Behaviour, Decide, Decided, Effect, EffectServices, Env, Ids, StreamPosition,
    refusal,
};
pub use durable::{Durable, Record, Stored};
pub use mailroom::backoff_ms;

use crate::directory::{Followers, followers_of};
use crate::mail::{Address, Attachment, Delivery, Msg, PostEvent, Postman, Receipt};
use crate::store::{CommitTicket, DeadLetter, Journal, Store, StoreError, encode_checked};
use crate::stream::Stream;
use crate::timers::Timers;
use decide::Gate;
use mailroom::{Backoff, Mailroom};
use playtree_protocol::{ErrorCode, ErrorReply};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

/// The directory's side of an entity's life: where its incarnations are registered.
pub trait Registry<I>: Send + Sync + Debug + 'static {
    /// A new incarnation is ready to serve (from its activation).
    fn register(&self, actor: ActorId, id: &str);
    /// The incarnation is about to passivate: later lookups wait for it to stop.
    fn mark_draining(&self, actor: ActorId);
    /// Passes a message that reached a passivating incarnation to the next one.
    fn redirect(&self, id: &str, message: Msg<I>);
}

/// Everything an incarnation is given to run.
#[derive(Debug)]
pub struct Services<I> {
    pub env: Env,
    pub store: Store,
    pub timers: Timers,
    pub postman: Arc<dyn Postman>,
    pub registry: Arc<dyn Registry<I>>,
}

impl<I> Services<I> {
    fn effect_services(&self) -> EffectServices {
        EffectServices {
            env: self.env.clone(),
            store: self.store.clone(),
            postman: self.postman.clone(),
        }
    }
}

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
    pub services: Arc<Services<B::Input>>,
}

/// A live incarnation.
#[derive(Debug)]
pub struct Incarnation<B: Behaviour> {
    id: B::Id,
    address: Address,
    actor: ActorId,
    services: Arc<Services<B::Input>>,
    journal: Journal<Durable<B>>,
    memory: B::Memory,
    stream: Stream,
    core: EntityCore<Msg<B::Input>>,
    mail: Mailroom,
    retry: Backoff,
    last_active_ms: u64,
    /// When to look next whether the entity may passivate (activity does not move it:
    /// that would reschedule the timer on every message).
    passivate_check_ms: u64,
    /// Set once the entity passivates: what it is still sent goes to its next
    /// incarnation.
    draining: bool,
}

/// What one decision left: the ticket of its commit, its effects, and whether the
/// store refused it.
pub(crate) struct Outcome<B: Behaviour> {
    pub ticket: Option<CommitTicket>,
    pub effects: Vec<Effect<B>>,
    pub refused: bool,
}

/// Journals what one decision did, in one commit: its events and post events as one
/// record, its dead letters and index writes beside it.
pub(crate) fn journal_decision<B: Behaviour>(
    journal: &mut Journal<Durable<B>>,
    store: &Store,
    id: &B::Id,
    mut decided: Decided<B>,
) -> Result<Outcome<B>, StoreError> {
    let mut extra = decided
        .letters
        .iter()
        .map(|letter| store.dead_letter_op(letter))
        .collect::<Result<Vec<_>, _>>()?;
    extra.append(&mut decided.writes);
    let record = if decided.events.is_empty() && decided.post.is_empty() {
        Vec::new()
    } else {
        let record = Record {
            events: std::mem::take(&mut decided.events),
            post: std::mem::take(&mut decided.post),
        };
        vec![encode_checked::<_, Record<B::Event>>(
            || format!("record of {}/{}", B::KIND, id),
            &record,
        )?]
    };
    let ticket = journal.submit_applied(decided.slot, record, extra)?;
    for letter in decided.letters {
        // Logged and counted once durable, with the rest of the decision.
        decided
            .effects
            .push(Effect::Then(Box::new(move || letter.filed())));
    }
    Ok(Outcome {
        ticket,
        effects: decided.effects,
        refused: decided.refused,
    })
}

fn busy(error: &StoreError) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Timeout,
        format!(
            "the server is busy ({error}); what you asked is still carried out: send it again with the same key for its result"
        ),
    )
}

impl<B: Behaviour> Incarnation<B> {
    fn now_ms(&self) -> u64 {
        self.services.store.now_ms()
    }

    /// Runs one decision on the live state: what it emitted and sent goes into one
    /// commit (with any acknowledgements still to journal), whose ticket comes back
    /// with the effects to release after it. `journaled: false` gives a context that
    /// cannot write (for a snapshot).
    fn decide<R>(
        &mut self,
        now_ms: u64,
        journaled: bool,
        decision: impl FnOnce(&mut Decide<'_, B>) -> R,
    ) -> Result<(Outcome<B>, R), StoreError> {
        let Incarnation {
            id,
            address,
            actor,
            services,
            journal,
            memory,
            stream,
            core,
            mail,
            ..
        } = self;
        let (stored, dirty, store) = journal.decide_parts();
        let gate = match store {
            Some(store) if journaled => Gate::Store(store),
            _ => Gate::Closed,
        };
        let mut cx = Decide::new(
            id,
            address,
            &services.env,
            now_ms,
            *actor,
            stored,
            dirty,
            memory,
            stream,
            &core.followers,
            gate,
        );
        let result = decision(&mut cx);
        if cx.writes_anything() && mail.has_acks() {
            // Acknowledgements ride along with whatever this entity commits anyway.
            cx.post_event(PostEvent::Delivered {
                seqs: mail.take_acked(),
            });
        }
        let decided = cx.finish();
        let outcome = journal_decision(journal, &services.store, id, decided)?;
        Ok((outcome, result))
    }

    /// Runs a decision and queues its effects; says whether the store refused it.
    fn run<R>(&mut self, now_ms: u64, decision: impl FnOnce(&mut Decide<'_, B>) -> R) -> Option<R> {
        match self.decide(now_ms, true, decision) {
            Ok((outcome, result)) => {
                let refused = outcome.refused;
                self.release_after(outcome.ticket, outcome.effects);
                (!refused).then_some(result)
            }
            Err(error) => {
                // `must_stop` says so now; `finish` stops the entity.
                self.journal.mark_diverged();
                tracing::error!(kind = B::KIND, id = %self.id, %error, "events applied but not journaled; the entity stops");
                None
            }
        }
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
        let incarnation = self.journal.incarnation();
        let now_ms = self.now_ms();
        let core = &mut self.core;
        match effect {
            Effect::Publish { frame } => {
                let followers = core.followers.clone();
                core.effects
                    .push(move || followers_of(&followers).send_from(incarnation, &frame));
            }
            Effect::Reply(reply) | Effect::Then(reply) => core.effects.push(reply),
            Effect::Follow {
                player,
                outbound,
                frames,
            } => {
                let (followers, id) = (core.followers.clone(), self.id.clone());
                core.effects.push(move || {
                    let mut followers = followers_of(&followers);
                    if followers.superseded(incarnation) {
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
            Effect::Deliver(delivery) => {
                self.mail
                    .delivered(delivery.letter.seq, now_ms, &self.services.env.config);
                let postman = self.services.postman.clone();
                core.effects.push(move || postman.deliver(delivery));
            }
            Effect::Acknowledge { sender, seqs } => {
                let (postman, by) = (self.services.postman.clone(), self.address.clone());
                core.effects
                    .push(move || postman.acknowledge(&sender, by, seqs));
            }
            Effect::HandOff { to, hand_off } => {
                let postman = self.services.postman.clone();
                core.effects.push(move || postman.hand_off(to, hand_off));
            }
            Effect::Own(effect) => {
                let (services, id) = (self.services.effect_services(), self.id.clone());
                core.effects
                    .push(move || B::perform(&services, &id, effect));
            }
            Effect::Index(effect) => B::perform(&self.services.effect_services(), &self.id, effect),
        }
    }

    /// Takes a letter: a duplicate is acknowledged again; a letter older than the
    /// marks are kept for goes to the dead letters; a new one is recorded in the
    /// commit of what the kind does about it, then acknowledged.
    fn take_letter(&mut self, now_ms: u64, delivery: Delivery) {
        let Delivery { letter, attachment } = delivery;
        if letter.to != self.address {
            // The hub delivers by address: this is a bug. The letter is neither taken
            // nor acknowledged; its sender keeps it.
            tracing::error!(kind = B::KIND, id = %self.id, to = %letter.to, "a letter for another entity was delivered here");
            metrics::counter!("playtree_mail_misdelivered_total", "kind" => B::KIND).increment(1);
            if let Some(attachment) = attachment {
                attachment.answer(Err(ErrorReply::new(ErrorCode::Internal, "misdelivered")));
            }
            return;
        }
        let kept_ms = self.services.env.config.mail.marks_kept_ms;
        let (sender, seq) = (letter.from.clone(), letter.seq);
        let acknowledge = Effect::Acknowledge {
            sender: sender.clone(),
            seqs: vec![seq],
        };
        match self.journal.state().post.receipt(&letter, now_ms, kept_ms) {
            Receipt::Duplicate => {
                metrics::counter!("playtree_mail_duplicates_total", "kind" => B::KIND, "body" => letter.body.name()).increment(1);
                answer_in_doubt(attachment);
                // Behind whatever commit is still in flight: the first copy's.
                self.interpret(acknowledge);
            }
            Receipt::Stale => {
                metrics::counter!("playtree_mail_stale_total", "kind" => B::KIND).increment(1);
                answer_in_doubt(attachment);
                let dead = DeadLetter {
                    kind: B::KIND.into(),
                    id: self.id.to_string(),
                    what: format!("letter {} ({}) from {sender}", seq, letter.body.name()),
                    reason: format!(
                        "sent at {} ms, before the {} ms that senders are remembered for: it cannot be told from a letter taken before",
                        letter.sent_ms, kept_ms
                    ),
                };
                if self.run(now_ms, |cx| cx.dead_letter(dead)).is_some() {
                    self.interpret(acknowledge);
                }
            }
            Receipt::New => {
                let taken = self.run(now_ms, |cx| {
                    if let Err(error) = cx.record(&letter) {
                        // Not taken: the sender delivers it again later.
                        if let Some(attachment) = attachment {
                            attachment.answer(Err(busy(&error)));
                        }
                        return false;
                    }
                    B::receive(cx, letter, attachment);
                    true
                });
                if taken == Some(true) {
                    self.interpret(acknowledge);
                }
            }
        }
    }

    /// `by` recorded letters of ours: they leave the outbox with the next commit.
    fn acked(&mut self, now_ms: u64, seqs: Vec<u64>) {
        let outbox = &self.journal.state().post.outbox;
        let ours: Vec<u64> = seqs
            .into_iter()
            .filter(|seq| outbox.contains_key(seq))
            .collect();
        self.mail.acked(&ours, now_ms, &self.services.env.config);
    }

    /// A letter of ours can never be delivered.
    fn returned(&mut self, now_ms: u64, seq: u64, reason: String) {
        let Some(letter) = self.journal.state().post.outbox.get(&seq).cloned() else {
            return;
        };
        self.mail.forget(seq);
        metrics::counter!("playtree_mail_returned_total", "kind" => B::KIND).increment(1);
        self.run(now_ms, |cx| {
            if cx.take_place_for_post().is_err() {
                return;
            }
            cx.post_event(PostEvent::Delivered { seqs: vec![seq] });
            B::returned(cx, letter, reason);
        });
    }

    /// The deadline: letters due are delivered again, acknowledgements due are
    /// journaled, then the kind's own deadline. What the store refuses is retried
    /// with backoff, and so is a deadline that comes round again at once.
    fn deadline(&mut self, now_ms: u64) {
        let config = self.services.env.config.clone();
        for seq in self.mail.due(now_ms) {
            let Some(letter) = self.journal.state().post.outbox.get(&seq).cloned() else {
                self.mail.forget(seq);
                continue;
            };
            metrics::counter!("playtree_mail_redeliveries_total", "kind" => B::KIND, "body" => letter.body.name()).increment(1);
            self.interpret(Effect::Deliver(Delivery {
                letter,
                attachment: None,
            }));
        }
        let flush_acks = self.mail.acks_due(now_ms);
        let refused = self
            .run(now_ms, |cx| {
                if flush_acks {
                    // The acknowledgements themselves ride along (see `decide`).
                    let _ = cx.take_place_for_post();
                }
                B::on_deadline(cx);
            })
            .is_none();
        let spinning = self
            .next_deadline()
            .is_some_and(|due| due <= now_ms && due < self.passivate_check_ms);
        if refused || spinning {
            let why = if refused { "refused" } else { "due_again" };
            metrics::counter!("playtree_deadline_retries_total", "kind" => B::KIND, "why" => why)
                .increment(1);
            self.retry
                .refused(now_ms, config.actors.retry_ms, config.actors.retry_max_ms);
        } else {
            self.retry.succeeded();
        }
    }

    /// A new incarnation tells the connections that followed an older one where the
    /// entity stands now. A durable stream goes on where it stood, so after a clean
    /// handover they need nothing; otherwise they get a snapshot, never silence.
    fn resync_followers(&mut self, now_ms: u64) {
        let incarnation = self.journal.incarnation();
        let clean = followers_of(&self.core.followers).begin_incarnation(incarnation);
        let durable = B::durable_stream(&self.journal.state().state).is_some();
        if followers_of(&self.core.followers).is_empty() || (durable && clean) {
            return;
        }
        let snapshot = match self.decide(now_ms, false, |cx| B::snapshot(cx)) {
            Ok((_, snapshot)) => snapshot,
            Err(error) => {
                tracing::error!(kind = B::KIND, id = %self.id, %error, "no snapshot for the followers");
                return;
            }
        };
        let mut followers = followers_of(&self.core.followers);
        let state = &self.journal.state().state;
        for outbound in followers.retain_players(|player| B::keeps_follower(state, player)) {
            B::unfollowed(&self.id, &outbound);
        }
        followers.send(&self.stream.snapshot_frame(snapshot));
        metrics::counter!("playtree_resumes_total", "outcome" => "restart_snapshot").increment(1);
    }

    fn next_deadline(&self) -> Option<u64> {
        let state = &self.journal.state().state;
        let own = B::next_deadline(&self.services.env, state, &self.memory);
        crate::timers::earliest([own, self.mail.next_due(), Some(self.passivate_check_ms)])
            .map(|due| self.retry.hold(due))
    }

    /// At its deadline: passivates if the entity has been idle long enough, it may, it
    /// owes nothing, and nobody follows it (or its kind passivates while followed);
    /// says whether it did.
    fn passivate_if_idle(&mut self, myself: &ActorRef<Msg<B::Input>>, now_ms: u64) -> bool {
        let idle_after_ms = B::passivate_after_ms(&self.services.env.config);
        let idle_ms = now_ms.saturating_sub(self.last_active_ms);
        let stored = self.journal.state();
        if idle_ms < idle_after_ms
            || (!B::passivates_while_followed() && !followers_of(&self.core.followers).is_empty())
            || stored.post.owes()
            || self.mail.has_acks()
            || !B::may_passivate(&stored.state, &self.memory)
        {
            self.passivate_check_ms = EntityCore::<Msg<B::Input>>::next_passivation_check(
                now_ms,
                self.last_active_ms,
                idle_after_ms,
            );
            return false;
        }
        self.services.registry.mark_draining(myself.get_id());
        self.draining = true;
        metrics::counter!("playtree_actor_passivations_total", "kind" => B::KIND).increment(1);
        // Messages already queued are handled before the actor stops; later sends fail
        // and re-resolve through the directory, which waits for this stop.
        let _ = myself.drain();
        true
    }
}

/// Tells a client whose request reached an entity a second time that its outcome
/// stands as the first time decided it.
fn answer_in_doubt(attachment: Option<Attachment>) {
    if let Some(attachment) = attachment {
        attachment.answer(Err(ErrorReply::new(
            ErrorCode::RequestInProgress,
            "this request is being carried out already; send it again with the same key for its result",
        )));
    }
}

/// Whether a message shows the entity is in use (and goes to the next incarnation when
/// it reaches a passivating one).
fn is_activity<B: Behaviour>(message: &Msg<B::Input>) -> bool {
    match message {
        Msg::Letter(_) | Msg::HandOff(_) => true,
        Msg::Input(input) => B::is_activity(input),
        _ => false,
    }
}

impl<B: Behaviour> Actor for EntityRuntime<B> {
    type Msg = Msg<B::Input>;
    type State = Incarnation<B>;
    type Arguments = EntityArgs<B>;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg<B::Input>>,
        args: EntityArgs<B>,
    ) -> Result<Incarnation<B>, ActorProcessingErr> {
        let services = args.services;
        let key = args.id.to_string();
        let store = services.store.clone();
        // A lookup of an entity that never existed must not leave a trace in the store.
        if B::must_exist(&args.start) && !store.exists(B::KIND, &key).await? {
            return Err(ActivationError::Unknown(format!("{} {key}", B::KIND)).into());
        }
        let config = services.env.config.clone();
        let journal: Journal<Durable<B>> =
            Journal::open(store.clone(), &key, config.store.snapshot_every).await?;
        let now_ms = store.now_ms();
        let stream_id = B::stream(&args.id);
        let history_len = B::history_len(&config);
        // A durable stream goes on where it stood; any other starts a new epoch, the
        // incarnation number (written before the incarnation hands it out).
        let stream = match B::durable_stream(&journal.state().state) {
            Some(at) => Stream::resume(stream_id, at.epoch, at.seq, history_len, at.recent),
            None => Stream::new(stream_id, journal.incarnation(), history_len),
        };
        let address = B::address(&args.id);
        let mut incarnation = Incarnation {
            id: args.id,
            address,
            actor: myself.get_id(),
            journal,
            memory: B::Memory::default(),
            stream,
            core: EntityCore::start(
                B::KIND,
                &myself,
                services.timers.clone(),
                config.actors.release_queue_max,
                args.followers,
            ),
            services: services.clone(),
            mail: Mailroom::default(),
            retry: Backoff::default(),
            last_active_ms: now_ms,
            passivate_check_ms: now_ms + B::passivate_after_ms(&config),
            draining: false,
        };
        let start = args.start;
        let (outcome, refused) = incarnation
            .decide(now_ms, true, |cx| B::activate(cx, start).err())
            .map_err(ActivationError::Store)?;
        if let Some(error) = refused {
            return Err(error.into());
        }
        let mut ticket = outcome.ticket;
        if ticket.is_none()
            && B::has_stream()
            && B::durable_stream(&incarnation.journal.state().state).is_none()
        {
            // The epoch it is about to hand out is its incarnation: written first.
            ticket = incarnation.journal.claim()?;
        }
        if let Some(ticket) = ticket {
            // What creates the entity is durable before it serves anyone.
            incarnation.journal.durable(ticket).await?;
        }
        incarnation.resync_followers(now_ms);
        incarnation.release_after(None, outcome.effects);
        // Letters left in the outbox by an earlier incarnation go out again now.
        let owed: Vec<_> = incarnation
            .journal
            .state()
            .post
            .outbox
            .values()
            .cloned()
            .collect();
        for letter in owed {
            incarnation.interpret(Effect::Deliver(Delivery {
                letter,
                attachment: None,
            }));
        }
        services.registry.register(myself.get_id(), &key);
        let due = incarnation.next_deadline();
        incarnation.core.finish(due, || Msg::Deadline, false).await;
        Ok(incarnation)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Msg<B::Input>>,
        incarnation: &mut Incarnation<B>,
    ) -> Result<(), ActorProcessingErr> {
        let clean = incarnation.core.stop().await;
        if !clean {
            incarnation.journal.mark_diverged();
        }
        B::unlist(
            &incarnation.services.env,
            &incarnation.id,
            incarnation.actor,
        );
        let stored = incarnation.journal.state();
        let collect = clean
            && !incarnation.journal.must_stop()
            && !stored.post.owes()
            && !incarnation.mail.has_acks()
            && B::collectable(&stored.state);
        if collect {
            let key = incarnation.id.to_string();
            match incarnation.services.store.collect(B::KIND, &key).await {
                Ok(_) => {
                    metrics::counter!("playtree_entities_collected_total", "kind" => B::KIND)
                        .increment(1);
                }
                Err(error) => {
                    tracing::warn!(kind = B::KIND, id = %incarnation.id, %error, "a closed entity was not collected; it stays stored");
                }
            }
        } else if let Err(error) = incarnation.journal.snapshot().await {
            tracing::warn!(kind = B::KIND, id = %incarnation.id, %error, "snapshot on stop failed; the journal still holds every event");
        }
        if clean {
            // Every frame of this incarnation is out: the next one may go on without
            // resyncing them.
            followers_of(&incarnation.core.followers).release(incarnation.journal.incarnation());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg<B::Input>>,
        message: Msg<B::Input>,
        incarnation: &mut Incarnation<B>,
    ) -> Result<(), ActorProcessingErr> {
        if incarnation.core.has_failed() {
            // A commit of this entity failed: its memory is ahead of the store, so
            // nothing more is journaled or snapshotted; it is stopping.
            incarnation.journal.mark_diverged();
        }
        if incarnation.draining && is_activity::<B>(&message) {
            // Queued before the passivation: the next incarnation takes it.
            metrics::counter!("playtree_actor_redirected_total", "kind" => B::KIND).increment(1);
            let key = incarnation.id.to_string();
            incarnation.services.registry.redirect(&key, message);
            return Ok(());
        }
        let now_ms = incarnation.now_ms();
        if is_activity::<B>(&message) {
            incarnation.last_active_ms = now_ms;
        }
        let mut deadline = false;
        match message {
            Msg::Letter(delivery) => incarnation.take_letter(now_ms, delivery),
            Msg::Acked { seqs, .. } => incarnation.acked(now_ms, seqs),
            Msg::Returned { seq, reason } => incarnation.returned(now_ms, seq, reason),
            Msg::HandOff(hand_off) => {
                incarnation.run(now_ms, |cx| B::handed(cx, hand_off));
            }
            Msg::Input(input) => {
                incarnation.run(now_ms, |cx| B::decide(cx, input));
            }
            Msg::Deadline => {
                deadline = true;
                incarnation.deadline(now_ms);
            }
            #[cfg(feature = "fault-injection")]
            Msg::InjectFault => panic!("injected fault in {} {}", B::KIND, incarnation.id),
        }
        if deadline && now_ms >= incarnation.passivate_check_ms {
            incarnation.passivate_if_idle(&myself, now_ms);
        }
        let due = incarnation.next_deadline();
        let must_stop = incarnation.journal.must_stop();
        incarnation
            .core
            .finish(due, || Msg::Deadline, must_stop)
            .await;
        Ok(())
    }
}
