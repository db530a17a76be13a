//! HTTP routes. Each submodule owns one door into the server.

pub mod client_ip;
pub mod db_breaker;
pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod hygiene;
pub mod media;
pub mod metrics_mw;
pub mod rate_limit;
pub mod request_span;
pub mod tus;
pub mod web_demo;
pub mod worker_channel;
pub mod ws_session;

use actix_web::web;

/// Mount every route on an `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/health", web::get().to(health::health))
        .route("/ready", web::get().to(health::ready))
        .route("/metrics", web::get().to(health::metrics))
        .route("/graphql", web::post().to(graphql::graphql))
        .route("/graphql", web::get().to(graphql::graphql_get))
        .route("/graphql/ws", web::get().to(ws_session::graphql_ws))
        .route("/workers/ws", web::get().to(worker_channel::worker_socket))
        .configure(media::configure)
        .configure(web_demo::configure)
        .configure(tus::configure)
        // Unknown routes get the same JSON error shape as everything else, except
        // a browser opening one of the web app's own pages, which gets the app.
        .default_service(web::to(web_demo::app_route_or_not_found));
}
