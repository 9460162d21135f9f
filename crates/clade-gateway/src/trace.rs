//! One span per request carrying method, path, tenant and agent, so every log line written
//! while serving it says whose it was.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub(crate) async fn request_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        tenant = tracing::field::Empty,
        agent = tracing::field::Empty,
    );
    async move {
        #[allow(clippy::disallowed_methods)] // Latency measurement, not wall-clock time.
        let started = Instant::now();
        let response = next.run(request).await;
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
        response
    }
    .instrument(span)
    .await
}
