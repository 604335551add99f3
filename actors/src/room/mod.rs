//! Room: one actor per game room (kind `wheel` for now). It holds the members and the
//! game state, broadcasts each event to every member encoded once, and is the source of
//! the grants that pay its prizes (outbox, redelivered until acknowledged).

mod logic;
mod msg;
mod state;

pub use msg::{RoomError, RoomMsg, RoomSpec, RoomView, Settled};
pub use state::{RoomEntity, RoomEvent, RoomSetup, RoomState};

use crate::grant::Grant;
use crate::hub::{EntityKind, Hub};
use crate::matchmaker::Listing;
use crate::session::{PendingSpin, SessionMsg};
use crate::store::Journal;
use crate::stream::StreamCursor;
use playtree_protocol::{Event, GrantId, RoomId, SpinResult, StreamId};
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::time::Duration;

#[derive(Debug)]
pub struct Room;

#[derive(Debug)]
pub struct RoomArgs {
    pub room: RoomId,
    pub spec: Option<RoomSpec>,
    pub hub: Hub,
}

/// Activation found no such room in the store and was given no spec to create it.
#[derive(Debug, thiserror::Error)]
#[error("room {0} does not exist")]
pub struct UnknownRoom(pub RoomId);

#[derive(Debug)]
pub struct RoomRuntime {
    room: RoomId,
    hub: Hub,
    journal: Journal<RoomEntity>,
    stream: StreamCursor,
    last_active_ms: u64,
    timers: Vec<JoinHandle<()>>,
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
        let mut journal: Journal<RoomEntity> =
            Journal::open(hub.store.clone(), &id, hub.config.store.snapshot_every).await?;
        if journal.state().setup.is_none() {
            let spec = args.spec.ok_or(UnknownRoom(args.room))?;
            let wheel = hub
                .config
                .wheel(&spec.variant)
                .ok_or_else(|| RoomError::MissingWheel(spec.variant.clone()))?;
            let created = RoomEvent::Created {
                inventory: logic::initial_inventory(wheel),
                setup: RoomSetup {
                    kind: spec.kind,
                    variant: spec.variant,
                },
            };
            journal.persist(vec![created]).await?;
        }
        let rooms = &hub.config.rooms;
        let passivate_check = Duration::from_millis((rooms.passivate_after_ms / 2).max(100));
        let timers = vec![
            myself.send_interval(Duration::from_millis(rooms.outbox_retry_ms), || {
                RoomMsg::RedeliverOutbox
            }),
            myself.send_interval(passivate_check, || RoomMsg::PassivateCheck),
        ];
        if !journal.state().outbox.is_empty() {
            myself.cast(RoomMsg::RedeliverOutbox)?;
        }
        let now_ms = hub.now_ms();
        let runtime = RoomRuntime {
            room: args.room,
            stream: StreamCursor::new(StreamId::Room(args.room), now_ms),
            hub,
            journal,
            last_active_ms: now_ms,
            timers,
        };
        runtime.update_listing();
        metrics::gauge!("playtree_rooms_open", "kind" => "wheel").increment(1.0);
        Ok(runtime)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<RoomMsg>,
        state: &mut RoomRuntime,
    ) -> Result<(), ActorProcessingErr> {
        for timer in &state.timers {
            timer.abort();
        }
        state.hub.matchmaker.remove(state.room);
        metrics::gauge!("playtree_rooms_open", "kind" => "wheel").decrement(1.0);
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
        match message {
            RoomMsg::Join { player, reply } => {
                state.last_active_ms = state.hub.now_ms();
                let _ = reply.send(state.join(player).await);
            }
            RoomMsg::Leave { player, reply } => {
                let _ = reply.send(state.leave(player).await);
            }
            RoomMsg::Settle {
                player,
                spin,
                reply,
            } => {
                state.last_active_ms = state.hub.now_ms();
                let _ = reply.send(state.settle(player, spin).await);
            }
            RoomMsg::GrantAcked { grant } => state.grant_acked(grant).await,
            RoomMsg::RedeliverOutbox => state.redeliver().await,
            RoomMsg::PassivateCheck => state.passivate_if_idle(&myself).await,
        }
        Ok(())
    }
}

impl RoomRuntime {
    fn setup(&self) -> Result<&RoomSetup, RoomError> {
        // Invariant: pre_start refuses to start a room without its Created event.
        self.journal
            .state()
            .setup
            .as_ref()
            .ok_or_else(|| RoomError::MissingWheel(String::new()))
    }

    fn capacity(&self) -> usize {
        self.hub.config.rooms.wheel_players_max
    }

    fn update_listing(&self) {
        if let Some(setup) = &self.journal.state().setup {
            self.hub.matchmaker.update(
                self.room,
                Listing {
                    kind: setup.kind,
                    variant: setup.variant.clone(),
                    members: self.journal.state().members.len(),
                    capacity: self.capacity(),
                },
            );
        }
    }

    /// Encodes `event` once and hands the same bytes to every member's connections.
    fn broadcast(&mut self, event: Event) {
        let frame = self.stream.frame(event);
        for member in &self.journal.state().members {
            self.hub.connections.push(member, "event", &frame);
        }
    }

    async fn join(&mut self, player: String) -> Result<RoomView, RoomError> {
        let setup = self.setup()?.clone();
        let members = &self.journal.state().members;
        if !members.contains(&player) {
            if members.len() >= self.capacity() {
                return Err(RoomError::Full {
                    capacity: self.capacity(),
                });
            }
            self.journal
                .persist(vec![RoomEvent::MemberJoined {
                    player: player.clone(),
                }])
                .await
                .map_err(|error| RoomError::Store(error.to_string()))?;
            self.broadcast(Event::MemberJoined {
                room: self.room,
                player,
            });
            self.update_listing();
        }
        Ok(RoomView {
            kind: setup.kind,
            variant: setup.variant,
            stream_epoch: self.stream.epoch(),
            members: self.journal.state().members.iter().cloned().collect(),
        })
    }

    async fn leave(&mut self, player: String) -> Result<(), RoomError> {
        if !self.journal.state().members.contains(&player) {
            return Ok(());
        }
        self.journal
            .persist(vec![RoomEvent::MemberLeft {
                player: player.clone(),
            }])
            .await
            .map_err(|error| RoomError::Store(error.to_string()))?;
        self.broadcast(Event::MemberLeft {
            room: self.room,
            player,
        });
        self.update_listing();
        Ok(())
    }

    async fn settle(&mut self, player: String, spin: PendingSpin) -> Result<Settled, RoomError> {
        let setup = self.setup()?.clone();
        if setup.variant != spin.wheel {
            return Err(RoomError::WrongWheel(spin.wheel));
        }
        let wheel = self
            .hub
            .config
            .wheel(&setup.variant)
            .ok_or_else(|| RoomError::MissingWheel(setup.variant.clone()))?
            .clone();
        let (label, prize, exhausted) =
            logic::prize_for(self.journal.state(), &wheel, spin.segment)
                .ok_or_else(|| RoomError::MissingWheel(setup.variant.clone()))?;
        if logic::already_settled(self.journal.state(), &player, spin.nonce) {
            // A retry of a spin settled before: hand back the same grant.
            let grant = logic::settled_grant(self.journal.state(), &spin.wheel, spin.nonce)
                .cloned()
                .ok_or(RoomError::AlreadyDelivered)?;
            return Ok(Settled {
                prize: grant.amount,
                inventory_exhausted: grant.amount == 0 && prize > 0,
                grant,
                label,
            });
        }
        let grant = Grant {
            id: GrantId {
                source: format!("room:{}", self.room),
                seq: self.journal.next_seq(),
            },
            beneficiary: player.clone(),
            amount: prize,
            reason: format!("wheel {} spin {}: {label}", spin.wheel, spin.nonce),
            settles: Some(spin.key()),
        };
        self.journal
            .persist(vec![RoomEvent::SpinSettled {
                grant: grant.clone(),
                player: player.clone(),
                nonce: spin.nonce,
                segment: spin.segment,
                inventory_exhausted: exhausted,
            }])
            .await
            .map_err(|error| RoomError::Store(error.to_string()))?;
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

    async fn grant_acked(&mut self, grant: GrantId) {
        if !self.journal.state().outbox.contains_key(&grant) {
            return;
        }
        if let Err(error) = self
            .journal
            .persist(vec![RoomEvent::GrantDelivered {
                grant: grant.clone(),
            }])
            .await
        {
            // The grant stays in the outbox and is redelivered; the wallet dedups it.
            tracing::warn!(room = self.room, %grant, %error, "delivery not recorded");
        }
    }

    async fn redeliver(&mut self) {
        let grants: Vec<Grant> = self.journal.state().outbox.values().cloned().collect();
        for grant in grants {
            let beneficiary = grant.beneficiary.clone();
            let message = SessionMsg::Credit {
                grant,
                source_room: self.room,
            };
            if let Err(error) = self.hub.cast_session(&beneficiary, message).await {
                tracing::warn!(room = self.room, player = %beneficiary, %error, "grant redelivery failed; will retry");
            }
        }
    }

    async fn passivate_if_idle(&mut self, myself: &ActorRef<RoomMsg>) {
        let hub = &self.hub;
        let state = self.journal.state();
        let idle_ms = hub.now_ms().saturating_sub(self.last_active_ms);
        let anyone_connected = state
            .members
            .iter()
            .any(|m| hub.connections.is_connected(m));
        if anyone_connected
            || !state.outbox.is_empty()
            || idle_ms < hub.config.rooms.passivate_after_ms
        {
            return;
        }
        hub.matchmaker.remove(self.room);
        hub.mark_draining(EntityKind::Room, myself.get_id());
        metrics::counter!("playtree_actor_passivations_total", "kind" => "room").increment(1);
        let _ = myself.drain();
    }
}
