//! PlayerSession: one virtual actor per player id. It owns the wallet, the provably fair
//! state per wheel, daily quotas and room memberships; it is activated by a connection or
//! by a reward for an offline player, and passivated after `session.passivate_after_ms`
//! without a connection.

mod logic;
mod msg;
mod state;

pub use msg::{SessionMsg, SessionWelcome};
pub use state::{
    Membership, PendingSpin, SessionEntity, SessionEvent, SessionState, WheelFairness,
};

use crate::connections::{ConnectionId, Outbound};
use crate::directory::{Followers, followers_of};
use crate::grant::Grant;
use crate::hub::{EntityKind, Hub};
use crate::room::{RoomMsg, RoomSpec, RoomView, Settled};
use crate::runtime::EntityCore;
use crate::store::{DeadLetter, Journal, StoreError};
use crate::stream::Stream;
use playtree_protocol::{
    ErrorCode, ErrorReply, Event, QuizJoined, ReplyBody, Request, RoomId, RoomJoined, RoomKind,
    SeedReveal, SpinOutcome, StreamId, StreamPosition, fairness,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

#[derive(Debug)]
pub struct PlayerSession;

#[derive(Debug)]
pub struct SessionArgs {
    pub player: String,
    /// The player's live connections, kept across the session's incarnations.
    pub followers: Followers,
    pub hub: Hub,
}

/// The live actor state: the journaled state plus what does not survive a restart.
#[derive(Debug)]
pub struct SessionRuntime {
    player: String,
    hub: Hub,
    journal: Journal<SessionEntity>,
    stream: Stream,
    /// The player's live connections (all under the player's own name), the deferred
    /// replies and publications, the deadline.
    core: EntityCore<SessionMsg>,
    last_active_ms: u64,
    /// When to look next whether the session may passivate.
    passivate_check_ms: u64,
    /// When unsettled spins were last retried.
    last_retry_ms: u64,
}

fn store_error(error: StoreError) -> ErrorReply {
    ErrorReply::new(ErrorCode::StoreFailure, error.to_string())
}

impl Actor for PlayerSession {
    type Msg = SessionMsg;
    type State = SessionRuntime;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionRuntime, ActorProcessingErr> {
        let hub = args.hub;
        let journal: Journal<SessionEntity> = Journal::open(
            hub.store.clone(),
            &args.player,
            hub.config.store.snapshot_every,
        )
        .await?;
        let now_ms = hub.now_ms();
        if !journal.state().pending_spins.is_empty() {
            myself.cast(SessionMsg::RetryPending)?;
        }
        let passivate_check_ms = now_ms + hub.config.session.passivate_after_ms;
        let runtime = SessionRuntime {
            // The epoch is the incarnation number: unique per activation, whatever the
            // clock says.
            stream: Stream::new(
                StreamId::Player(args.player.clone()),
                journal.incarnation(),
                hub.config.rooms.history_len,
            ),
            core: EntityCore::start("session", &myself, hub.clone(), args.followers),
            player: args.player,
            hub,
            journal,
            last_active_ms: now_ms,
            passivate_check_ms,
            last_retry_ms: now_ms,
        };
        runtime.resync_followers();
        runtime
            .hub
            .sessions
            .register(myself.get_id(), &runtime.player);
        runtime
            .core
            .schedule(runtime.next_deadline(), || SessionMsg::Deadline);
        Ok(runtime)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionRuntime,
    ) -> Result<(), ActorProcessingErr> {
        if !state.core.stop().await {
            state.journal.mark_diverged();
        }
        if let Err(error) = state.journal.snapshot().await {
            tracing::warn!(player = %state.player, %error, "snapshot on stop failed; the journal still holds every event");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionRuntime,
    ) -> Result<(), ActorProcessingErr> {
        if state.core.has_failed() {
            // A commit this session did not wait for failed: its memory is ahead of the
            // store, so nothing more is journaled or snapshotted; it is stopping.
            state.journal.mark_diverged();
        }
        match message {
            SessionMsg::Connect {
                outbound,
                resume,
                reply,
            } => {
                state.last_active_ms = state.hub.now_ms();
                let result = match state.connect(outbound, &resume).await {
                    Ok(()) => Ok(msg::SessionWelcome {
                        player_stream_epoch: state.stream.epoch(),
                    }),
                    Err(error) => Err(error),
                };
                state.core.reply(reply, result);
            }
            SessionMsg::Disconnect { connection } => state.disconnect(connection),
            SessionMsg::RemovedFromRoom { room } => {
                if state.journal.state().rooms.contains_key(&room)
                    && let Err(error) = state
                        .journal
                        .persist(vec![SessionEvent::LeftRoom { room }])
                        .await
                {
                    tracing::warn!(player = %state.player, room, %error, "seat loss not saved");
                }
            }
            SessionMsg::Request { request, reply } => {
                state.last_active_ms = state.hub.now_ms();
                let result = state.handle_request(request).await;
                state.core.reply(reply, result);
            }
            SessionMsg::Credit { grant, source_room } => {
                // A failure is logged where it happens; the source redelivers.
                let _ = state.credit(grant, source_room).await;
            }
            SessionMsg::RetryPending => state.retry_pending().await,
            SessionMsg::Deadline => state.deadline(&myself).await,
            #[cfg(feature = "fault-injection")]
            SessionMsg::InjectFault => panic!("injected fault in session {}", state.player),
        }
        let due = state.next_deadline();
        let must_stop = state.journal.must_stop();
        state
            .core
            .finish(due, || SessionMsg::Deadline, must_stop)
            .await;
        Ok(())
    }
}

impl SessionRuntime {
    /// Follows the player's stream and every room's stream on `outbound`, replaying from
    /// the positions in `resume` where the histories allow.
    async fn connect(
        &mut self,
        outbound: Outbound,
        resume: &[StreamPosition],
    ) -> Result<(), ErrorReply> {
        let connections = followers_of(&self.core.followers).prune_closed(&self.player);
        let connections_max = self.hub.config.session.connections_max;
        if connections >= connections_max {
            metrics::counter!("playtree_rate_limited_total", "limit" => "connections_per_player")
                .increment(1);
            return Err(ErrorReply::new(
                ErrorCode::TooManyConnections,
                format!("you already have {connections_max} live connections; close one first"),
            ));
        }
        let position = |stream: &StreamId| {
            resume
                .iter()
                .find(|p| p.stream == *stream)
                .map(|p| (p.epoch, p.seq))
        };
        let frames = match position(&StreamId::Player(self.player.clone())) {
            None => Vec::new(),
            Some((epoch, seq)) => self.stream.replay_after(epoch, seq).unwrap_or_else(|| {
                let balance = self.journal.state().balance;
                vec![
                    self.stream
                        .snapshot_frame(Event::PlayerSnapshot { balance }),
                ]
            }),
        };
        let rooms: Vec<RoomId> = self.journal.state().rooms.keys().copied().collect();
        for room in rooms {
            let subscribe = RoomMsg::Subscribe {
                player: self.player.clone(),
                outbound: outbound.clone(),
                position: position(&StreamId::Room(room)),
            };
            match self.hub.cast_room(room, subscribe).await {
                Ok(()) => {}
                Err(crate::HubError::UnknownRoom(_)) => {
                    let _ = self
                        .journal
                        .persist(vec![SessionEvent::LeftRoom { room }])
                        .await;
                }
                Err(error) => {
                    tracing::warn!(player = %self.player, room, %error, "could not follow the room")
                }
            }
        }
        // In its turn among the session's releases, as a room does it. Closed
        // connections were dropped above; connection ids are never reused.
        self.core
            .follow(&self.stream, self.player.clone(), outbound, frames);
        Ok(())
    }

    fn disconnect(&mut self, connection: ConnectionId) {
        followers_of(&self.core.followers).remove_connection(&self.player, connection);
        for room in self.journal.state().rooms.keys() {
            if let Some(actor) = self.hub.active_room(*room) {
                let _ = actor.cast(RoomMsg::Unsubscribe {
                    player: self.player.clone(),
                    connection,
                });
            }
        }
        self.last_active_ms = self.hub.now_ms();
    }

    /// Publishes on the player's own stream to every connection of the player.
    fn publish(&mut self, event: Event) {
        self.core.publish(&mut self.stream, event);
    }

    /// A new incarnation (after a failure) tells the player's live connections where
    /// the wallet stands now: a snapshot in the new epoch, never silence.
    fn resync_followers(&self) {
        let mut followers = followers_of(&self.core.followers);
        // Frames an older incarnation still has on their way are stale from now on.
        followers.begin_epoch(self.stream.epoch());
        if followers.is_empty() {
            return;
        }
        let balance = self.journal.state().balance;
        followers.send(
            &self
                .stream
                .snapshot_frame(Event::PlayerSnapshot { balance }),
        );
        metrics::counter!("playtree_resumes_total", "outcome" => "restart_snapshot").increment(1);
    }

    async fn handle_request(&mut self, request: Request) -> Result<ReplyBody, ErrorReply> {
        match request {
            Request::QuickJoin {
                kind: RoomKind::Wheel,
                variant,
            } => self.quick_join_wheel(variant).await,
            Request::QuickJoin {
                kind: RoomKind::Quiz,
                variant,
            } => self.quick_join_quiz(variant).await,
            Request::CreatePrivate { kind, variant } => self.create_private(kind, variant).await,
            Request::JoinPrivate { code } => self.join_private(code).await,
            Request::LeaveRoom { room } => self.leave_room(room).await,
            Request::Spin { room, client_seed } => self.spin(room, client_seed).await,
            Request::RotateSeed { wheel } => self.rotate_seed(wheel).await,
            Request::GetWallet => Ok(ReplyBody::Wallet {
                balance: self.journal.state().balance,
            }),
            Request::Answer {
                room,
                question,
                choice,
            } => {
                self.member_of(room, RoomKind::Quiz)?;
                self.relay(room, |player, reply| RoomMsg::Answer {
                    player,
                    question,
                    choice,
                    reply,
                })
                .await?;
                Ok(ReplyBody::AnswerTaken { room, question })
            }
            Request::Chat { room, text } => {
                self.relay(room, |player, reply| RoomMsg::Chat {
                    player,
                    text: text.clone(),
                    reply,
                })
                .await?;
                Ok(ReplyBody::Sent)
            }
            Request::React { room, emoji } => {
                self.relay(room, |player, reply| RoomMsg::React {
                    player,
                    emoji: emoji.clone(),
                    reply,
                })
                .await?;
                Ok(ReplyBody::Sent)
            }
            // The gateway answers token refreshes itself; one reaching here is a bug.
            Request::RefreshToken { .. } => Err(ErrorReply::new(
                ErrorCode::Internal,
                "token refresh is handled by the connection",
            )),
        }
    }

    /// Passes a member's request on to its room and returns the room's verdict.
    async fn relay(
        &self,
        room: RoomId,
        build: impl Fn(String, ractor::RpcReplyPort<Result<(), ErrorReply>>) -> RoomMsg,
    ) -> Result<(), ErrorReply> {
        self.require_member(room)?;
        let player = self.player.clone();
        self.hub
            .call_room(room, None, |reply| build(player.clone(), reply))
            .await?
    }

    fn require_member(&self, room: RoomId) -> Result<&Membership, ErrorReply> {
        self.journal
            .state()
            .rooms
            .get(&room)
            .ok_or_else(|| not_in_room(room))
    }

    fn member_of(&self, room: RoomId, kind: RoomKind) -> Result<&Membership, ErrorReply> {
        let membership = self.require_member(room)?;
        if membership.kind != kind {
            return Err(ErrorReply::new(
                ErrorCode::WrongRoomKind,
                format!("room {room} is a {:?} room", membership.kind),
            ));
        }
        Ok(membership)
    }

    /// Joins `room` (opening it with `spec` if new), with the player's live connections
    /// following it from now on, and records the membership with `extra` events.
    async fn join_room(
        &mut self,
        room: RoomId,
        spec: Option<RoomSpec>,
        membership: Membership,
        mut extra: Vec<SessionEvent>,
    ) -> Result<Result<RoomView, crate::room::RoomError>, crate::HubError> {
        let player = self.player.clone();
        let outbounds = followers_of(&self.core.followers).outbounds(&player);
        let view = self
            .hub
            .call_room(room, spec, |reply| RoomMsg::Join {
                player: player.clone(),
                outbounds: outbounds.clone(),
                reply,
            })
            .await?;
        if view.is_ok() && !self.journal.state().rooms.contains_key(&room) {
            extra.push(SessionEvent::JoinedRoom { room, membership });
        }
        if view.is_ok() {
            self.journal.persist(extra).await?;
        }
        Ok(view)
    }

    fn already_in_quiz(&self) -> Result<(), ErrorReply> {
        match self.journal.state().room_of(RoomKind::Quiz, None) {
            Some(room) => Err(ErrorReply::new(
                ErrorCode::AlreadyInRoom,
                format!("you are already in quiz room {room}; leave it first"),
            )),
            None => Ok(()),
        }
    }

    fn quiz_membership() -> Membership {
        Membership {
            kind: RoomKind::Quiz,
            variant: QUIZ_VARIANT.into(),
        }
    }

    fn quiz_joined(room: RoomId, view: RoomView) -> ReplyBody {
        ReplyBody::QuizJoined(QuizJoined {
            room,
            stream_epoch: view.stream_epoch,
            code: view.private_code,
            snapshot: view.snapshot,
        })
    }

    async fn quick_join_quiz(&mut self, variant: Option<String>) -> Result<ReplyBody, ErrorReply> {
        if variant.as_deref().is_some_and(|v| v != QUIZ_VARIANT) {
            return Err(ErrorReply::new(
                ErrorCode::UnknownVariant,
                "quiz rooms have no variants; send none",
            ));
        }
        self.already_in_quiz()?;
        let hub = self.hub.clone();
        let mut tried = Vec::new();
        for _ in 0..4 {
            let (room, spec) = match hub
                .matchmaker
                .find_open(RoomKind::Quiz, QUIZ_VARIANT, &tried)
            {
                Some(room) => (room, None),
                None => (
                    hub.store.generate_id().map_err(store_error)?,
                    Some(RoomSpec {
                        kind: RoomKind::Quiz,
                        variant: QUIZ_VARIANT.into(),
                        private_code: None,
                    }),
                ),
            };
            match self
                .join_room(room, spec, Self::quiz_membership(), Vec::new())
                .await
            {
                Ok(Ok(view)) => return Ok(Self::quiz_joined(room, view)),
                // Filled up or started since it was listed: try another.
                Ok(Err(
                    crate::room::RoomError::Full { .. } | crate::room::RoomError::GameInProgress,
                ))
                | Err(crate::HubError::UnknownRoom(_)) => tried.push(room),
                Ok(Err(error)) => return Err(error.into()),
                Err(error) => return Err(error.into()),
            }
        }
        Err(ErrorReply::new(
            ErrorCode::NoRoomAvailable,
            "every quiz room tried was full; try again shortly",
        ))
    }

    async fn create_private(
        &mut self,
        kind: RoomKind,
        variant: Option<String>,
    ) -> Result<ReplyBody, ErrorReply> {
        if kind != RoomKind::Quiz || variant.is_some() {
            return Err(ErrorReply::new(
                ErrorCode::WrongRoomKind,
                "private rooms are quiz rooms, with no variant",
            ));
        }
        self.already_in_quiz()?;
        let hub = self.hub.clone();
        let code = private_code(
            &hub.entropy.server_seed(),
            hub.config.rooms.private_code_len,
        );
        let room = hub.store.generate_id().map_err(store_error)?;
        let spec = RoomSpec {
            kind: RoomKind::Quiz,
            variant: QUIZ_VARIANT.into(),
            private_code: Some(code),
        };
        let view = self
            .join_room(room, Some(spec), Self::quiz_membership(), Vec::new())
            .await??;
        metrics::counter!("playtree_private_rooms_created_total").increment(1);
        Ok(Self::quiz_joined(room, view))
    }

    async fn join_private(&mut self, code: String) -> Result<ReplyBody, ErrorReply> {
        let code = code.trim().to_ascii_uppercase();
        let room = self.hub.matchmaker.room_for_code(&code).ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::UnknownRoomCode,
                format!("no open private room has the code {code}"),
            )
        })?;
        if self.journal.state().rooms.contains_key(&room) {
            return Err(ErrorReply::new(
                ErrorCode::AlreadyInRoom,
                format!("you are already in room {room}"),
            ));
        }
        self.already_in_quiz()?;
        let view = self
            .join_room(room, None, Self::quiz_membership(), Vec::new())
            .await??;
        Ok(Self::quiz_joined(room, view))
    }

    fn unknown_wheel(&self, name: &str) -> ErrorReply {
        let known: Vec<&str> = self
            .hub
            .config
            .wheels
            .iter()
            .map(|w| w.id.as_str())
            .collect();
        ErrorReply::new(
            ErrorCode::UnknownVariant,
            format!(
                "there is no wheel `{name}`; this server has: {}",
                known.join(", ")
            ),
        )
    }

    async fn quick_join_wheel(&mut self, variant: Option<String>) -> Result<ReplyBody, ErrorReply> {
        let kind = RoomKind::Wheel;
        let hub = self.hub.clone();
        let wheel = hub
            .config
            .wheel_or_default(variant.as_deref())
            .ok_or_else(|| self.unknown_wheel(variant.as_deref().unwrap_or_default()))?;
        // Rejoining the room this player is already in for that wheel keeps one seat.
        let mut current = self.journal.state().room_of(kind, Some(&wheel.id));
        let membership = Membership {
            kind,
            variant: wheel.id.clone(),
        };
        let mut tried = Vec::new();
        let mut joined = None;
        for _ in 0..4 {
            let (room, spec) = match current.take() {
                Some(room) => (room, None),
                None => match hub.matchmaker.find_open(kind, &wheel.id, &tried) {
                    Some(room) => (room, None),
                    None => {
                        let room = hub.store.generate_id().map_err(store_error)?;
                        let spec = RoomSpec {
                            kind,
                            variant: wheel.id.clone(),
                            private_code: None,
                        };
                        (room, Some(spec))
                    }
                },
            };
            let mut extra = Vec::new();
            if !self.journal.state().wheels.contains_key(&wheel.id) {
                extra.push(SessionEvent::SeedCommitted {
                    wheel: wheel.id.clone(),
                    server_seed: hub.entropy.server_seed(),
                });
            }
            match self.join_room(room, spec, membership.clone(), extra).await {
                Ok(Ok(view)) => {
                    joined = Some((room, view));
                    break;
                }
                Ok(Err(crate::room::RoomError::Full { .. }))
                | Err(crate::HubError::UnknownRoom(_)) => tried.push(room),
                Ok(Err(error)) => return Err(error.into()),
                Err(error) => return Err(error.into()),
            }
        }
        let (room, view) = joined.ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::NoRoomAvailable,
                format!(
                    "every `{}` room tried was full; try again shortly",
                    wheel.id
                ),
            )
        })?;
        let fairness = self
            .journal
            .state()
            .wheels
            .get(&wheel.id)
            .map(|f| f.info(hub.now_ms()));
        let fairness = fairness
            .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "seed missing after commit"))?;
        Ok(ReplyBody::RoomJoined(RoomJoined {
            room,
            kind,
            stream_epoch: view.stream_epoch,
            wheel: wheel.info(),
            fairness,
            members: view.members,
        }))
    }

    async fn leave_room(&mut self, room: RoomId) -> Result<ReplyBody, ErrorReply> {
        if !self.journal.state().rooms.contains_key(&room) {
            return Err(not_in_room(room));
        }
        let player = self.player.clone();
        match self
            .hub
            .call_room(room, None, |reply| RoomMsg::Leave {
                player: player.clone(),
                reply,
            })
            .await
        {
            Ok(result) => result.map_err(ErrorReply::from)?,
            // A room that no longer exists has no seat to give back.
            Err(crate::HubError::UnknownRoom(_)) => {}
            Err(error) => return Err(error.into()),
        }
        self.journal
            .persist(vec![SessionEvent::LeftRoom { room }])
            .await
            .map_err(store_error)?;
        Ok(ReplyBody::RoomLeft { room })
    }

    async fn spin(&mut self, room: RoomId, client_seed: String) -> Result<ReplyBody, ErrorReply> {
        let hub = self.hub.clone();
        let wheel_id = self.member_of(room, RoomKind::Wheel)?.variant.clone();
        let wheel = hub
            .config
            .wheel(&wheel_id)
            .ok_or_else(|| self.unknown_wheel(&wheel_id))?;
        // Spins settle in nonce order: an earlier spin still unsettled goes first.
        if self
            .journal
            .state()
            .pending_spins
            .keys()
            .any(|(w, _)| *w == wheel_id)
        {
            self.retry_pending().await;
            if self
                .journal
                .state()
                .pending_spins
                .keys()
                .any(|(w, _)| *w == wheel_id)
            {
                return Err(ErrorReply::new(
                    ErrorCode::Timeout,
                    "your previous spin is still being settled; try again in a few seconds",
                ));
            }
        }
        let (spin, day) = logic::draw_spin(
            self.journal.state(),
            wheel,
            room,
            &client_seed,
            hub.now_ms(),
        )?;
        self.journal
            .persist(vec![SessionEvent::SpinDrawn {
                spin: spin.clone(),
                day,
            }])
            .await
            .map_err(store_error)?;
        metrics::counter!("playtree_spins_total", "wheel" => wheel_id.clone()).increment(1);
        let settled = match self.settle(&spin).await {
            Ok(settled) => settled,
            Err(error) => {
                let abandoned = !self.journal.state().pending_spins.contains_key(&spin.key());
                let fate = if abandoned {
                    "cannot be settled; it is recorded for an operator"
                } else {
                    "is drawn and will be settled; its prize arrives as a wallet event"
                };
                return Err(ErrorReply::new(
                    error.code,
                    format!("spin {} {fate} ({})", spin.nonce, error.message),
                ));
            }
        };
        Ok(ReplyBody::Spun(SpinOutcome {
            room,
            wheel: wheel_id,
            nonce: spin.nonce,
            client_seed: spin.client_seed,
            commitment: spin.commitment,
            segment: spin.segment,
            label: settled.label,
            prize: settled.prize,
            inventory_exhausted: settled.inventory_exhausted,
            balance: self.journal.state().balance,
            spins_left_today: logic::spins_left(self.journal.state(), wheel, hub.now_ms()),
        }))
    }

    /// Asks the spin's room to settle it and credits the grant that comes back. A
    /// settlement that can never succeed abandons the spin.
    async fn settle(&mut self, spin: &PendingSpin) -> Result<Settled, ErrorReply> {
        let player = self.player.clone();
        let answer = self
            .hub
            .call_room(spin.room, None, |reply| RoomMsg::Settle {
                player: player.clone(),
                spin: spin.clone(),
                reply,
            })
            .await;
        let permanent = match &answer {
            Err(error @ crate::HubError::UnknownRoom(_)) => Some(error.to_string()),
            Ok(Err(error)) if error.is_permanent() => Some(error.to_string()),
            _ => None,
        };
        if let Some(reason) = permanent {
            self.abandon(spin, &reason).await;
        }
        let settled = answer??;
        if settled.grant.beneficiary != self.player {
            // Defence in depth: the room answered with someone else's grant. Never
            // credit it, and stop retrying a settlement that keeps doing that.
            self.abandon(spin, "the room settled it with another player's grant")
                .await;
        }
        self.credit(settled.grant.clone(), spin.room).await?;
        Ok(settled)
    }

    /// The earliest moment the session has something to do on its own: retry its
    /// unsettled spins, or see whether it may passivate.
    fn next_deadline(&self) -> Option<u64> {
        let config = &self.hub.config.session;
        let retry = (!self.journal.state().pending_spins.is_empty())
            .then(|| self.last_retry_ms + config.pending_retry_ms);
        crate::timers::earliest([retry, Some(self.passivate_check_ms)])
    }

    async fn deadline(&mut self, myself: &ActorRef<SessionMsg>) {
        let now_ms = self.hub.now_ms();
        let config = &self.hub.config.session;
        if !self.journal.state().pending_spins.is_empty()
            && now_ms >= self.last_retry_ms + config.pending_retry_ms
        {
            self.retry_pending().await;
        }
        if now_ms >= self.passivate_check_ms && !self.passivate_if_idle(myself).await {
            self.passivate_check_ms = EntityCore::<SessionMsg>::next_passivation_check(
                now_ms,
                self.last_active_ms,
                self.hub.config.session.passivate_after_ms,
            );
        }
    }

    async fn retry_pending(&mut self) {
        self.last_retry_ms = self.hub.now_ms();
        let pending: Vec<PendingSpin> = self
            .journal
            .state()
            .pending_spins
            .values()
            .cloned()
            .collect();
        for spin in pending {
            if let Err(error) = self.settle(&spin).await {
                tracing::warn!(player = %self.player, nonce = spin.nonce, room = spin.room, %error, "spin not settled yet; will retry");
            }
        }
    }

    /// A spin whose settlement failed for good (its room or wheel is gone, or the room
    /// says it was delivered already) stops waiting: it would otherwise be retried
    /// forever, block the player's next spin and keep the session from passivating.
    /// A dead letter keeps it for an operator.
    async fn abandon(&mut self, spin: &PendingSpin, reason: &str) {
        let letter = DeadLetter {
            kind: "spin".into(),
            id: self.player.clone(),
            what: format!(
                "spin {} of wheel {} in room {} (segment {})",
                spin.nonce, spin.wheel, spin.room, spin.segment
            ),
            reason: reason.to_owned(),
        };
        if let Err(error) = self.hub.store.dead_letter(letter).await {
            tracing::error!(player = %self.player, %error, "dead letter not saved; the spin stays pending");
            return;
        }
        if let Err(error) = self
            .journal
            .persist(vec![SessionEvent::SpinAbandoned { spin: spin.key() }])
            .await
        {
            tracing::error!(player = %self.player, %error, "abandoned spin not saved; it stays pending");
        }
    }

    /// Credits `grant` unless it was credited before, then acknowledges it to its room
    /// either way (an acknowledgement can be lost, so duplicates must be acknowledged too).
    async fn credit(&mut self, grant: Grant, source_room: RoomId) -> Result<(), ErrorReply> {
        let decision = logic::decide_credit(self.journal.state(), &self.player, &grant);
        if decision == logic::CreditDecision::Misaddressed {
            // Never credited and never acknowledged: the grant stays with its source.
            metrics::counter!("playtree_rewards_misaddressed_total").increment(1);
            let letter = DeadLetter {
                kind: "grant".into(),
                id: self.player.clone(),
                what: format!("grant {} for {}", grant.id, grant.beneficiary),
                reason: "delivered to another player's wallet".into(),
            };
            if let Err(error) = self.hub.store.dead_letter(letter).await {
                tracing::error!(player = %self.player, %error, "dead letter not saved");
            }
            return Err(ErrorReply::new(
                ErrorCode::Internal,
                format!(
                    "grant {} is for {}, not you; nothing was credited and the fault is recorded",
                    grant.id, grant.beneficiary
                ),
            ));
        }
        if let logic::CreditDecision::Credit(event) = decision {
            // Pipelined: what depends on the credit (the wallet event, the reply, the
            // acknowledgement) leaves once it is durable.
            match self.journal.append(vec![event]) {
                Ok(ticket) => self.core.after(ticket),
                Err(error) => {
                    // Not acknowledged: the room keeps the grant and delivers it again.
                    tracing::error!(player = %self.player, grant = %grant.id, %error, "credit not saved");
                    return Err(store_error(error));
                }
            }
            let amount = grant.amount;
            self.core.effects.push(move || {
                // Counted once durable, like everything the credit implies.
                metrics::counter!("playtree_rewards_credited_total").increment(1);
                metrics::counter!("playtree_reward_coins_credited_total").increment(amount);
            });
            if grant.amount > 0 {
                let balance = self.journal.state().balance;
                self.publish(Event::WalletCredited {
                    grant_id: grant.id.to_string(),
                    amount: grant.amount,
                    balance,
                    reason: grant.reason.clone(),
                });
            }
        } else {
            metrics::counter!("playtree_rewards_duplicates_total").increment(1);
        }
        // Acknowledged either way (an acknowledgement can be lost, so duplicates are
        // acknowledged too), once the credit is durable.
        let (hub, player) = (self.hub.clone(), self.player.clone());
        self.core.effects.push(move || {
            let acked = RoomMsg::GrantAcked { grant: grant.id };
            // Straight into an active room's mailbox, in order with what the session
            // does next; a room that must be activated first gets it from a task.
            let acked = match hub.active_room(source_room) {
                Some(room) => match room.cast(acked) {
                    Ok(()) => return,
                    Err(ractor::MessagingErr::SendErr(acked)) => acked,
                    Err(_) => return,
                },
                None => acked,
            };
            tokio::spawn(async move {
                if let Err(error) = hub.cast_room(source_room, acked).await {
                    tracing::warn!(%player, %error, "acknowledgement not delivered; the room will redeliver");
                }
            });
        });
        Ok(())
    }

    async fn rotate_seed(&mut self, wheel_id: String) -> Result<ReplyBody, ErrorReply> {
        let hub = self.hub.clone();
        if hub.config.wheel(&wheel_id).is_none() {
            return Err(self.unknown_wheel(&wheel_id));
        }
        let (events, revealed_seed) = logic::decide_rotation(
            self.journal.state(),
            &wheel_id,
            || hub.entropy.server_seed(),
            hub.entropy.server_seed(),
        );
        let ticket = self.journal.append(events).map_err(store_error)?;
        self.core.after(ticket);
        let current = self
            .journal
            .state()
            .wheels
            .get(&wheel_id)
            .cloned()
            .ok_or_else(|| ErrorReply::new(ErrorCode::Internal, "seed missing after rotation"))?;
        Ok(ReplyBody::SeedRotated(SeedReveal {
            wheel: wheel_id,
            revealed_seed,
            revealed_commitment: fairness::commitment(&revealed_seed),
            next_commitment: current.commitment,
            next_nonce: current.next_nonce,
        }))
    }

    /// Passivates if nobody is connected and nothing is pending; says whether it did.
    async fn passivate_if_idle(&mut self, myself: &ActorRef<SessionMsg>) -> bool {
        let hub = &self.hub;
        let idle_ms = hub.now_ms().saturating_sub(self.last_active_ms);
        if !followers_of(&self.core.followers).is_empty()
            || idle_ms < hub.config.session.passivate_after_ms
            || !self.journal.state().pending_spins.is_empty()
        {
            return false;
        }
        if let Err(error) = self.journal.snapshot().await {
            tracing::warn!(player = %self.player, %error, "snapshot before passivation failed");
        }
        hub.mark_draining(EntityKind::Session, myself.get_id());
        metrics::counter!("playtree_actor_passivations_total", "kind" => "session").increment(1);
        // Messages already queued are handled before the actor stops; later sends fail
        // and re-resolve through the directory, which waits for this stop.
        let _ = myself.drain();
        true
    }
}

/// The variant name of quiz rooms (there is one kind of quiz so far).
pub const QUIZ_VARIANT: &str = "quiz";

/// A short code for a private room, from the letters and digits people do not confuse.
fn private_code(entropy: &[u8; 32], len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // 32 symbols: each byte's low five bits pick one without bias.
    entropy
        .iter()
        .take(len)
        .map(|byte| ALPHABET[(byte & 31) as usize] as char)
        .collect()
}

fn not_in_room(room: RoomId) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::NotInRoom,
        format!("you are not in room {room}; QuickJoin a room first"),
    )
}
