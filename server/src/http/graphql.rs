//! GraphQL over HTTP at `/graphql` (POST with a JSON body; GET for queries, in the
//! URL), and the GraphiQL page at `GET /graphql` without a query (`graphiql.rs`). Content
//! negotiation and status codes follow the GraphQL-over-HTTP spec (checked by the
//! `graphql-http` audit, scripts/test-graphql-http.sh). (Subscriptions are served by
//! the WebSocket `Session` actor in `ws_session.rs`.)

use actix_web::http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures::StreamExt;

use crate::auth::principal::{authenticate, ClientInfo, RequestAuth};
use crate::error::{AppError, ErrorCode};
use crate::graphql::AppSchema;
use crate::state::AppState;

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

/// The two media types of GraphQL over HTTP.
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const APPLICATION_JSON: &str = "application/json";

/// What the response is written as, from the request's `Accept` (GraphQL over HTTP):
/// `application/graphql-response+json` when the client accepts it (preferred on a tie),
/// `application/json` when that (or `*/*`, `application/*`, or no `Accept` at all) is
/// what it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    GraphqlResponseJson,
    Json,
}

impl Media {
    fn content_type(self) -> &'static str {
        match self {
            Media::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            Media::Json => "application/json; charset=utf-8",
        }
    }

    /// `None` when the client accepts neither (406).
    pub fn negotiate(accept: Option<&str>) -> Option<Media> {
        let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else { return Some(Media::Json) };
        let mut best: Option<(f32, u8, Media)> = None;
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .and_then(|(_, v)| v.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            // Rank breaks ties: the exact new type, then application/json, then wildcards.
            let (rank, media) = match essence.as_str() {
                GRAPHQL_RESPONSE_JSON => (3, Media::GraphqlResponseJson),
                APPLICATION_JSON => (2, Media::Json),
                "application/*" | "*/*" => (1, Media::Json),
                _ => continue,
            };
            if q <= 0.0 {
                continue;
            }
            if best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank > br)) {
                best = Some((q, rank, media));
            }
        }
        best.map(|(_, _, media)| media)
    }
}

/// A refusal of the HTTP request itself (before any GraphQL runs), as a GraphQL
/// response with one error: 400 malformed parameters, 405 a mutation over GET,
/// 406 nothing acceptable, 415 a body that is not JSON.
fn refuse(status: StatusCode, media: Media, message: impl Into<String>) -> HttpResponse {
    let body = serde_json::json!({
        "errors": [{ "message": message.into(), "extensions": { "code": ErrorCode::BadUserInput.as_str() } }]
    });
    let mut response = HttpResponse::build(status);
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response.insert_header((ALLOW, "POST"));
    }
    response.content_type(media.content_type()).body(body.to_string())
}

/// Check the shape of a GraphQL-over-HTTP request object: `query` a string,
/// `operationName` a string or null, `variables` and `extensions` maps or null.
/// `query` may be left out when `extensions.persistedQuery` names the document
/// (`graphql::persisted_queries`).
fn check_params(value: &serde_json::Value) -> Result<(), String> {
    let Some(object) = value.as_object() else { return Err("a GraphQL request is a JSON object".into()) };
    let persisted = object.get("extensions").and_then(|e| e.get("persistedQuery")).is_some();
    match object.get("query") {
        Some(serde_json::Value::String(_)) => {}
        Some(_) => return Err("`query` must be a string".into()),
        None if persisted => {}
        None => return Err("the `query` parameter is missing".into()),
    }
    if !object.get("operationName").is_none_or(|v| v.is_null() || v.is_string()) {
        return Err("`operationName` must be a string".into());
    }
    for key in ["variables", "extensions"] {
        if !object.get(key).is_none_or(|v| v.is_null() || v.is_object()) {
            return Err(format!("`{key}` must be a map"));
        }
    }
    Ok(())
}

/// `query`, `operationName`, `variables` and `extensions` of a GET, the last two as
/// JSON text; `None` when the query string names none of them (the GraphiQL page).
fn get_params(query_string: &str) -> Option<Result<serde_json::Value, String>> {
    let pairs = web::Query::<Vec<(String, String)>>::from_query(query_string).ok()?.into_inner();
    const NAMES: [&str; 4] = ["query", "operationName", "variables", "extensions"];
    if !pairs.iter().any(|(k, _)| NAMES.contains(&k.as_str())) {
        return None;
    }
    let mut object = serde_json::Map::new();
    for (key, value) in pairs {
        match key.as_str() {
            "query" | "operationName" => {
                object.insert(key, serde_json::Value::String(value));
            }
            "variables" | "extensions" => match serde_json::from_str::<serde_json::Value>(&value) {
                Ok(parsed) => {
                    object.insert(key, parsed);
                }
                Err(_) => return Some(Err(format!("`{key}` must be URL-encoded JSON"))),
            },
            _ => {}
        }
    }
    let value = serde_json::Value::Object(object);
    Some(check_params(&value).map(|()| value))
}

/// Is the operation a GET would run a mutation or a subscription? (Those go over
/// POST or the WebSocket: a GET must be safe.) A document that does not parse is
/// left to the executor, which reports it.
fn get_must_not_run(query: &str, operation_name: Option<&str>) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType};
    let Ok(document) = async_graphql::parser::parse_query(query) else { return false };
    let ty = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => {
            ops.iter().find(|(n, _)| n.as_str() == name).map(|(_, op)| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    };
    ty.is_some_and(|ty| ty != OperationType::Query)
}

/// `GET /graphql`: a query in the URL (GraphQL over HTTP), or else the GraphiQL page.
#[tracing::instrument(skip_all)]
pub async fn graphql_get(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
    req: HttpRequest,
) -> Result<HttpResponse, AppError> {
    let Some(params) = get_params(req.query_string()) else { return crate::http::graphiql::page(state).await };
    let Some(media) = Media::negotiate(header_str(&req, ACCEPT)) else {
        return Ok(refuse(StatusCode::NOT_ACCEPTABLE, Media::Json, NOT_ACCEPTABLE_MESSAGE));
    };
    let params = match params {
        Ok(params) => params,
        Err(message) => return Ok(refuse(StatusCode::BAD_REQUEST, media, message)),
    };
    let query = params["query"].as_str().unwrap_or_default();
    if get_must_not_run(query, params["operationName"].as_str()) {
        return Ok(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            "only queries may be sent with GET; send mutations with POST and subscriptions over /graphql/ws",
        ));
    }
    let request = match serde_json::from_value::<async_graphql::Request>(params) {
        // A persisted document is not in the URL: its operation type is checked
        // once it is known (`graphql::persisted_queries`).
        Ok(request) => request.data(crate::graphql::persisted_queries::OverGet),
        Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, media, format!("invalid GraphQL request: {e}"))),
    };
    Ok(execute(&state, &schema, &req, media, async_graphql::BatchRequest::Single(request)).await)
}

const NOT_ACCEPTABLE_MESSAGE: &str =
    "this endpoint answers application/graphql-response+json or application/json; the Accept header allows neither";

fn header_str(req: &HttpRequest, name: actix_web::http::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `POST /graphql` with a JSON body (GraphQL over HTTP). Credentials are checked once
/// per HTTP request; invalid ones do not fail the request but make guarded fields
/// answer `UNAUTHENTICATED`. Credentials the database cannot check right now fail
/// the whole request with `UNAVAILABLE` (503, `Retry-After`).
#[tracing::instrument(skip_all)]
pub async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, AppError> {
    let Some(media) = Media::negotiate(header_str(&req, ACCEPT)) else {
        return Ok(refuse(StatusCode::NOT_ACCEPTABLE, Media::Json, NOT_ACCEPTABLE_MESSAGE));
    };
    // Only JSON bodies: no content type, another one (form posts, multipart file
    // uploads, which this API takes through presigned URLs and tus) is 415.
    let content_type = header_str(&req, CONTENT_TYPE).unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case(APPLICATION_JSON) {
        let message = if essence.is_empty() {
            "a POST to /graphql needs `Content-Type: application/json`".to_string()
        } else {
            format!("unsupported content type `{essence}`: send application/json")
        };
        return Ok(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, media, message));
    }
    let body = read_limited(&req, payload, state.settings.server.max_graphql_body_bytes).await?;
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, media, format!("the body is not JSON: {e}"))),
    };
    let checked = match &value {
        serde_json::Value::Array(items) if items.is_empty() => Err("an empty batch".to_string()),
        serde_json::Value::Array(items) => items.iter().try_for_each(check_params),
        single => check_params(single),
    };
    if let Err(message) = checked {
        return Ok(refuse(StatusCode::BAD_REQUEST, media, message));
    }
    let batch: async_graphql::BatchRequest = match serde_json::from_value(value) {
        Ok(batch) => batch,
        Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, media, format!("invalid GraphQL request: {e}"))),
    };
    if let async_graphql::BatchRequest::Batch(items) = &batch {
        let max = state.settings.graphql.max_batch_size;
        if items.len() > max {
            return Err(AppError::new(ErrorCode::BadUserInput, format!("a batch may hold at most {max} operations")));
        }
    }
    Ok(execute(&state, &schema, &req, media, batch).await)
}

/// Run a batch and write its answer as `media`. A single operation that failed as a
/// request (the document does not parse or validate, its variables do not coerce:
/// no data, no error with a path) answers 400 without a `data` entry under
/// `application/graphql-response+json` and 200 under `application/json`; `UNAVAILABLE`
/// answers 503 with `Retry-After`.
async fn execute(
    state: &AppState,
    schema: &AppSchema,
    req: &HttpRequest,
    media: Media,
    batch: async_graphql::BatchRequest,
) -> HttpResponse {
    // The `database` breaker: while it is open every operation answers
    // `UNAVAILABLE` with `Retry-After` at once instead of each waiting for the
    // pool's timeout. A request that meets an outage counts as one failure; the
    // statements that succeed close a half-open breaker (`startup`).
    let status_only = is_status_only(&batch);
    let permit = match state.breakers.database.try_acquire() {
        Ok(permit) => Some(permit),
        // `systemStatus` answers from this process's memory when the database is
        // down: operators must see which dependency is failing.
        Err(_) if status_only => None,
        Err(rejected) => {
            let error = AppError::new(ErrorCode::Unavailable, "the database is unavailable, try again later")
                .with_retry_after(rejected.retry_after_secs())
                .to_graphql();
            let response = async_graphql::Response::from_errors(vec![error.into_server_error(Default::default())]);
            return respond(media, async_graphql::BatchResponse::Single(response));
        }
    };
    let (response, outage) =
        crate::breaker::observe_database(execute_observed(state, schema, req, batch, status_only)).await;
    if let (Some(category), Some(permit)) = (outage, permit) {
        permit.failure(category);
    }
    respond(media, response)
}

/// A single query whose every root field is `systemStatus` (or `__typename`).
fn is_status_only(batch: &async_graphql::BatchRequest) -> bool {
    use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
    let async_graphql::BatchRequest::Single(request) = batch else { return false };
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else { return false };
    let operations: Vec<_> = match &document.operations {
        DocumentOperations::Single(operation) => vec![operation],
        DocumentOperations::Multiple(operations) => operations.values().collect(),
    };
    !operations.is_empty()
        && operations.iter().all(|operation| {
            operation.node.ty == OperationType::Query
                && operation.node.selection_set.node.items.iter().all(|item| match &item.node {
                    Selection::Field(field) => {
                        matches!(field.node.name.node.as_str(), "systemStatus" | "__typename")
                    }
                    _ => false,
                })
        })
}

async fn execute_observed(
    state: &AppState,
    schema: &AppSchema,
    req: &HttpRequest,
    batch: async_graphql::BatchRequest,
    status_only: bool,
) -> async_graphql::BatchResponse {
    let mut auth = authenticate(state, req.headers()).await;
    if matches!(auth, RequestAuth::Unavailable) && status_only {
        // The database cannot say whether the session still stands; the token's
        // signed claims may still let an admin read `systemStatus` (its resolver
        // asks for nothing the database must answer).
        if let Some(principal) = crate::auth::principal::principal_from_claims(state, req.headers()) {
            auth = RequestAuth::Authenticated(principal);
        }
    }
    if matches!(auth, RequestAuth::Unavailable) {
        // Credentials that cannot be checked are neither the caller's nor anonymous:
        // running the operation as either would answer for someone we do not know.
        let error = crate::auth::principal::auth_unavailable().to_graphql();
        let response = async_graphql::Response::from_errors(vec![error.into_server_error(Default::default())]);
        return async_graphql::BatchResponse::Single(response);
    }
    let client = ClientInfo {
        // X-Forwarded-For counts only from a trusted proxy: rate limits and session
        // records must not be steerable by a header the client writes.
        ip: Some(crate::http::client_ip::client_addr(req.peer_addr(), req.headers(), &state.trusted_proxies)),
        user_agent: header_str(req, USER_AGENT).map(str::to_string),
        request_id: request_id(req),
    };
    schema.execute_batch(batch.data(auth).data(client)).await
}

/// The HTTP response for a GraphQL answer: 503 with `Retry-After` when it is an
/// `UNAVAILABLE` with no data (see [`unavailable_retry_after`]).
fn respond(media: Media, response: async_graphql::BatchResponse) -> HttpResponse {
    let retry_after = unavailable_retry_after(&response);
    let request_error = is_request_error(&response);
    let mut status = StatusCode::OK;
    if retry_after.is_some() {
        status = ErrorCode::Unavailable.http_status();
    } else if request_error && media == Media::GraphqlResponseJson {
        status = StatusCode::BAD_REQUEST;
    }
    let body = match serde_json::to_value(&response) {
        Ok(mut body) => {
            if request_error {
                // A request error executed nothing: no `data` entry at all.
                if let Some(object) = body.as_object_mut() {
                    object.remove("data");
                }
            }
            body.to_string()
        }
        Err(e) => return AppError::internal(e).error_response(),
    };
    let mut http = HttpResponse::build(status);
    if response.is_ok() {
        if let Some(value) = response.cache_control().value() {
            http.insert_header((CACHE_CONTROL, value));
        }
    }
    if let Some(secs) = retry_after {
        http.insert_header((RETRY_AFTER, secs.to_string()));
    }
    for (name, value) in response.http_headers_iter() {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()) {
            http.append_header((name.as_str(), value));
        }
    }
    http.content_type(media.content_type()).body(body)
}

/// A single operation that failed before executing: no data, and every error is
/// about the request (none has a path into the data).
fn is_request_error(response: &async_graphql::BatchResponse) -> bool {
    let async_graphql::BatchResponse::Single(response) = response else { return false };
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn single(query: &str) -> async_graphql::BatchRequest {
        async_graphql::BatchRequest::Single(async_graphql::Request::new(query))
    }

    #[test]
    fn only_a_query_of_system_status_passes_an_open_database_breaker() {
        for query in [
            "{ systemStatus { queue { queued asOf } } }",
            "query Ops { __typename systemStatus { dependencies { name state } } }",
        ] {
            assert!(is_status_only(&single(query)), "{query}");
        }
        for query in [
            "{ me { id } }",
            "{ systemStatus { queue { queued } } me { id } }",
            "mutation { systemStatus }",
            "subscription { systemStatus }",
            "{ ...F } fragment F on Query { me { id } }",
            "{ ... on Query { me { id } } }",
            "not graphql",
        ] {
            assert!(!is_status_only(&single(query)), "{query}");
        }
        let batch =
            async_graphql::BatchRequest::Batch(vec![async_graphql::Request::new("{ systemStatus { workersAsOf } }")]);
        assert!(!is_status_only(&batch));
    }
}
