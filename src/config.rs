//! Server configuration: the embedded `config/playtree.toml`, then an optional file, then
//! `PLAYTREE_<SECTION>__<KEY>` environment variables. Errors name the bad key.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use playtree_actors::GameConfig;
use playtree_actors::config::{
    ActorsConfig, ConfigError, MailConfig, QuizConfig, ReferralConfig, RoomsConfig, SessionConfig,
    StoreConfig, WheelConfig,
};
use playtree_protocol::limits::FRAME_BYTES_HARD_MAX;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const EMBEDDED_CONFIG: &str = include_str!("../config/playtree.toml");

/// The config as the file spells it. The game sections are plain fields (not a flattened
/// `GameConfig`) so that a bad value's error names its full key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    server: ListenConfig,
    limits: LimitsConfig,
    auth: AuthConfig,
    fanout: FanoutConfig,
    actors: ActorsConfig,
    mail: MailConfig,
    session: SessionConfig,
    rooms: RoomsConfig,
    store: StoreConfig,
    quiz: QuizConfig,
    referral: ReferralConfig,
    wheels: Vec<WheelConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub server: ListenConfig,
    pub limits: LimitsConfig,
    pub fanout: FanoutConfig,
    pub auth: AuthConfig,
    pub game: GameConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FanoutConfig {
    pub write_delay_ms: u64,
    pub write_batch_frames_max: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub shutdown_grace_ms: u64,
    pub unready_delay_ms: u64,
    /// Proxies (addresses or networks) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub connections_max: usize,
    pub frame_bytes_max: usize,
    pub hello_timeout_ms: u64,
    pub outbound_frames_max: usize,
    pub outbound_bytes_max: usize,
    pub socket_send_buffer_bytes: usize,
    pub requests_in_flight_max: usize,
    pub heartbeat_interval_ms: u64,
    pub silent_heartbeats_max: u32,
    pub close_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub read_buffer_bytes: usize,
    pub idempotency_keys_max: usize,
    pub idempotency_keys_per_player: usize,
    pub idempotency_ttl_ms: u64,
    pub write_buffer_bytes: usize,
    pub frames_per_second: u32,
    pub frames_burst: u32,
    pub rate_limit_strikes_max: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub hs256_secret: String,
    pub eddsa_public_key_pem: String,
    pub issuer: String,
    pub audience: String,
    pub max_lifetime_s: u64,
    pub dev_token_lifetime_s: u64,
    pub leeway_s: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("invalid config: {0}")]
    Figment(String),
    /// A value of the right type that cannot work, with where it came from.
    #[error("{error} (set in {source_name})")]
    Value {
        error: ConfigError,
        source_name: String,
    },
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

/// Where a value came from, as a person reads it: the file's path, the environment, or
/// the embedded defaults.
fn describe_source(metadata: &figment::Metadata) -> String {
    match &metadata.source {
        Some(figment::Source::File(path)) => format!("the file {}", path.display()),
        _ if metadata.name.contains("environment") => {
            "the environment (PLAYTREE_<SECTION>__<KEY>)".to_owned()
        }
        _ if metadata.name.contains("TOML source string") => {
            "the embedded defaults or a TOML override".to_owned()
        }
        _ => metadata.name.to_string(),
    }
}

/// The configuration in the environment: `PLAYTREE_<SECTION>__<KEY>` only. Other
/// `PLAYTREE_*` variables (a wrapper's `PLAYTREE_BIN`, a test's knobs) are not
/// configuration and are left alone.
fn environment() -> Env {
    Env::prefixed("PLAYTREE_")
        .filter(|key| key.as_str().contains("__"))
        .split("__")
}

impl ServerConfig {
    /// Embedded defaults, overridden by `file` (if given), then by the environment.
    pub fn load(file: Option<&Path>) -> Result<ServerConfig, LoadError> {
        let mut figment = Figment::from(Toml::string(EMBEDDED_CONFIG));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(LoadError::File {
                    path: path.to_owned(),
                    reason: "no such file".into(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(environment());
        Self::extract(figment)
    }

    /// Embedded defaults overridden by a TOML string (for tests and tools).
    ///
    /// (The environment is not read here.)
    pub fn from_toml_overrides(overrides: &str) -> Result<ServerConfig, LoadError> {
        Self::extract(Figment::from(Toml::string(EMBEDDED_CONFIG)).merge(Toml::string(overrides)))
    }

    fn extract(figment: Figment) -> Result<ServerConfig, LoadError> {
        let file: ConfigFile = figment.extract().map_err(|error| {
            let key = error.path.join(".");
            LoadError::Figment(if key.is_empty() {
                error.to_string()
            } else {
                format!("`{key}`: {error}")
            })
        })?;
        let (keys_max, keys_kept_ms) = (
            file.limits.idempotency_keys_per_player,
            file.limits.idempotency_ttl_ms,
        );
        let config = ServerConfig {
            server: file.server,
            limits: file.limits,
            fanout: file.fanout,
            auth: file.auth,
            game: GameConfig {
                actors: file.actors,
                mail: file.mail,
                session: SessionConfig {
                    // The session keeps the keys of state-changing requests durably,
                    // held to the same limits as the connections' own keys.
                    keys_max,
                    keys_kept_ms,
                    ..file.session
                },
                rooms: file.rooms,
                store: file.store,
                wheels: file.wheels,
                quiz: file.quiz,
                referral: file.referral,
            },
        };
        config.validate().map_err(|error| {
            // The section (and, for lists, the list) is where the value was given.
            let key = error.key.split('[').next().unwrap_or(&error.key).to_owned();
            let source_name = figment
                .find_metadata(&key)
                .map_or_else(|| "the embedded defaults".to_owned(), describe_source);
            LoadError::Value { error, source_name }
        })?;
        Ok(config)
    }

    /// The effective configuration as TOML, with secrets replaced by `<redacted>`.
    pub fn to_redacted_toml(&self) -> Result<String, toml::ser::Error> {
        let mut file = ConfigFile {
            server: self.server.clone(),
            limits: self.limits.clone(),
            auth: self.auth.clone(),
            fanout: self.fanout.clone(),
            actors: self.game.actors.clone(),
            mail: self.game.mail.clone(),
            session: self.game.session.clone(),
            rooms: self.game.rooms.clone(),
            store: self.game.store.clone(),
            quiz: self.game.quiz.clone(),
            referral: self.game.referral.clone(),
            wheels: self.game.wheels.clone(),
        };
        if !file.auth.hs256_secret.is_empty() {
            file.auth.hs256_secret = "<redacted>".into();
        }
        toml::to_string(&file)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError {
            key: key.into(),
            reason: reason.into(),
        };
        let limits = &self.limits;
        if limits.frame_bytes_max == 0 || limits.frame_bytes_max > FRAME_BYTES_HARD_MAX {
            return Err(invalid(
                "limits.frame_bytes_max",
                "must be between 1 and 1048576",
            ));
        }
        for (key, value) in [
            ("limits.connections_max", limits.connections_max as u64),
            ("limits.hello_timeout_ms", limits.hello_timeout_ms),
            (
                "limits.outbound_frames_max",
                limits.outbound_frames_max as u64,
            ),
            (
                "limits.requests_in_flight_max",
                limits.requests_in_flight_max as u64,
            ),
            ("limits.heartbeat_interval_ms", limits.heartbeat_interval_ms),
            (
                "limits.silent_heartbeats_max",
                u64::from(limits.silent_heartbeats_max),
            ),
            ("limits.close_timeout_ms", limits.close_timeout_ms),
            ("limits.write_timeout_ms", limits.write_timeout_ms),
            ("limits.read_buffer_bytes", limits.read_buffer_bytes as u64),
            (
                "limits.idempotency_keys_max",
                limits.idempotency_keys_max as u64,
            ),
            ("limits.idempotency_ttl_ms", limits.idempotency_ttl_ms),
            (
                "limits.idempotency_keys_per_player",
                limits.idempotency_keys_per_player as u64,
            ),
            ("auth.max_lifetime_s", self.auth.max_lifetime_s),
            ("auth.dev_token_lifetime_s", self.auth.dev_token_lifetime_s),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if let Err(reason) = crate::proxies::TrustedProxies::parse(&self.server.trusted_proxies) {
            return Err(invalid("server.trusted_proxies", &reason));
        }
        if self.fanout.write_delay_ms >= limits.write_timeout_ms {
            return Err(invalid(
                "fanout.write_delay_ms",
                "must be below limits.write_timeout_ms (every write would time out)",
            ));
        }
        if limits.outbound_frames_max < self.game.rooms.history_len {
            return Err(invalid(
                "limits.outbound_frames_max",
                "must be at least rooms.history_len, so that a full replay fits in the queue",
            ));
        }
        if self.auth.dev_token_lifetime_s > self.auth.max_lifetime_s {
            return Err(invalid(
                "auth.dev_token_lifetime_s",
                "must not exceed auth.max_lifetime_s",
            ));
        }
        self.game.validate()
    }

    pub fn store_dir(&self) -> PathBuf {
        self.server.data_dir.join("store")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_config_is_valid() {
        let config = ServerConfig::from_toml_overrides("").expect("embedded config loads");
        assert_eq!(config.game.wheels[0].id, "classic");
    }

    #[test]
    fn errors_name_the_bad_key() {
        let error = ServerConfig::from_toml_overrides("[limits]\nframe_bytes_max = 0")
            .expect_err("zero frame size is refused");
        assert!(
            error.to_string().contains("limits.frame_bytes_max"),
            "{error}"
        );
        let error = ServerConfig::from_toml_overrides("[limits]\nframe_bytes_maxx = 1")
            .expect_err("typo is refused");
        assert!(error.to_string().contains("frame_bytes_maxx"), "{error}");
        let error =
            ServerConfig::from_toml_overrides("[limitz]\nx = 1").expect_err("unknown section");
        assert!(error.to_string().contains("limitz"), "{error}");
        let error = ServerConfig::from_toml_overrides("[session]\npassivate_after_ms = \"soon\"")
            .expect_err("wrong type");
        assert!(error.to_string().contains("passivate_after_ms"), "{error}");
    }
}
