//! The Playtree server: configuration, authentication, the websocket gateway and admin
//! HTTP around the actor system of `playtree-actors`. Only this crate knows sockets, HTTP
//! and environment variables.

pub mod admin;
pub mod auth;
pub mod clock;
pub mod config;
pub mod gateway;
pub mod idempotency;
pub mod partner;
pub mod proxies;
pub mod questions;
pub mod server;
pub mod sources;
pub mod websocket;

pub use config::ServerConfig;
pub use server::{Environment, RunningServer, start};
