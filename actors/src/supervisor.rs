//! The supervisor of one entity kind. Its children are spawned linked to it by the hub.
//! ractor's default would stop the supervisor when a child fails; this one tells its
//! [`Children`] instead (the hub restarts the child from its persisted state, within
//! the kind's restart intensity, and forgets children that stopped normally).

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::fmt::Debug;
use std::sync::Arc;

/// What a supervisor tells about its children.
pub trait Children: Send + Sync + Debug + 'static {
    fn failed(&self, actor: ActorId, error: String);
    fn stopped(&self, actor: ActorId);
}

#[derive(Debug)]
pub struct Supervisor;

/// A supervisor takes no messages of its own; it acts on supervision events.
#[derive(Debug)]
pub enum SupervisorMsg {}

impl ractor::Message for SupervisorMsg {}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = Arc<dyn Children>;
    type Arguments = Arc<dyn Children>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        children: Arc<dyn Children>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(children)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        children: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(child, error) => {
                children.failed(child.get_id(), error.to_string());
            }
            SupervisionEvent::ActorTerminated(child, _, _) => {
                children.stopped(child.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
