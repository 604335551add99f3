//! The `playtree` binary: `serve` runs the server, `token` mints development tokens,
//! `config check` validates and prints the effective configuration.

use anyhow::Context;
use clap::{Parser, Subcommand};
use playtree::auth::Authenticator;
use playtree::config::ServerConfig;
use playtree_protocol::Role;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "playtree",
    version,
    about = "Real-time game and referral server"
)]
struct Cli {
    /// Config file overriding the embedded defaults (environment PLAYTREE_* overrides both).
    #[arg(long, global = true, env = "PLAYTREE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve,
    /// Mint a token signed with the configured (or development) HS256 secret.
    Token {
        /// The player id (`sub` claim).
        #[arg(long)]
        player: String,
        /// player, partner or admin.
        #[arg(long, default_value = "player", value_parser = parse_role)]
        role: Role,
        /// Lifetime in seconds (default: auth.dev_token_lifetime_s).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// The configuration: the embedded defaults, then --config, then the environment.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it as the server would use it (secrets
    /// redacted). Exits non-zero, naming the key and where it was set, when it is wrong.
    Check,
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "player" => Ok(Role::Player),
        "partner" => Ok(Role::Partner),
        "admin" => Ok(Role::Admin),
        other => Err(format!(
            "unknown role `{other}`: use player, partner or admin"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = ServerConfig::load(cli.config.as_deref()).context("loading the configuration")?;
    match cli.command {
        Command::Serve => serve(config),
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let text = config
                .to_redacted_toml()
                .context("printing the configuration")?;
            print!("{text}");
            eprintln!("playtree: the configuration is valid");
            Ok(())
        }
        Command::Token { player, role, ttl } => {
            let auth = Authenticator::from_config(&config.auth, &config.server.data_dir)?;
            let ttl = ttl.unwrap_or(config.auth.dev_token_lifetime_s);
            let token = auth
                .mint(&player, role, playtree::clock::now_s(), ttl)
                .context("minting needs an HS256 secret; this server is configured to verify EdDSA tokens only")?;
            println!("{token}");
            Ok(())
        }
    }
}

fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        // Listening for SIGTERM before recovery: as PID 1 in a container, a signal that
        // has no handler is ignored, and a stop during a long recovery would wait for
        // the kill.
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("listening for SIGTERM")?;
        let server = tokio::select! {
            started = playtree::start(config, playtree::Environment::default()) => {
                started.context("starting the server")?
            }
            _ = terminate.recv() => {
                tracing::info!("SIGTERM during start-up; exiting");
                return Ok(());
            }
        };
        // One machine-readable line on stdout (tests and scripts read it), then help.
        println!("playtree listening ws={} admin={}", server.ws_addr, server.admin_addr);
        eprintln!(
            "\n  Game clients connect to ws://{ws}\n  Mint a development token: cargo run --release -- token --player alice\n  Metrics: curl http://{admin}/metrics\n",
            ws = server.ws_addr,
            admin = server.admin_addr
        );
        let store = server.hub.store.clone();
        tokio::select! {
            () = wait_for_signal(&mut terminate) => {}
            failure = store.failed() => {
                // Fail-stop: a commit whose outcome is unknown was answered to nobody as
                // done; the journal is the truth, and a restart recovers from it. No
                // graceful shutdown: it would try to write to the failed store.
                tracing::error!(error = %failure, "the store failed; exiting so that recovery replays the journal");
                eprintln!("playtree: the store failed ({failure}); exiting");
                std::process::exit(STORE_FAILED_EXIT_CODE);
            }
        }
        server.shutdown().await;
        Ok(())
    })
}

/// The exit status after a failed commit (EX_IOERR from sysexits.h): a supervisor such
/// as Kubernetes restarts the process, which recovers from the journal.
const STORE_FAILED_EXIT_CODE: i32 = 74;

async fn wait_for_signal(terminate: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
