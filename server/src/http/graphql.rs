//! `POST /graphql` and the GraphiQL page at `GET /graphql`. (Subscriptions are
//! served by the WebSocket `Session` actor in `ws_session.rs`.)

use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use actix_web::{web, HttpRequest, HttpResponse, Responder};
use async_graphql::http::{GraphiQLSource, MultipartOptions};
use async_graphql_actix_web::GraphQLResponse;
use futures::StreamExt;

use crate::auth::principal::{authenticate, ClientInfo, RequestAuth};
use crate::error::{AppError, ErrorCode};
use crate::graphql::AppSchema;
use crate::startup::AppState;

/// Read the body, refusing it with `PAYLOAD_TOO_LARGE` as soon as it passes `max`
/// bytes: a stranger cannot make the server buffer more than that.
async fn read_limited(req: &HttpRequest, mut payload: web::Payload, max: usize) -> Result<web::Bytes, AppError> {
    let too_large =
        || AppError::new(ErrorCode::PayloadTooLarge, format!("the request body may be at most {max} bytes"));
    let declared =
        req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(max));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| AppError::bad_input("the request body could not be read").with_source(e))?;
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Credentials are checked once per HTTP request; invalid ones do not fail the
/// request but make guarded fields answer `UNAUTHENTICATED`. Credentials the
/// database cannot check right now fail the whole request with `UNAVAILABLE`
/// (503, `Retry-After`).
#[tracing::instrument(skip_all)]
pub async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let body = read_limited(&req, payload, state.settings.server.max_graphql_body_bytes).await?;
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    // Multipart (file upload) requests are not part of this API: uploads go through
    // presigned URLs and tus, so a multipart body cannot smuggle files in here.
    let options = MultipartOptions::default().max_num_files(0).max_file_size(0);
    let batch = async_graphql::http::receive_batch_body(content_type, body.as_ref(), options)
        .await
        .map_err(|e| AppError::bad_input(format!("invalid GraphQL request: {e}")))?;
    if let async_graphql::BatchRequest::Batch(items) = &batch {
        let max = state.settings.graphql.max_batch_size;
        if items.len() > max {
            return Err(AppError::new(ErrorCode::BadUserInput, format!("a batch may hold at most {max} operations")));
        }
    }
    let auth = authenticate(&state, req.headers()).await;
    if matches!(auth, RequestAuth::Unavailable) {
        // Credentials that cannot be checked are neither the caller's nor anonymous:
        // running the operation as either would answer for someone we do not know.
        let error = crate::auth::principal::auth_unavailable().to_graphql();
        let response = async_graphql::Response::from_errors(vec![error.into_server_error(Default::default())]);
        return Ok(respond(&req, async_graphql::BatchResponse::Single(response)));
    }
    let client = ClientInfo {
        // X-Forwarded-For counts only from a trusted proxy: rate limits and session
        // records must not be steerable by a header the client writes.
        ip: Some(state.client_ip(req.peer_addr(), req.headers())),
        user_agent: req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
        request_id: request_id(&req),
    };
    let response = schema.execute_batch(batch.data(auth).data(client)).await;
    Ok(respond(&req, response))
}

/// The HTTP response for a GraphQL answer: 503 with `Retry-After` when it is an
/// `UNAVAILABLE` with no data (see [`unavailable_retry_after`]).
fn respond(req: &HttpRequest, response: async_graphql::BatchResponse) -> HttpResponse {
    let retry_after = unavailable_retry_after(&response);
    let mut http = GraphQLResponse::from(response).respond_to(req);
    if let Some(secs) = retry_after {
        *http.status_mut() = ErrorCode::Unavailable.http_status();
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(&secs.to_string()) {
            http.headers_mut().insert(actix_web::http::header::RETRY_AFTER, value);
        }
    }
    http
}

/// One operation that produced no data because the server could not serve it
/// now (code `UNAVAILABLE`: a dependency down, the password-hashing slots full)
/// answers 503 with `Retry-After`, so plain HTTP clients and proxies back off too.
fn unavailable_retry_after(response: &async_graphql::BatchResponse) -> Option<u64> {
    let async_graphql::BatchResponse::Single(response) = response else { return None };
    if response.data != async_graphql::Value::Null {
        return None;
    }
    let extensions = response.errors.first()?.extensions.as_ref()?;
    if extensions.get("code")? != &async_graphql::Value::from(ErrorCode::Unavailable.as_str()) {
        return None;
    }
    let secs = match extensions.get("retryAfter") {
        Some(async_graphql::Value::Number(n)) => n.as_u64().unwrap_or(1),
        _ => 1,
    };
    Some(secs.max(1))
}

/// The id tracing-actix-web gave this request (also sent back as `x-request-id`).
pub fn request_id(req: &HttpRequest) -> Option<String> {
    use actix_web::HttpMessage as _;
    req.extensions().get::<tracing_actix_web::RequestId>().map(ToString::to_string)
}

pub async fn graphiql(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if !state.settings.graphql.playground_enabled() {
        return Err(AppError::not_found("page"));
    }
    let page = GraphiQLSource::build()
        .endpoint("/graphql")
        .subscription_endpoint("/graphql/ws")
        .title("reelhouse GraphiQL")
        .finish();
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page))
}
