//! The `api` rate-limit policy for every HTTP request, keyed by client address
//! (IPv6: its /64),
//! with the `RateLimit-Policy`/`RateLimit` headers on every answer and 429 +
//! `Retry-After` when the bucket is empty. Health, readiness and metrics are exempt
//! so orchestrators never see a throttled probe.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web;

use crate::limits::buckets::Decision;
use crate::limits::{ip_subject, Policy};
use crate::state::AppState;

const EXEMPT: &[&str] = &["/health", "/ready", "/metrics"];

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn add_headers(headers: &mut actix_web::http::header::HeaderMap, decision: &Decision) {
    if let Ok(value) = HeaderValue::from_str(&decision.policy_header()) {
        headers.insert(RATELIMIT_POLICY.clone(), value);
    }
    if let Ok(value) = HeaderValue::from_str(&decision.limit_header()) {
        headers.insert(RATELIMIT.clone(), value);
    }
}

pub async fn limit_api(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let (Some(state), false) = (state, EXEMPT.contains(&req.path())) else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // X-Forwarded-For only from a trusted proxy: otherwise it is the client's to forge.
    let subject =
        ip_subject(&crate::http::client_ip::client_addr(req.peer_addr(), req.headers(), &state.trusted_proxies));
    match state.limiter.check(Policy::Api, subject, 1).await {
        Some(decision) if !decision.allowed => {
            metrics::counter!("reelhouse_rate_limited_total", "policy" => Policy::Api.as_str()).increment(1);
            let mut response = decision.clone().into_error().to_http_response();
            add_headers(response.headers_mut(), &decision);
            Ok(req.into_response(response))
        }
        decision => {
            let mut res = next.call(req).await?.map_into_boxed_body();
            if let Some(decision) = decision {
                add_headers(res.headers_mut(), &decision);
            }
            Ok(res)
        }
    }
}
