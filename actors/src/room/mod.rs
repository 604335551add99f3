//! Room: one actor per game room, of kind `wheel` or `quiz`. It holds the members and the
//! game state, owns the room's event stream (history and subscribed connections), and is
//! the source of the grants that pay its prizes (outbox, redelivered until acknowledged).

mod logic;
mod msg;
pub mod quiz;
mod state;

pub use msg::{Position, RoomError, RoomMsg, RoomSpec, RoomView, Settled};
pub use state::{RoomEntity, RoomEvent, RoomSetup, RoomState};

use crate::connections::{ConnectionId, Outbound};
use crate::directory::{Followers, followers_of};
use crate::grant::Grant;
use crate::hub::{EntityKind, Hub};
use crate::matchmaker::Listing;
use crate::rate::TokenBucket;
use crate::runtime::EntityCore;
use crate::session::{PendingSpin, SessionMsg};
use crate::store::{Entity, Journal};
use crate::stream::Stream;
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, GrantId, PodiumPlace, QuizLobby, QuizPhase, QuizPodium,
    QuizQuestion, QuizReveal, RoomId, RoomKind, RoomSnapshot, SpinResult, StreamId,
};
use quiz::{QuizEvent, Stage};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug)]
pub struct Room;

#[derive(Debug)]
pub struct RoomArgs {
    pub room: RoomId,
    pub spec: Option<RoomSpec>,
    /// The connections following the room, kept across its incarnations.
    pub followers: Followers,
    pub hub: Hub,
}

/// Activation found no such room in the store and was given no spec to create it.
#[derive(Debug, thiserror::Error)]
#[error("room {0} does not exist")]
pub struct UnknownRoom(pub RoomId);

#[derive(Debug)]
pub struct RoomRuntime {
    room: RoomId,
    /// This incarnation's actor, the owner of the room's matchmaker listing.
    actor: ractor::ActorId,
    hub: Hub,
    journal: Journal<RoomEntity>,
    stream: Stream,
    core: EntityCore<RoomMsg>,
    /// Members with no live connection, since when (their seat is kept for a grace time).
    away_since_ms: BTreeMap<String, u64>,
    chat_buckets: HashMap<String, TokenBucket>,
    last_active_ms: u64,
    /// When to look next whether the room may passivate.
    passivate_check_ms: u64,
    /// When the outbox was last redelivered.
    last_redeliver_ms: u64,
}

impl Actor for Room {
    type Msg = RoomMsg;
    type State = RoomRuntime;
    type Arguments = RoomArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RoomMsg>,
        args: RoomArgs,
    ) -> Result<RoomRuntime, ActorProcessingErr> {
        let hub = args.hub;
        let id = args.room.to_string();
        // A lookup of a room that never existed must not leave a trace in the store
        // (activation writes the incarnation).
        if args.spec.is_none() && !hub.store.exists(RoomEntity::KIND, &id).await? {
            return Err(UnknownRoom(args.room).into());
        }
        let mut journal: Journal<RoomEntity> =
            Journal::open(hub.store.clone(), &id, hub.config.store.snapshot_every).await?;
        if journal.state().setup.is_none() {
            let spec = args.spec.ok_or(UnknownRoom(args.room))?;
            let inventory = match spec.kind {
                RoomKind::Wheel => logic::initial_inventory(
                    hub.config
                        .wheel(&spec.variant)
                        .ok_or_else(|| RoomError::MissingWheel(spec.variant.clone()))?,
                ),
                RoomKind::Quiz => BTreeMap::new(),
            };
            let seed_bytes = hub.entropy.server_seed();
            let mut seed = [0u8; 8];
            seed.copy_from_slice(&seed_bytes[..8]);
            let created = RoomEvent::Created {
                inventory,
                setup: RoomSetup {
                    kind: spec.kind,
                    variant: spec.variant,
                    seed: u64::from_le_bytes(seed),
                    private_code: spec.private_code,
                },
            };
            journal.persist(vec![created]).await?;
        }
        let rooms = &hub.config.rooms;
        if !journal.state().outbox.is_empty() {
            myself.cast(RoomMsg::RedeliverOutbox)?;
        }
        let now_ms = hub.now_ms();
        // After an activation nobody is connected yet: every seat starts its grace time.
        let away_since_ms = journal
            .state()
            .members
            .iter()
            .map(|m| (m.clone(), now_ms))
            .collect();
        // The stream's epoch is the incarnation number: unique per activation, whatever
        // the clock says.
        let stream = Stream::new(
            StreamId::Room(args.room),
            journal.incarnation(),
            rooms.history_len,
        );
        let passivate_check_ms = now_ms + rooms.passivate_after_ms;
        let runtime = RoomRuntime {
            room: args.room,
            actor: myself.get_id(),
            stream,
            core: EntityCore::start("room", &myself, hub.clone(), args.followers),
            away_since_ms,
            chat_buckets: HashMap::new(),
            hub,
            journal,
            last_active_ms: now_ms,
            passivate_check_ms,
            last_redeliver_ms: now_ms,
        };
        runtime.update_listing();
        runtime.resync_followers();
        runtime.hub.rooms.register(myself.get_id(), &id);
        runtime
            .core
            .schedule(runtime.next_deadline(), || RoomMsg::Deadline);
        metrics::gauge!("playtree_rooms_open", "kind" => runtime.kind_name()).increment(1.0);
        Ok(runtime)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RoomMsg>,
        state: &mut RoomRuntime,
    ) -> Result<(), ActorProcessingErr> {
        if !state.core.stop().await {
            state.journal.mark_diverged();
        }
        state.hub.matchmaker.remove(state.room, state.actor);
        metrics::gauge!("playtree_rooms_open", "kind" => state.kind_name()).decrement(1.0);
        if let Err(error) = state.journal.snapshot().await {
            tracing::warn!(room = state.room, %error, "snapshot on stop failed; the journal still holds every event");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<RoomMsg>,
        message: RoomMsg,
        state: &mut RoomRuntime,
    ) -> Result<(), ActorProcessingErr> {
        if state.core.has_failed() {
            // A commit of this room failed: its memory is ahead of the store, so nothing
            // more is journaled or snapshotted; it is stopping.
            state.journal.mark_diverged();
        }
        match message {
            RoomMsg::Join {
                player,
                outbounds,
                reply,
            } => {
                state.last_active_ms = state.hub.now_ms();
                let joined = state.join(player, outbounds);
                state.reply(reply, joined);
            }
            RoomMsg::Leave { player, reply } => {
                let left = state.leave(&player);
                // The one who left may have been the last to answer.
                state.tick();
                state.reply(reply, left);
            }
            RoomMsg::Subscribe {
                player,
                outbound,
                position,
            } => state.subscribe(player, outbound, position),
            RoomMsg::Unsubscribe { player, connection } => state.unsubscribe(&player, connection),
            RoomMsg::Settle {
                player,
                spin,
                reply,
            } => {
                state.last_active_ms = state.hub.now_ms();
                let settled = state.settle(player, spin);
                state.reply(reply, settled);
            }
            RoomMsg::Answer {
                player,
                question,
                choice,
                reply,
            } => {
                let answered = state.answer(&player, question, choice);
                state.reply(reply, answered);
            }
            RoomMsg::Chat {
                player,
                text,
                reply,
            } => {
                let sent = state.chat(&player, text);
                state.reply(reply, sent);
            }
            RoomMsg::React {
                player,
                emoji,
                reply,
            } => {
                let sent = state.react(&player, emoji);
                state.reply(reply, sent);
            }
            RoomMsg::Tick => state.tick(),
            RoomMsg::GrantAcked { grant } => state.grant_acked(grant),
            RoomMsg::RedeliverOutbox => state.redeliver(),
            RoomMsg::Deadline => state.deadline(&myself).await,
            #[cfg(feature = "fault-injection")]
            RoomMsg::InjectFault => panic!("injected fault in room {}", state.room),
        }
        let due = state.next_deadline();
        let must_stop = state.journal.must_stop();
        state
            .core
            .finish(due, || RoomMsg::Deadline, must_stop)
            .await;
        Ok(())
    }
}

/// The name of a room kind in metrics.
pub fn kind_name(kind: RoomKind) -> &'static str {
    match kind {
        RoomKind::Wheel => "wheel",
        RoomKind::Quiz => "quiz",
    }
}

/// Quiz steps one tick may take at most (lobby → game → question is the longest chain).
const QUIZ_STEPS_PER_TICK_MAX: usize = 4;

impl RoomRuntime {
    fn setup(&self) -> Result<&RoomSetup, RoomError> {
        // Invariant: pre_start refuses to start a room without its Created event.
        self.journal
            .state()
            .setup
            .as_ref()
            .ok_or(RoomError::NotSetUp)
    }

    fn kind(&self) -> RoomKind {
        self.journal
            .state()
            .setup
            .as_ref()
            .map_or(RoomKind::Wheel, |s| s.kind)
    }

    fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    fn capacity(&self) -> usize {
        match self.kind() {
            RoomKind::Wheel => self.hub.config.rooms.wheel_players_max,
            RoomKind::Quiz => self.hub.config.quiz.players_max,
        }
    }

    /// Listed for QuickJoin: public rooms; for quizzes, only while in the lobby.
    fn update_listing(&self) {
        let state = self.journal.state();
        let Some(setup) = &state.setup else { return };
        let open = setup.private_code.is_none()
            && (setup.kind == RoomKind::Wheel || state.quiz.stage == Stage::Lobby);
        if let Some(code) = &setup.private_code {
            self.hub.matchmaker.register_code(code, self.room);
        }
        self.hub.matchmaker.update(
            self.room,
            Listing {
                kind: setup.kind,
                variant: setup.variant.clone(),
                members: state.members.len(),
                capacity: self.capacity(),
                open,
                owner: self.actor,
            },
        );
    }

    /// Encodes `event` once and keeps it for resumes; every follower gets it once the
    /// events before it are durable.
    fn broadcast(&mut self, event: Event) {
        self.core.publish(&mut self.stream, event);
    }

    /// Answers a request once what it did is durable.
    fn reply<T: Send + 'static>(&mut self, port: ractor::RpcReplyPort<T>, value: T) {
        self.core.reply(port, value);
    }

    /// Journals `events` (applied now, durable soon): what the handler does next is
    /// released after them.
    fn append(&mut self, events: Vec<RoomEvent>) -> Result<(), crate::store::StoreError> {
        let ticket = self.journal.append(events)?;
        self.core.after(ticket);
        Ok(())
    }

    /// A new incarnation (after a failure) tells the connections that followed the old
    /// one where the room stands now: a snapshot in the new epoch, never silence.
    fn resync_followers(&self) {
        let mut followers = followers_of(&self.core.followers);
        // Frames an older incarnation still has on their way are stale from now on.
        followers.begin_epoch(self.stream.epoch());
        if followers.is_empty() {
            return;
        }
        let frame = self
            .stream
            .snapshot_frame(Event::RoomSnapshot(self.snapshot()));
        let members = &self.journal.state().members;
        followers.retain_players(|player| members.contains(player));
        followers.send(&frame);
        metrics::counter!("playtree_resumes_total", "outcome" => "restart_snapshot").increment(1);
    }

    fn persist_error(error: crate::store::StoreError) -> RoomError {
        RoomError::Store(error.to_string())
    }

    fn join(&mut self, player: String, outbounds: Vec<Outbound>) -> Result<RoomView, RoomError> {
        let setup = self.setup()?.clone();
        let joined = logic::decide_join(
            self.journal.state(),
            self.capacity(),
            self.hub.config.quiz.join_started,
            &player,
        )?;
        self.append(joined.into_iter().collect())
            .map_err(Self::persist_error)?;
        let (followers, joiner, epoch) = (
            self.core.followers.clone(),
            player.clone(),
            self.stream.epoch(),
        );
        self.core.effects.push(move || {
            let mut followers = followers_of(&followers);
            for outbound in outbounds {
                if followers.superseded(epoch) {
                    outbound.close_for_resync();
                } else {
                    followers.add(&joiner, outbound);
                }
            }
        });
        self.away_since_ms.remove(&player);
        self.broadcast(Event::MemberJoined {
            room: self.room,
            player,
        });
        if setup.kind == RoomKind::Quiz {
            // The game may start right away now that one more player is here.
            self.tick();
        }
        self.update_listing();
        Ok(RoomView {
            kind: setup.kind,
            variant: setup.variant,
            stream_epoch: self.stream.epoch(),
            members: self.journal.state().members.iter().cloned().collect(),
            private_code: setup.private_code,
            snapshot: self.snapshot(),
        })
    }

    fn leave(&mut self, player: &str) -> Result<(), RoomError> {
        if !self.journal.state().members.contains(player) {
            return Ok(());
        }
        self.append(vec![RoomEvent::MemberLeft {
            player: player.to_owned(),
        }])
        .map_err(Self::persist_error)?;
        self.broadcast(Event::MemberLeft {
            room: self.room,
            player: player.to_owned(),
        });
        let (followers, leaver) = (self.core.followers.clone(), player.to_owned());
        self.core
            .effects
            .push(move || followers_of(&followers).remove_player(&leaver));
        self.away_since_ms.remove(player);
        self.chat_buckets.remove(player);
        self.update_listing();
        Ok(())
    }

    fn subscribe(&mut self, player: String, outbound: Outbound, position: Option<Position>) {
        if !self.journal.state().members.contains(&player) {
            // The seat is gone (grace time over): the session learns it.
            let hub = self.hub.clone();
            let room = self.room;
            tokio::spawn(async move {
                let _ = hub
                    .cast_session(&player, SessionMsg::RemovedFromRoom { room })
                    .await;
            });
            return;
        }
        let replay = position.and_then(|(epoch, seq)| self.stream.replay_after(epoch, seq));
        let frames = match replay {
            Some(frames) => {
                metrics::counter!("playtree_resumes_total", "outcome" => "replayed").increment(1);
                frames
            }
            None => {
                metrics::counter!("playtree_resumes_total", "outcome" => "snapshot").increment(1);
                vec![
                    self.stream
                        .snapshot_frame(Event::RoomSnapshot(self.snapshot())),
                ]
            }
        };
        self.away_since_ms.remove(&player);
        self.core.follow(&self.stream, player, outbound, frames);
    }

    fn unsubscribe(&mut self, player: &str, connection: ConnectionId) {
        // In its turn after an add still on its way (a connection that subscribed and
        // dropped at once), so that a closed connection is not put back.
        let (followers, leaver) = (self.core.followers.clone(), player.to_owned());
        self.core.effects.push(move || {
            followers_of(&followers).remove_connection(&leaver, connection);
        });
        let connected = followers_of(&self.core.followers)
            .outbounds(player)
            .iter()
            .any(|outbound| outbound.connection != connection && !outbound.is_closed());
        if !connected && self.journal.state().members.contains(player) {
            self.away_since_ms
                .insert(player.to_owned(), self.hub.now_ms());
        }
    }

    fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            room: self.room,
            kind: self.kind(),
            members: self.journal.state().members.iter().cloned().collect(),
            quiz: (self.kind() == RoomKind::Quiz).then(|| self.quiz_phase()),
        }
    }

    fn quiz_phase(&self) -> QuizPhase {
        let quiz = &self.journal.state().quiz;
        match &quiz.stage {
            Stage::Lobby => QuizPhase::Lobby(self.lobby()),
            Stage::Asking { index, .. } => match self.question(*index) {
                Some(question) => QuizPhase::Asking {
                    question,
                    standings: quiz::standings(quiz),
                },
                None => QuizPhase::Lobby(self.lobby()),
            },
            Stage::Revealing { index, .. } => QuizPhase::Revealed(self.reveal(*index)),
            Stage::Podium { .. } => QuizPhase::Finished(self.podium()),
        }
    }

    fn lobby(&self) -> QuizLobby {
        let state = self.journal.state();
        QuizLobby {
            room: self.room,
            players: state.members.iter().cloned().collect(),
            min_players: self.hub.config.quiz.min_players as u32,
            starts_at_ms: state.quiz.countdown_ends_ms,
        }
    }

    /// The question as players see it: without its answer.
    fn question(&self, index: u32) -> Option<QuizQuestion> {
        let quiz = &self.journal.state().quiz;
        let Stage::Asking {
            asked_at_ms,
            deadline_ms,
            ..
        } = quiz.stage
        else {
            return None;
        };
        let question = self
            .hub
            .questions
            .get(*quiz.questions.get(index as usize)?)?;
        Some(QuizQuestion {
            room: self.room,
            index,
            total: quiz.questions.len() as u32,
            category: question.category.clone(),
            text: question.text.clone(),
            choices: question.choices.clone(),
            asked_at_ms,
            deadline_ms,
        })
    }

    fn reveal(&self, index: u32) -> QuizReveal {
        let quiz = &self.journal.state().quiz;
        let correct_choice = quiz
            .questions
            .get(index as usize)
            .and_then(|&id| self.hub.questions.get(id))
            .map_or(0, |question| question.answer);
        let standings = quiz::standings(quiz);
        QuizReveal {
            room: self.room,
            index,
            correct_choice,
            points: quiz
                .scores
                .keys()
                .map(|player| {
                    (
                        player.clone(),
                        quiz.answers.get(player).map_or(0, |a| a.points),
                    )
                })
                .collect(),
            top: standings.iter().take(5).cloned().collect(),
            standings,
        }
    }

    fn podium(&self) -> QuizPodium {
        let standings = quiz::standings(&self.journal.state().quiz);
        QuizPodium {
            room: self.room,
            places: quiz::prizes_for(&standings, &self.hub.config.quiz.prizes)
                .into_iter()
                .map(|(standing, prize)| PodiumPlace { standing, prize })
                .collect(),
            standings,
        }
    }

    /// Seat grace, then the quiz clock.
    fn tick(&mut self) {
        // Seats are kept and expire in quizzes only (a wheel seat waits for its player).
        if self.kind() != RoomKind::Quiz {
            return;
        }
        let now_ms = self.hub.now_ms();
        self.expire_seats(now_ms);
        // One step can make the next one due at once (a podium ending into a lobby that
        // is already full starts the next game): advance until nothing is due now.
        for _ in 0..QUIZ_STEPS_PER_TICK_MAX {
            if !self.advance_quiz(now_ms) {
                break;
            }
        }
        self.update_listing();
    }

    fn expire_seats(&mut self, now_ms: u64) {
        let grace_ms = self.hub.config.quiz.seat_grace_ms;
        let expired: Vec<String> = self
            .away_since_ms
            .iter()
            .filter(|(_, since)| now_ms.saturating_sub(**since) >= grace_ms)
            .map(|(player, _)| player.clone())
            .collect();
        for player in expired {
            if self.leave(&player).is_ok() {
                let room = self.room;
                self.core.spawn_after(move |hub| async move {
                    let removed = SessionMsg::RemovedFromRoom { room };
                    if let Err(error) = hub.cast_session(&player, removed).await {
                        tracing::warn!(room, %player, %error, "could not tell the session its seat expired");
                    }
                });
            }
        }
    }

    /// One step of the quiz clock at `now_ms`; says whether anything happened.
    fn advance_quiz(&mut self, now_ms: u64) -> bool {
        let Some(seed) = self.journal.state().setup.as_ref().map(|s| s.seed) else {
            return false;
        };
        let events = quiz::advance(
            &self.journal.state().quiz,
            now_ms,
            &self.hub.config.quiz,
            &self.journal.state().members,
            seed,
            &self.hub.questions,
        );
        if events.is_empty() {
            return false;
        }
        let mut to_persist: Vec<RoomEvent> = events.iter().cloned().map(RoomEvent::Quiz).collect();
        if events
            .iter()
            .any(|e| matches!(e, QuizEvent::GameFinished { .. }))
        {
            let grants = self.podium_grants();
            if !grants.is_empty() {
                to_persist.push(RoomEvent::GrantsIssued { grants });
            }
        }
        if let Err(error) = self.append(to_persist) {
            // The room stops (see `handle`); its next incarnation recovers.
            tracing::error!(room = self.room, %error, "quiz step not saved");
            return false;
        }
        for event in &events {
            if let Some(wire) = self.wire_event(event) {
                self.broadcast(wire);
            }
            if let QuizEvent::GameFinished { .. } = event {
                metrics::counter!("playtree_quiz_games_finished_total").increment(1);
                self.redeliver();
            }
        }
        true
    }

    /// The room's grants come from one source, numbered by its `GrantCounter`.
    fn grant_source(&self) -> String {
        format!("room:{}", self.room)
    }

    fn podium_grants(&self) -> Vec<Grant> {
        let state = self.journal.state();
        let standings = quiz::standings(&state.quiz);
        let source = self.grant_source();
        let mut counter = state.grants.clone();
        quiz::prizes_for(&standings, &self.hub.config.quiz.prizes)
            .into_iter()
            .map(|(standing, prize)| {
                let (id, previous) = counter.next(&source, &standing.player);
                let grant = Grant {
                    id,
                    previous,
                    beneficiary: standing.player.clone(),
                    amount: prize,
                    reason: format!(
                        "quiz rank {} in room {} game {}",
                        standing.rank, self.room, state.quiz.game_no
                    ),
                    settles: None,
                };
                counter.issued(&grant);
                grant
            })
            .collect()
    }

    fn wire_event(&self, event: &QuizEvent) -> Option<Event> {
        match event {
            QuizEvent::Countdown { .. } | QuizEvent::BackToLobby => {
                Some(Event::QuizLobby(self.lobby()))
            }
            QuizEvent::QuestionAsked { index, .. } => self.question(*index).map(Event::Question),
            QuizEvent::QuestionRevealed { index, .. } => Some(Event::Reveal(self.reveal(*index))),
            QuizEvent::GameFinished { .. } => Some(Event::Podium(self.podium())),
            QuizEvent::GameStarted { .. } | QuizEvent::AnswerTaken { .. } => None,
        }
    }

    fn answer(&mut self, player: &str, question: u32, choice: u32) -> Result<(), ErrorReply> {
        if self.kind() != RoomKind::Quiz {
            return Err(ErrorReply::new(
                ErrorCode::WrongRoomKind,
                "this room is not a quiz",
            ));
        }
        let event = quiz::answer(
            &self.journal.state().quiz,
            player,
            question,
            choice,
            self.hub.now_ms(),
            &self.hub.config.quiz,
            &self.hub.questions,
        )?;
        self.append(vec![RoomEvent::Quiz(event)])
            .map_err(|error| ErrorReply::new(ErrorCode::StoreFailure, error.to_string()))?;
        // When this was the last answer, the reveal comes now rather than at the deadline.
        self.tick();
        Ok(())
    }

    fn check_chat_allowed(&mut self, player: &str) -> Result<(), ErrorReply> {
        if !self.journal.state().members.contains(player) {
            return Err(ErrorReply::new(
                ErrorCode::NotInRoom,
                format!("you are not in room {}", self.room),
            ));
        }
        let rooms = &self.hub.config.rooms;
        let now_ms = self.hub.now_ms();
        let bucket = self
            .chat_buckets
            .entry(player.to_owned())
            .or_insert_with(|| TokenBucket::new(rooms.chat_per_second, rooms.chat_burst, now_ms));
        if !bucket.try_take(now_ms) {
            metrics::counter!("playtree_rate_limited_total", "limit" => "chat").increment(1);
            return Err(ErrorReply::new(
                ErrorCode::RateLimited,
                format!(
                    "at most {} chat lines or reactions per second; slow down",
                    rooms.chat_per_second
                ),
            ));
        }
        Ok(())
    }

    fn chat(&mut self, player: &str, text: String) -> Result<(), ErrorReply> {
        logic::validate_chat(&text, self.hub.config.rooms.chat_chars_max)?;
        self.check_chat_allowed(player)?;
        self.broadcast(Event::Chat {
            room: self.room,
            player: player.to_owned(),
            text,
        });
        metrics::counter!("playtree_chat_messages_total").increment(1);
        Ok(())
    }

    fn react(&mut self, player: &str, emoji: String) -> Result<(), ErrorReply> {
        if !self.hub.config.rooms.reactions.contains(&emoji) {
            return Err(ErrorReply::new(
                ErrorCode::InvalidReaction,
                format!(
                    "reactions are: {}",
                    self.hub.config.rooms.reactions.join(" ")
                ),
            ));
        }
        self.check_chat_allowed(player)?;
        self.broadcast(Event::Reaction {
            room: self.room,
            player: player.to_owned(),
            emoji,
        });
        Ok(())
    }

    fn settle(&mut self, player: String, spin: PendingSpin) -> Result<Settled, RoomError> {
        let variant = self.setup()?.variant.clone();
        let decided = logic::decide_settle(
            self.journal.state(),
            self.hub.config.wheel(&variant),
            &self.grant_source(),
            &player,
            &spin,
        )?;
        let Some(event) = decided.event else {
            // A retry of a spin settled before: the same grant, nothing new to journal.
            return Ok(decided.settled);
        };
        self.append(vec![event]).map_err(Self::persist_error)?;
        let Settled {
            grant,
            label,
            prize,
            inventory_exhausted: exhausted,
        } = decided.settled;
        metrics::counter!("playtree_rewards_granted_total", "source" => "wheel").increment(1);
        metrics::counter!("playtree_reward_coins_granted_total", "source" => "wheel")
            .increment(prize);
        self.broadcast(Event::Spin(SpinResult {
            room: self.room,
            player,
            wheel: spin.wheel.clone(),
            nonce: spin.nonce,
            client_seed: spin.client_seed.clone(),
            commitment: spin.commitment,
            segment: spin.segment,
            label: label.clone(),
            prize,
        }));
        Ok(Settled {
            grant,
            label,
            prize,
            inventory_exhausted: exhausted,
        })
    }

    fn grant_acked(&mut self, grant: GrantId) {
        if !self.journal.state().outbox.contains_key(&grant) {
            return;
        }
        if let Err(error) = self.append(vec![RoomEvent::GrantDelivered {
            grant: grant.clone(),
        }]) {
            // The grant stays in the outbox and is redelivered; the wallet dedups it.
            tracing::warn!(room = self.room, %grant, %error, "delivery not recorded");
        }
    }

    /// Sends every unacknowledged grant to its wallet, from a task of its own once the
    /// grants are durable (sessions may have to be activated first).
    fn redeliver(&mut self) {
        self.last_redeliver_ms = self.hub.now_ms();
        let grants: Vec<Grant> = self.journal.state().outbox.values().cloned().collect();
        if grants.is_empty() {
            return;
        }
        let room = self.room;
        self.core.spawn_after(move |hub| async move {
            for grant in grants {
                let beneficiary = grant.beneficiary.clone();
                let message = SessionMsg::Credit {
                    grant,
                    source_room: room,
                };
                if let Err(error) = hub.cast_session(&beneficiary, message).await {
                    tracing::warn!(room, player = %beneficiary, %error, "grant redelivery failed; will retry");
                }
            }
        });
    }

    /// The earliest moment the room has something to do on its own: the quiz clock, a
    /// seat whose grace time ends, redelivering its outbox, or seeing whether it may
    /// passivate.
    fn next_deadline(&self) -> Option<u64> {
        let state = self.journal.state();
        let config = &self.hub.config;
        let (quiz, seat) = if self.kind() == RoomKind::Quiz {
            let seat = self
                .away_since_ms
                .values()
                .min()
                .map(|since| since + config.quiz.seat_grace_ms);
            (quiz::next_deadline(&state.quiz), seat)
        } else {
            (None, None)
        };
        let redeliver = (!state.outbox.is_empty())
            .then(|| self.last_redeliver_ms + config.rooms.outbox_retry_ms);
        crate::timers::earliest([quiz, seat, redeliver, Some(self.passivate_check_ms)])
    }

    async fn deadline(&mut self, myself: &ActorRef<RoomMsg>) {
        let now_ms = self.hub.now_ms();
        self.tick();
        let rooms = &self.hub.config.rooms;
        let passivate_after_ms = rooms.passivate_after_ms;
        if !self.journal.state().outbox.is_empty()
            && now_ms >= self.last_redeliver_ms + rooms.outbox_retry_ms
        {
            self.redeliver();
        }
        if now_ms >= self.passivate_check_ms && !self.passivate_if_idle(myself).await {
            self.passivate_check_ms = EntityCore::<RoomMsg>::next_passivation_check(
                now_ms,
                self.last_active_ms,
                passivate_after_ms,
            );
        }
    }

    /// Passivates if nobody follows the room and it owes nothing; says whether it did.
    async fn passivate_if_idle(&mut self, myself: &ActorRef<RoomMsg>) -> bool {
        let hub = &self.hub;
        let state = self.journal.state();
        let idle_ms = hub.now_ms().saturating_sub(self.last_active_ms);
        if !followers_of(&self.core.followers).is_empty()
            || !state.outbox.is_empty()
            || idle_ms < hub.config.rooms.passivate_after_ms
        {
            return false;
        }
        hub.matchmaker.remove(self.room, self.actor);
        hub.mark_draining(EntityKind::Room, myself.get_id());
        metrics::counter!("playtree_actor_passivations_total", "kind" => "room").increment(1);
        let _ = myself.drain();
        true
    }
}
