//! The `database` breaker in front of every door besides `/graphql` (which checks it
//! per request itself) that reads the database to answer a caller: tus
//! (`/uploads`), `/media`, `/storage` and the WebSocket upgrades (`/graphql/ws`,
//! `/workers/ws`). While the breaker is open they answer 503 `UNAVAILABLE` with
//! `Retry-After` at once instead of each waiting for the pool's timeout (and never
//! a verdict about the caller: 401, 404 or 500). A request that meets an outage
//! counts one failure against the breaker.
//!
//! WebSockets live past their upgrade: `connection_init` and the worker's `hello`
//! check the breaker again (`ws_session`, `worker_channel`).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

fn guarded(path: &str) -> bool {
    matches!(path, "/uploads" | "/graphql/ws" | "/workers/ws")
        || ["/uploads/", "/media/", "/storage/"].iter().any(|prefix| path.starts_with(prefix))
}

/// The answer while the `database` breaker is open.
pub fn open_error(retry_after_secs: u64) -> AppError {
    AppError::new(ErrorCode::Unavailable, "the database is unavailable, try again later")
        .with_retry_after(retry_after_secs)
}

pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(state), true) = (state, guarded(req.path())) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    let permit = match state.breakers.database.try_acquire() {
        Ok(permit) => permit,
        Err(rejected) => {
            let error = open_error(rejected.retry_after_secs());
            return Ok(req.into_response(error.to_http_response()));
        }
    };
    let (result, outage) = crate::breaker::observe_database(next.call(req)).await;
    if let Some(category) = outage {
        permit.failure(category);
    }
    Ok(result?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_the_doors_that_read_the_database() {
        for path in [
            "/uploads",
            "/uploads/",
            "/uploads/abc",
            "/media/v/hls/master.m3u8",
            "/storage/a/b",
            "/graphql/ws",
            "/workers/ws",
        ] {
            assert!(guarded(path), "{path}");
        }
        for path in ["/graphql", "/health", "/ready", "/metrics", "/", "/mediafoo"] {
            assert!(!guarded(path), "{path}");
        }
    }
}
