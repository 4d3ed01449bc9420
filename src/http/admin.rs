//! The admin listener every process serves on `admin.bind`, apart from the public API: `GET /metrics`
//! (the Prometheus text format), `/healthz` (the process is alive) and `/readyz` (its dependencies and
//! stages, as the API's `/readyz` answers). Not authenticated: bind it to a private address.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::{healthz, readiness_response};
use crate::readiness::Readiness;

/// The content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
struct AdminState {
    handle: PrometheusHandle,
    readiness: Readiness,
}

/// Binds `address` for the admin listener; the error names `admin.bind`.
pub async fn bind(address: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|error| anyhow::anyhow!("admin.bind: cannot listen on {address}: {error}"))
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    handle: PrometheusHandle,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState { handle, readiness });
    axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// `GET /metrics` on its own, for the public API port (`admin.public_metrics`).
pub(crate) fn metrics_route<S: Clone + Send + Sync + 'static>(handle: PrometheusHandle) -> Router<S> {
    Router::new().route("/metrics", get(move || std::future::ready(render(&handle))))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    render(&state.handle)
}

fn render(handle: &PrometheusHandle) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, TEXT_FORMAT)], handle.render()).into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    readiness_response(&state.readiness.check().await)
}
