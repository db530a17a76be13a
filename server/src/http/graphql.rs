//! `POST /graphql`, the GraphiQL page at `GET /graphql`, and subscriptions over
//! WebSocket at `GET /graphql/ws` (`graphql-transport-ws` and `graphql-ws`).

use actix_web::http::header::USER_AGENT;
use actix_web::{web, HttpRequest, HttpResponse};
use async_graphql::http::GraphiQLSource;
use async_graphql_actix_web::{GraphQLBatchRequest, GraphQLResponse, GraphQLSubscription};

use crate::auth::principal::{authenticate, ClientInfo};
use crate::error::{AppError, ErrorCode};
use crate::graphql::AppSchema;
use crate::startup::AppState;

/// Credentials are checked once per HTTP request; invalid ones do not fail the
/// request but make guarded fields answer `UNAUTHENTICATED`.
#[tracing::instrument(skip_all)]
pub async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
    req: HttpRequest,
    request: GraphQLBatchRequest,
) -> Result<GraphQLResponse, AppError> {
    let batch = request.into_inner();
    if let async_graphql::BatchRequest::Batch(items) = &batch {
        let max = state.settings.graphql.max_batch_size;
        if items.len() > max {
            return Err(AppError::new(ErrorCode::BadUserInput, format!("a batch may hold at most {max} operations")));
        }
    }
    let auth = authenticate(&state, req.headers()).await;
    let client = ClientInfo {
        ip: req.connection_info().realip_remote_addr().map(str::to_string),
        user_agent: req.headers().get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_string),
    };
    Ok(schema.execute_batch(batch.data(auth).data(client)).await.into())
}

pub async fn graphiql(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if !state.settings.graphql.playground {
        return Err(AppError::not_found("page"));
    }
    let page = GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").title("reelhouse GraphiQL").finish();
    Ok(HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page))
}

pub async fn graphql_ws(
    schema: web::Data<AppSchema>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    GraphQLSubscription::new(schema.get_ref().clone()).start(&req, payload)
}
