//! HTTP routes. Each submodule owns one door into the server.

pub mod client_ip;
pub mod graphql;
pub mod health;
pub mod hygiene;
pub mod media;
pub mod metrics_mw;
pub mod rate_limit;
pub mod tus;
pub mod web_demo;
pub mod ws_session;

use actix_web::web;

/// Mount every route on an `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route("/graphql", web::post().to(graphql::graphql))
        .route("/graphql", web::get().to(graphql::graphiql))
        .route("/graphql/ws", web::get().to(ws_session::graphql_ws))
        .configure(media::configure)
        .route("/", web::get().to(web_demo::index))
        .configure(tus::configure)
        .default_service(web::to(not_found));
}

/// Unknown routes get the same JSON error shape as everything else.
async fn not_found() -> actix_web::HttpResponse {
    crate::error::AppError::not_found("route").to_http_response()
}
