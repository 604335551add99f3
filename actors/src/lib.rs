//! Playtree actors: every player session and game room is a ractor actor holding its state
//! in memory, journaled to the store before any change is applied or acknowledged.
//!
//! This crate knows nothing of websockets or HTTP. It receives decoded protocol requests
//! and pushes already-encoded frames into bounded outbound queues ([`connections`]).

pub mod claim;
pub mod clock;
pub mod codes;
pub mod config;
pub mod connections;
pub mod directory;
pub mod error;
pub mod hub;
pub mod mail;
pub mod matchmaker;
pub mod questions;
pub mod rate;
pub mod referral;
pub mod release;
pub mod room;
pub mod runtime;
pub mod seeds;
pub mod session;
pub mod store;
pub mod stream;
pub mod supervisor;
pub mod timers;

pub use clock::{Clock, Entropy};
pub use config::GameConfig;
pub use connections::{ConnectionId, OutFrame, Outbound, OutboundReceiver, SlowSignal};
pub use error::HubError;
pub use hub::Hub;
pub use store::{Store, StoreError};
