//! The root span of every HTTP request (the access log line), without the query string.
//!
//! Signed media and upload URLs carry their signature in the query string, and a
//! log file is read by more people than the URL was meant for. tracing-actix-web's
//! default root span records `http.target` as path *and* query; this one records
//! the path only (the route template is in `http.route`). Everything else matches
//! the default span, so log queries keep working.
//!
//! An incoming `traceparent` header (W3C Trace Context) makes the span a child of
//! the caller's only when the caller is trusted: its TCP peer address is one of
//! `server.trusted_trace_sources`, or it presents a valid access token. Anyone else
//! would choose the trace id (and, through the sampled flag, the sampling) of work
//! they do not own, so their request starts a new trace, with the caller's span
//! context kept as a link.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::{web, Error, HttpMessage};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

use crate::state::AppState;

pub struct PathOnlyRootSpan;

impl RootSpanBuilder for PathOnlyRootSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let user_agent = request.headers().get("User-Agent").and_then(|h| h.to_str().ok()).unwrap_or("");
        let route = request.match_pattern().unwrap_or_else(|| "default".into());
        let method = request.method().as_str().to_owned();
        let connection = request.connection_info().clone();
        let request_id = request.extensions().get::<RequestId>().map(ToString::to_string).unwrap_or_default();
        let span = tracing::info_span!(
            "HTTP request",
            http.method = %method,
            http.route = %route,
            http.flavor = ?request.version(),
            http.scheme = %connection.scheme(),
            http.host = %connection.host(),
            http.client_ip = %connection.realip_remote_addr().unwrap_or(""),
            http.user_agent = %user_agent,
            http.target = %request.path(),
            http.status_code = Empty,
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            otel.status_code = Empty,
            trace_id = Empty,
            request_id = %request_id,
            exception.message = Empty,
            exception.details = Empty,
        );
        // A caller's W3C trace context makes this request a child of its span; the
        // trace id then goes into every log line of the request too.
        if let Some(traceparent) = request.headers().get("traceparent").and_then(|h| h.to_str().ok()) {
            if trace_context_trusted(request) {
                crate::telemetry::traces::set_parent(&span, Some(traceparent));
            } else {
                crate::telemetry::traces::add_link(&span, traceparent);
            }
        }
        if let Some(trace_id) = crate::telemetry::traces::trace_id(&span) {
            span.record("trace_id", trace_id);
        }
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// May this request's `traceparent` be continued? Its TCP peer (never a forwarded
/// address: a proxy passes its client's headers on) is one of
/// `server.trusted_trace_sources`, or it carries an access token that verifies
/// (signature and expiry, no database: revocation is checked where the request is
/// served). API keys are not looked up here, so they do not count.
fn trace_context_trusted(request: &ServiceRequest) -> bool {
    let Some(state) = request.app_data::<web::Data<AppState>>() else { return false };
    if crate::http::client_ip::is_trusted(request.peer_addr(), &state.trusted_trace_sources) {
        return true;
    }
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .is_some_and(|token| state.tokens.verify_access_token(token.trim()).is_ok())
}
