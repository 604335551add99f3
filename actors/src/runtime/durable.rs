//! What the store keeps of an entity: the kind's own state beside its post office, and
//! one journal record per commit holding both kinds of events. The kind implements
//! [`Entity`] for its own state and events; [`Durable`] is the entity the store sees.

use super::Behaviour;
use crate::mail::{Post, PostEvent};
use crate::store::Entity;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

/// An entity's durable state: the kind's, and its post office.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored<S> {
    pub state: S,
    pub post: Post,
}

/// One commit's worth of changes: the kind's events and the post office's, applied in
/// that order (a decision's events come before what it sends or takes only in the
/// record, never in meaning: the two touch different parts of the state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<E> {
    pub events: Vec<E>,
    pub post: Vec<PostEvent>,
}

/// The store's view of a kind `B`.
#[derive(Debug)]
pub struct Durable<B>(PhantomData<fn() -> B>);

impl<B: Behaviour> Entity for Durable<B> {
    const KIND: &'static str = B::KIND;
    type State = Stored<B::State>;
    type Event = Record<B::Event>;
    type Part = B::Part;

    fn apply(stored: &mut Stored<B::State>, record: &Record<B::Event>) {
        for event in &record.events {
            B::apply(&mut stored.state, event);
        }
        for event in &record.post {
            stored.post.apply(event);
        }
    }

    fn owes(stored: &Stored<B::State>) -> bool {
        stored.post.owes() || B::owes(&stored.state)
    }

    fn parts(stored: &mut Stored<B::State>) -> Option<&mut BTreeMap<String, B::Part>> {
        B::parts(&mut stored.state)
    }

    fn touched(
        stored: &Stored<B::State>,
        record: &Record<B::Event>,
        touched: &mut BTreeSet<String>,
    ) {
        for event in &record.events {
            B::touched(&stored.state, event, touched);
        }
    }
}
