//! The root span of every HTTP request (the access log line), without the query string.
//!
//! Signed media and upload URLs carry their signature in the query string, and a
//! log file is read by more people than the URL was meant for. tracing-actix-web's
//! default root span records `http.target` as path *and* query; this one records
//! the path only (the route template is in `http.route`). Everything else matches
//! the default span, so log queries keep working. An incoming `traceparent` header
//! makes the span a child of the caller's (W3C trace context).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::field::Empty;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

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
        let traceparent = request.headers().get("traceparent").and_then(|h| h.to_str().ok());
        crate::telemetry::traces::set_parent(&span, traceparent);
        if let Some(trace_id) = crate::telemetry::traces::trace_id(&span) {
            span.record("trace_id", trace_id);
        }
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
