//! The part of the server configuration that the actors read: games, limits and timings.
//! Durations are integers with their unit last in the name (`passivate_after_ms`).

use playtree_protocol::{SegmentInfo, WheelInfo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GameConfig {
    pub actors: ActorsConfig,
    pub session: SessionConfig,
    pub rooms: RoomsConfig,
    pub store: StoreConfig,
    pub wheels: Vec<WheelConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActorsConfig {
    /// Deadline of a request/response between actors.
    pub call_timeout_ms: u64,
    /// Most player sessions active in memory at once.
    pub sessions_max: usize,
    /// A failed entity is restarted at most this many times within `restart_window_ms`;
    /// one more failure stops it and it answers "unavailable" for the rest of the window.
    pub restarts_max: usize,
    pub restart_window_ms: u64,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            call_timeout_ms: 5_000,
            sessions_max: 100_000,
            restarts_max: 3,
            restart_window_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session with no connection for this long is snapshotted and stopped.
    pub passivate_after_ms: u64,
    /// How many credited grant ids a wallet remembers to refuse duplicates.
    pub credited_grants_max: usize,
    /// How often a session retries settling spins whose room did not answer.
    pub pending_retry_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            passivate_after_ms: 60_000,
            credited_grants_max: 4_096,
            pending_retry_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Most players in one wheel room.
    pub wheel_players_max: usize,
    /// Most rooms active at once.
    pub rooms_max: usize,
    /// How often a room redelivers grants that were not acknowledged.
    pub outbox_retry_ms: u64,
    /// An empty room with nothing left to deliver stops after this long.
    pub passivate_after_ms: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            wheel_players_max: 100,
            rooms_max: 10_000,
            outbox_retry_ms: 5_000,
            passivate_after_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Snapshot an entity after this many journaled events (and on passivation).
    pub snapshot_every: u64,
    /// Most commit requests that one flush serves.
    pub commit_batch_max: usize,
    /// Most commit requests waiting for the group-commit task.
    pub commit_queue_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            snapshot_every: 100,
            commit_batch_max: 1_024,
            commit_queue_max: 65_536,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WheelConfig {
    pub id: String,
    /// Spins each player may make per UTC day on this wheel.
    pub spins_per_day: u32,
    pub segments: Vec<SegmentConfig>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentConfig {
    pub label: String,
    /// Coins credited when the wheel lands here.
    pub prize: u64,
    /// Relative chance (an integer; the chance is weight / sum of weights).
    pub weight: u32,
    /// How many times one room pays this prize out; when it runs out the segment pays 0.
    #[serde(default)]
    pub inventory: Option<u64>,
}

/// A configuration value that cannot work, named by its key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid config value for `{key}`: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

impl GameConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("actors.call_timeout_ms", self.actors.call_timeout_ms),
            ("actors.sessions_max", self.actors.sessions_max as u64),
            ("actors.restart_window_ms", self.actors.restart_window_ms),
            (
                "session.passivate_after_ms",
                self.session.passivate_after_ms,
            ),
            (
                "session.credited_grants_max",
                self.session.credited_grants_max as u64,
            ),
            ("session.pending_retry_ms", self.session.pending_retry_ms),
            (
                "rooms.wheel_players_max",
                self.rooms.wheel_players_max as u64,
            ),
            ("rooms.rooms_max", self.rooms.rooms_max as u64),
            ("rooms.outbox_retry_ms", self.rooms.outbox_retry_ms),
            ("rooms.passivate_after_ms", self.rooms.passivate_after_ms),
            ("store.snapshot_every", self.store.snapshot_every),
            ("store.commit_batch_max", self.store.commit_batch_max as u64),
            ("store.commit_queue_max", self.store.commit_queue_max as u64),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if self.wheels.is_empty() {
            return Err(invalid("wheels", "at least one wheel must be defined"));
        }
        let mut ids = std::collections::HashSet::new();
        for (wheel_idx, wheel) in self.wheels.iter().enumerate() {
            let key = format!("wheels[{wheel_idx}]");
            if wheel.id.is_empty() || !ids.insert(wheel.id.as_str()) {
                return Err(invalid(format!("{key}.id"), "must be non-empty and unique"));
            }
            if wheel.spins_per_day == 0 {
                return Err(invalid(
                    format!("{key}.spins_per_day"),
                    "must be greater than 0",
                ));
            }
            if wheel.segments.is_empty() || wheel.segments.len() > 64 {
                return Err(invalid(
                    format!("{key}.segments"),
                    "must have 1 to 64 segments",
                ));
            }
            let total: u64 = wheel.segments.iter().map(|s| u64::from(s.weight)).sum();
            if total == 0 {
                return Err(invalid(
                    format!("{key}.segments"),
                    "weights must not all be 0",
                ));
            }
        }
        Ok(())
    }

    pub fn wheel(&self, id: &str) -> Option<&WheelConfig> {
        self.wheels.iter().find(|wheel| wheel.id == id)
    }

    /// The wheel named, or the first wheel when none is named.
    pub fn wheel_or_default(&self, id: Option<&str>) -> Option<&WheelConfig> {
        match id {
            Some(id) => self.wheel(id),
            None => self.wheels.first(),
        }
    }
}

impl WheelConfig {
    pub fn weights(&self) -> Vec<u32> {
        self.segments.iter().map(|segment| segment.weight).collect()
    }

    pub fn info(&self) -> WheelInfo {
        WheelInfo {
            id: self.id.clone(),
            spins_per_day: self.spins_per_day,
            segments: self
                .segments
                .iter()
                .map(|segment| SegmentInfo {
                    label: segment.label.clone(),
                    prize: segment.prize,
                    weight: segment.weight,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
pub(crate) fn test_wheel() -> WheelConfig {
    WheelConfig {
        id: "classic".into(),
        spins_per_day: 3,
        segments: vec![
            SegmentConfig {
                label: "10 coins".into(),
                prize: 10,
                weight: 3,
                inventory: None,
            },
            SegmentConfig {
                label: "Jackpot".into(),
                prize: 500,
                weight: 1,
                inventory: Some(1),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> GameConfig {
        GameConfig {
            wheels: vec![test_wheel()],
            ..GameConfig::default()
        }
    }

    #[test]
    fn validation_names_the_bad_key() {
        assert_eq!(valid().validate(), Ok(()));
        let mut config = valid();
        config.wheels[0].segments[0].weight = 0;
        config.wheels[0].segments[1].weight = 0;
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("wheels[0].segments".into())
        );
        let mut config = valid();
        config.store.snapshot_every = 0;
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("store.snapshot_every".into())
        );
        let mut config = valid();
        config.wheels.push(test_wheel());
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("wheels[1].id".into())
        );
    }
}
