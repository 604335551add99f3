//! Admin HTTP: `/metrics` (Prometheus text), `/healthz` (the store's commit thread can
//! write) and `/readyz` (it accepts players: turns 503 first thing on shutdown).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use playtree_actors::Hub;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. `None` when another
/// recorder was installed first (e.g. by an embedding program).
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                announce_alerted_series();
                Some(handle)
            }
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                None
            }
        })
        .clone()
}

/// Series that alerts watch exist from the start, at 0: an alert on the rate of
/// something that has not happened yet still has a series to read, and the dashboard
/// shows 0 rather than "no data".
fn announce_alerted_series() {
    metrics::counter!("playtree_slow_consumer_disconnects_total").increment(0);
    metrics::counter!("playtree_write_timeouts_total").increment(0);
    metrics::counter!("playtree_store_commit_failures_total").increment(0);
    for kind in ["session", "room", "tree"] {
        metrics::counter!("playtree_actor_restarts_total", "kind" => kind).increment(0);
        metrics::counter!("playtree_actor_given_up_total", "kind" => kind).increment(0);
    }
    for reason in [
        "malformed",
        "bad_signature",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "lifetime_too_long",
        "missing_claim",
        "expired_live",
    ] {
        metrics::counter!("playtree_auth_failures_total", "reason" => reason).increment(0);
    }
}

#[derive(Clone, Debug)]
struct AdminState {
    hub: Hub,
    /// Cleared as the first step of a shutdown.
    ready: Arc<AtomicBool>,
    metrics: Option<PrometheusHandle>,
}

pub fn router(hub: Hub, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(health))
        .route("/readyz", get(readiness))
        .with_state(AdminState {
            hub,
            ready,
            metrics: prometheus(),
        })
}

async fn metrics_text(State(state): State<AdminState>) -> (StatusCode, String) {
    match &state.metrics {
        Some(handle) => (StatusCode::OK, handle.render()),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n".into(),
        ),
    }
}

/// Healthy while the store's commit thread can still write: after a failed commit the
/// process is stopping (fail-stop) and must be restarted.
async fn health(State(state): State<AdminState>) -> (StatusCode, String) {
    match state.hub.store.failure() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}

async fn readiness(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if !state.ready.load(Ordering::Acquire) || state.hub.is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
