//! The HTTP endpoints for the kubelet and Prometheus: `/healthz`, `/readyz`, `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// What the endpoints report.
#[derive(Clone)]
pub struct Health {
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Set once the operator is connected to the API server and its controllers (or its standby
    /// loop) run.
    pub ready: Arc<AtomicBool>,
    /// With the managed identity endpoint: set once it knows every ComputeIdentity that opted in
    /// (before that it would refuse valid secrets).
    pub endpoint: Option<Arc<AtomicBool>>,
}

/// Binds `addr` and serves until `shutdown` completes. Returns the bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    health: Health,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    bind_and_serve(addr, app, "health server", shutdown).await
}

/// Binds `addr` and serves `app` on a task until `shutdown` completes; requests in flight then
/// finish. Returns the bound address (port 0 picks one) and the task.
pub async fn bind_and_serve(
    addr: SocketAddr,
    app: Router,
    name: &'static str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, server = name, "server failed");
        }
    });
    Ok((bound, task))
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    let endpoint = h
        .endpoint
        .as_ref()
        .is_none_or(|e| e.load(Ordering::Relaxed));
    if h.ready.load(Ordering::Relaxed) && endpoint {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.metrics.encode(),
    )
}
