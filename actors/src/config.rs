//! The part of the server configuration that the actors read: games, limits and timings.
//! Durations are integers with their unit last in the name (`passivate_after_ms`).

use playtree_protocol::{SegmentInfo, WheelInfo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GameConfig {
    pub actors: ActorsConfig,
    pub mail: MailConfig,
    pub session: SessionConfig,
    pub rooms: RoomsConfig,
    pub store: StoreConfig,
    pub wheels: Vec<WheelConfig>,
    pub quiz: QuizConfig,
    pub referral: ReferralConfig,
}

/// Referral trees: attribution, rewards per level, limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReferralConfig {
    /// A player may claim a referral code this long after their first connection.
    pub attribution_window_ms: u64,
    /// Coins per level paid when a referee claims a code: the first entry to the
    /// referrer (level 1), the next to the referrer's referrer, and so on. Levels
    /// beyond the list earn nothing.
    pub signup_rewards: Vec<u64>,
    /// Coins per level paid when a referee finishes a first game.
    pub activation_rewards: Vec<u64>,
    /// Coins for the referee who claims a code (0: none).
    pub welcome_bonus: u64,
    /// Rewards are held (pending) this long before they are credited (0: at once).
    pub hold_ms: u64,
    /// Coins per level for each kind of conversion a partner reports.
    pub conversion_rewards: std::collections::BTreeMap<String, Vec<u64>>,
    /// Velocity limits: a referrer's claims beyond this many paid within any hour, and a
    /// player's rewards beyond this many within any day, are flagged (held for a partner
    /// to approve or void) instead of paid. 0: no limit; at most
    /// [`crate::rate::SLIDING_EVENTS_MAX`].
    pub claims_per_referrer_per_hour: u32,
    pub rewards_per_player_per_day: u32,
    /// The partner event log keeps entries this long.
    pub log_retention_ms: u64,
    /// Most entries one leaderboard request answers.
    pub leaderboard_max: u32,
    /// A source address's claims beyond this many paid within any hour have their
    /// rewards flagged (0: no limit). Behind a proxy, list it in `server.trusted_proxies`
    /// so that clients are counted at their own addresses, not the proxy's.
    pub claims_per_address_per_hour: u32,
    /// Most source addresses counted at once.
    pub claim_sources_max: usize,
    /// Most players in one referral tree.
    pub tree_players_max: usize,
    /// Most referral trees active at once.
    pub trees_max: usize,
    /// A tree with nothing left to deliver stops after this long unused.
    pub passivate_after_ms: u64,
    /// A tree remembers its answers to partners (a conversion report's idempotency key,
    /// a decision on a reward) for this long, so that a request repeated within it gets
    /// the first answer; a conversion key reported again after that pays again.
    pub partner_answers_kept_ms: u64,
    /// And at most this many of each (conversion keys, decisions) per tree: a request
    /// whose answer could be kept only by forgetting one younger than
    /// `partner_answers_kept_ms` is refused (3005, retry later).
    pub partner_answers_max: usize,
}

impl Default for ReferralConfig {
    fn default() -> Self {
        ReferralConfig {
            attribution_window_ms: 7 * 24 * 3_600_000,
            signup_rewards: vec![100],
            activation_rewards: vec![100, 30, 10],
            welcome_bonus: 50,
            hold_ms: 0,
            conversion_rewards: [("purchase".to_owned(), vec![50, 10])].into(),
            claims_per_referrer_per_hour: 50,
            rewards_per_player_per_day: 500,
            log_retention_ms: 7 * 24 * 3_600_000,
            leaderboard_max: 100,
            claims_per_address_per_hour: 0,
            claim_sources_max: 100_000,
            tree_players_max: 100_000,
            trees_max: 100_000,
            passivate_after_ms: 60_000,
            partner_answers_kept_ms: 7 * 24 * 3_600_000,
            partner_answers_max: 100_000,
        }
    }
}

/// What happens to a player who joins a quiz room whose game has started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinStarted {
    /// Seat them; they watch and play the next game.
    Wait,
    /// Refuse with `GameInProgress`.
    Refuse,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuizConfig {
    /// The game starts as soon as this many players are in the lobby...
    pub min_players: usize,
    /// ...or when this countdown (from the first player's arrival) ends.
    pub lobby_countdown_ms: u64,
    pub players_max: usize,
    pub questions_per_game: usize,
    /// Time to answer each question (T in the score formula).
    pub question_ms: u64,
    /// Pause after each reveal, and on the podium before the next lobby.
    pub reveal_ms: u64,
    pub podium_ms: u64,
    /// Prizes by final rank: first entry for rank 1, and so on.
    pub prizes: Vec<u64>,
    pub join_started: JoinStarted,
    /// A disconnected player keeps their seat this long.
    pub seat_grace_ms: u64,
    /// Folder of question files; empty: the bank embedded in the binary.
    pub questions_dir: String,
}

impl Default for QuizConfig {
    fn default() -> Self {
        QuizConfig {
            min_players: 2,
            lobby_countdown_ms: 20_000,
            players_max: 50,
            questions_per_game: 10,
            question_ms: 10_000,
            reveal_ms: 4_000,
            podium_ms: 10_000,
            prizes: vec![500, 300, 100],
            join_started: JoinStarted::Wait,
            seat_grace_ms: 30_000,
            questions_dir: String::new(),
        }
    }
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
    /// Batches of replies and publications one entity may have waiting for their
    /// commits; past it the entity waits before taking its next message.
    pub release_queue_max: usize,
    /// The entities' one timer sleeps at most this long between looks at the clock, so
    /// a clock that jumps is noticed within it (deadlines are read on the clock).
    pub timer_poll_ms: u64,
    /// What an entity could not do at its deadline because the store refused it (a full
    /// commit queue) is tried again after this long, then twice as long each time, up
    /// to `retry_max_ms`.
    pub retry_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for ActorsConfig {
    fn default() -> Self {
        ActorsConfig {
            call_timeout_ms: 5_000,
            sessions_max: 100_000,
            restarts_max: 3,
            restart_window_ms: 10_000,
            release_queue_max: 4_096,
            timer_poll_ms: 100,
            retry_ms: 100,
            retry_max_ms: 10_000,
        }
    }
}

/// Letters between entities (see `mail`): redelivery, acknowledgements, marks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailConfig {
    /// A letter not acknowledged after this long is delivered again, then after twice
    /// as long each time, up to `redeliver_max_ms`.
    pub redeliver_ms: u64,
    pub redeliver_max_ms: u64,
    /// Acknowledgements an entity receives are journaled together, at most this long
    /// after the first of them (or sooner, with its next commit).
    pub acks_flush_ms: u64,
    /// How long a receiver remembers which letters a sender's were once the sender has
    /// gone quiet; a letter sent longer ago than this is refused as stale (a dead
    /// letter) rather than risk taking it twice.
    pub marks_kept_ms: u64,
    /// Letters one entity may have unacknowledged at once; a decision that would send
    /// more is refused (the sender retries later) rather than let an outbox grow
    /// without bound while its receivers are away.
    pub outbox_max: usize,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            redeliver_ms: 1_000,
            redeliver_max_ms: 60_000,
            acks_flush_ms: 100,
            marks_kept_ms: 30 * 86_400_000,
            outbox_max: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// A session with no connection for this long is snapshotted and stopped.
    pub passivate_after_ms: u64,
    /// Live connections one player may hold at once.
    pub connections_max: usize,
    /// Requests of one player that wait while an earlier join of the same kind of room
    /// is under way; one more is refused with `RateLimited`.
    pub requests_queued_max: usize,
    /// A join handed to a room that has not answered after this long is forgotten by
    /// the session, so that the player's next join can go (the room's answer, should
    /// it come, still counts).
    pub join_wait_ms: u64,
    /// Spins one player may have drawn and not yet paid, on one wheel.
    pub pending_spins_max: usize,
    /// Events of the player's own stream kept durably for a client that resumes, also
    /// after the session was away (news of friends and rewards included).
    pub stream_history_len: usize,
    /// Idempotency keys kept per player (durably, for the requests that change the
    /// player's state), and for how long. Set from `limits.idempotency_keys_per_player`
    /// and `limits.idempotency_ttl_ms`.
    #[serde(skip)]
    pub keys_max: usize,
    #[serde(skip)]
    pub keys_kept_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            passivate_after_ms: 60_000,
            connections_max: 8,
            requests_queued_max: 16,
            join_wait_ms: 30_000,
            pending_spins_max: 8,
            stream_history_len: 32,
            keys_max: 256,
            keys_kept_ms: 600_000,
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
    /// An empty room with nothing left to deliver stops after this long.
    pub passivate_after_ms: u64,
    /// Events each stream keeps for clients that resume.
    pub history_len: usize,
    /// Longest chat line, in characters.
    pub chat_chars_max: usize,
    /// Chat lines and reactions per player per room: sustained rate and burst.
    pub chat_per_second: u32,
    pub chat_burst: u32,
    /// The reactions players may send.
    pub reactions: Vec<String>,
    /// Length of private room codes.
    pub private_code_len: usize,
    /// Private rooms one player may open per hour.
    pub private_creates_per_hour: u32,
    /// Private codes one player may try per hour that match no room.
    pub private_code_misses_per_hour: u32,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            wheel_players_max: 100,
            rooms_max: 10_000,
            passivate_after_ms: 60_000,
            history_len: 256,
            chat_chars_max: 200,
            chat_per_second: 2,
            chat_burst: 5,
            reactions: ["👍", "❤️", "😂", "😮", "🎉", "🔥"]
                .map(String::from)
                .to_vec(),
            private_code_len: 6,
            private_creates_per_hour: 10,
            private_code_misses_per_hour: 20,
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
    /// fdatasync sled's data file after every group flush, so that nothing is
    /// acknowledged before it would survive a power loss. Turn off only to measure
    /// what it costs.
    pub fdatasync: bool,
    /// A store write still running after this long means the disk is gone: the store
    /// fails stop (the process exits and recovers on restart) instead of hanging.
    pub write_deadline_ms: u64,
    /// Store time (every stored time) starts at the wall clock when the server starts,
    /// but never below the last time it handed out nor more than this beyond it.
    pub clock_restart_forward_max_ms: u64,
    /// Where the wall clock is ahead of store time, store time catches up by at most
    /// this many thousandths of the time that passes (a stepped clock moves it slowly).
    pub clock_slew_permille: u64,
    /// Dead letters kept for an operator; older ones are dropped.
    pub dead_letters_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            snapshot_every: 100,
            commit_batch_max: 1_024,
            commit_queue_max: 65_536,
            fdatasync: true,
            write_deadline_ms: 30_000,
            clock_restart_forward_max_ms: 3_600_000,
            clock_slew_permille: 10,
            dead_letters_max: 100_000,
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
            ("actors.timer_poll_ms", self.actors.timer_poll_ms),
            ("actors.retry_ms", self.actors.retry_ms),
            ("actors.retry_max_ms", self.actors.retry_max_ms),
            ("mail.redeliver_ms", self.mail.redeliver_ms),
            ("mail.redeliver_max_ms", self.mail.redeliver_max_ms),
            ("mail.acks_flush_ms", self.mail.acks_flush_ms),
            ("mail.marks_kept_ms", self.mail.marks_kept_ms),
            ("mail.outbox_max", self.mail.outbox_max as u64),
            (
                "actors.release_queue_max",
                self.actors.release_queue_max as u64,
            ),
            (
                "session.passivate_after_ms",
                self.session.passivate_after_ms,
            ),
            (
                "session.connections_max",
                self.session.connections_max as u64,
            ),
            (
                "session.requests_queued_max",
                self.session.requests_queued_max as u64,
            ),
            ("session.join_wait_ms", self.session.join_wait_ms),
            (
                "session.pending_spins_max",
                self.session.pending_spins_max as u64,
            ),
            (
                "session.stream_history_len",
                self.session.stream_history_len as u64,
            ),
            ("store.dead_letters_max", self.store.dead_letters_max as u64),
            (
                "rooms.wheel_players_max",
                self.rooms.wheel_players_max as u64,
            ),
            ("rooms.rooms_max", self.rooms.rooms_max as u64),
            ("store.write_deadline_ms", self.store.write_deadline_ms),
            ("rooms.passivate_after_ms", self.rooms.passivate_after_ms),
            ("rooms.history_len", self.rooms.history_len as u64),
            ("rooms.chat_chars_max", self.rooms.chat_chars_max as u64),
            (
                "rooms.chat_per_second",
                u64::from(self.rooms.chat_per_second),
            ),
            ("rooms.chat_burst", u64::from(self.rooms.chat_burst)),
            ("rooms.private_code_len", self.rooms.private_code_len as u64),
            (
                "rooms.private_creates_per_hour",
                u64::from(self.rooms.private_creates_per_hour),
            ),
            (
                "rooms.private_code_misses_per_hour",
                u64::from(self.rooms.private_code_misses_per_hour),
            ),
            ("quiz.min_players", self.quiz.min_players as u64),
            ("quiz.lobby_countdown_ms", self.quiz.lobby_countdown_ms),
            ("quiz.players_max", self.quiz.players_max as u64),
            (
                "quiz.questions_per_game",
                self.quiz.questions_per_game as u64,
            ),
            ("quiz.question_ms", self.quiz.question_ms),
            ("store.snapshot_every", self.store.snapshot_every),
            ("store.commit_batch_max", self.store.commit_batch_max as u64),
            ("store.commit_queue_max", self.store.commit_queue_max as u64),
            (
                "referral.attribution_window_ms",
                self.referral.attribution_window_ms,
            ),
            (
                "referral.tree_players_max",
                self.referral.tree_players_max as u64,
            ),
            ("referral.trees_max", self.referral.trees_max as u64),
            (
                "referral.passivate_after_ms",
                self.referral.passivate_after_ms,
            ),
            (
                "referral.partner_answers_kept_ms",
                self.referral.partner_answers_kept_ms,
            ),
            (
                "referral.partner_answers_max",
                self.referral.partner_answers_max as u64,
            ),
            ("referral.log_retention_ms", self.referral.log_retention_ms),
            (
                "referral.leaderboard_max",
                u64::from(self.referral.leaderboard_max),
            ),
            (
                "referral.claim_sources_max",
                self.referral.claim_sources_max as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        let velocity_limits = [
            (
                "referral.claims_per_referrer_per_hour",
                self.referral.claims_per_referrer_per_hour,
            ),
            (
                "referral.rewards_per_player_per_day",
                self.referral.rewards_per_player_per_day,
            ),
            (
                "referral.claims_per_address_per_hour",
                self.referral.claims_per_address_per_hour,
            ),
        ];
        for (key, limit) in velocity_limits {
            if limit as usize > crate::rate::SLIDING_EVENTS_MAX {
                return Err(invalid(
                    key,
                    format!(
                        "must be at most {} (the events a velocity limit counts exactly)",
                        crate::rate::SLIDING_EVENTS_MAX
                    ),
                ));
            }
        }
        if self.rooms.private_code_len > 16 {
            return Err(invalid("rooms.private_code_len", "must be at most 16"));
        }
        if self.quiz.min_players > self.quiz.players_max {
            return Err(invalid(
                "quiz.min_players",
                "must not exceed quiz.players_max",
            ));
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
        let mut config = valid();
        config.referral.claims_per_referrer_per_hour = crate::rate::SLIDING_EVENTS_MAX as u32;
        assert_eq!(
            config.validate(),
            Ok(()),
            "the largest limit counted exactly"
        );
        config.referral.claims_per_referrer_per_hour += 1;
        assert_eq!(
            config.validate().map_err(|e| e.key),
            Err("referral.claims_per_referrer_per_hour".into())
        );
    }
}
