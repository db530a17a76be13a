//! HTTP hygiene: CORS from the allow-list, and TLS enforcement behind a proxy.

use actix_cors::Cors;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue, LOCATION};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use crate::config::{ServerSettings, TlsEnforcement};
use crate::error::{AppError, ErrorCode};
use crate::state::AppState;

/// Probes come from inside the cluster over plain HTTP; they stay reachable.
const PLAIN_HTTP_OK: &[&str] = &["/health", "/ready", "/metrics"];

/// CORS for browsers on other origins: only those listed may call, with the
/// headers players and upload clients need exposed.
pub fn cors(settings: &ServerSettings) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allow_any_header()
        .expose_headers([
            "ratelimit",
            "ratelimit-policy",
            "retry-after",
            "x-request-id",
            "content-range",
            "etag",
            "location",
            "upload-offset",
            "upload-length",
            "upload-expires",
            "upload-metadata",
            "upload-concat",
            "upload-defer-length",
            "tus-version",
            "tus-resumable",
            "tus-extension",
            "tus-max-size",
            "tus-checksum-algorithm",
        ])
        .max_age(3600);
    for origin in &settings.cors_allowed_origins {
        cors = if origin == "*" { cors.allow_any_origin() } else { cors.allowed_origin(origin.trim_end_matches('/')) };
    }
    cors
}

static HSTS: HeaderName = HeaderName::from_static("strict-transport-security");

/// With `server.tls_enforcement` on, a request that reached the proxy over plain
/// HTTP (per `X-Forwarded-Proto`/`Forwarded`) is redirected to https or refused,
/// and https answers carry `Strict-Transport-Security`.
pub async fn enforce_tls(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let mode =
        req.app_data::<web::Data<AppState>>().map(|s| s.settings.server.tls_enforcement).unwrap_or(TlsEnforcement::Off);
    if mode == TlsEnforcement::Off || PLAIN_HTTP_OK.contains(&req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    // Only a trusted proxy may say the client used TLS; anyone else is what the
    // socket says (plain HTTP: reelhouse does not terminate TLS itself).
    let scheme = if crate::http::client_ip::is_trusted(req.peer_addr(), &state.trusted_proxies) {
        req.connection_info().scheme().to_string()
    } else {
        "http".to_string()
    };
    if scheme == "https" {
        let mut res = next.call(req).await?.map_into_boxed_body();
        res.headers_mut().insert(HSTS.clone(), HeaderValue::from_static("max-age=31536000; includeSubDomains"));
        return Ok(res);
    }
    let response = match mode {
        TlsEnforcement::Redirect => {
            // Redirect to our own public host, never to a host the request names.
            let host = url::Url::parse(&state.public_url).ok().and_then(|u| u.host_str().map(str::to_string));
            let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let target = format!("https://{}{path}", host.unwrap_or_else(|| "localhost".into()));
            match HeaderValue::from_str(&target) {
                Ok(location) => HttpResponse::PermanentRedirect().insert_header((LOCATION, location)).finish(),
                Err(_) => AppError::bad_input("bad host").to_http_response(),
            }
        }
        _ => AppError::new(ErrorCode::Forbidden, "HTTPS is required").to_http_response(),
    };
    Ok(req.into_response(response))
}
