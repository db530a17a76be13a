//! `POST /graphql`, the GraphiQL page at `GET /graphql`, and subscriptions over
//! WebSocket at `GET /graphql/ws` (`graphql-transport-ws` and `graphql-ws`).

use actix_web::{web, HttpRequest, HttpResponse};
use async_graphql::http::GraphiQLSource;
use async_graphql_actix_web::{GraphQLBatchRequest, GraphQLResponse, GraphQLSubscription};

use crate::error::{AppError, ErrorCode};
use crate::graphql::AppSchema;
use crate::startup::AppState;

#[tracing::instrument(skip_all)]
pub async fn graphql(
    state: web::Data<AppState>,
    schema: web::Data<AppSchema>,
    request: GraphQLBatchRequest,
) -> Result<GraphQLResponse, AppError> {
    let batch = request.into_inner();
    if let async_graphql::BatchRequest::Batch(items) = &batch {
        let max = state.settings.graphql.max_batch_size;
        if items.len() > max {
            return Err(AppError::new(ErrorCode::BadUserInput, format!("a batch may hold at most {max} operations")));
        }
    }
    Ok(schema.execute_batch(batch).await.into())
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
