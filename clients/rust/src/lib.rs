//! Async client for Playtree, for game clients and partner apps.
//!
//! ```no_run
//! # async fn demo(token: &str) -> Result<(), playtree_client::ClientError> {
//! let (client, mut events) = playtree_client::Client::connect("ws://127.0.0.1:7400", token).await?;
//! let room = client.quick_join_wheel(None).await?;
//! let spin = client.spin(room.room, "my-lucky-seed").await?;
//! println!("landed on {} and won {}", spin.label, spin.prize);
//! // Later: rotate the seed and check every spin made under the old one.
//! let reveal = client.rotate_seed(&room.wheel.id).await?;
//! for (nonce, verdict) in client.verify_spins(&reveal) {
//!     assert!(verdict.is_ok(), "spin {nonce} does not verify");
//! }
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event.event);
//! }
//! # Ok(()) }
//! ```

mod connection;
mod error;
mod verify;

pub use connection::{Client, ClientOptions, Events, LogEntries};
pub use error::ClientError;
pub use playtree_protocol as protocol;
pub use verify::{SpinMismatch, SpinRecord, check_nonces, verify_record, verify_spin};
