use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use super::Metrics;

/// Readiness: the Kubernetes API answers with our credentials, and, for the leader, AWS answers
/// too. A standby replica is ready once the API answers, so rolling updates can proceed.
#[derive(Clone, Default)]
pub struct Health {
    api: Arc<AtomicBool>,
    leading: Arc<AtomicBool>,
    aws: Arc<AtomicBool>,
}

impl Health {
    pub fn set_api_reachable(&self) {
        self.api.store(true, Ordering::Release);
    }

    pub fn set_leading(&self) {
        self.leading.store(true, Ordering::Release);
    }

    pub fn set_aws_reachable(&self) {
        self.aws.store(true, Ordering::Release);
    }

    fn readiness(&self) -> Result<(), &'static str> {
        if !self.api.load(Ordering::Acquire) {
            Err("Kubernetes API not reachable yet")
        } else if self.leading.load(Ordering::Acquire) && !self.aws.load(Ordering::Acquire) {
            Err("leading, but AWS not reachable yet")
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until the task is dropped.
/// Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    health: Health,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready_handler))
        .with_state(AppState { metrics, health });
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((bound, task))
}

async fn metrics_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.metrics.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "metrics encoding failed".to_owned(),
        ),
    }
}

async fn ready_handler(State(state): State<AppState>) -> impl IntoResponse {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
