//! The supervisor of one entity kind. Its children are spawned linked to it by the hub.
//! ractor's default would stop the supervisor when a child fails; this one restarts the
//! child from its persisted state instead, within the kind's restart intensity, and
//! forgets children that stopped normally (passivation, shutdown).

use crate::hub::{EntityKind, Hub, HubInner};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Weak;

#[derive(Debug)]
pub struct Supervisor;

/// A supervisor takes no messages of its own; it acts on supervision events.
#[derive(Debug)]
pub enum SupervisorMsg {}

impl ractor::Message for SupervisorMsg {}

#[derive(Debug)]
pub struct SupervisorArgs {
    pub kind: EntityKind,
    pub hub: Weak<HubInner>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorArgs;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some(hub) = state.hub.upgrade().map(Hub::from_inner) else {
            return Ok(());
        };
        match event {
            SupervisionEvent::ActorFailed(child, error) => {
                hub.child_failed(state.kind, child.get_id(), error.to_string());
            }
            SupervisionEvent::ActorTerminated(child, _, _) => {
                hub.child_stopped(state.kind, child.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
