//! `GET /`: the web demo (a placeholder page until the browser app lands).

use actix_web::HttpResponse;

const INDEX_HTML: &str = include_str!("../../../web-demo/index.html");

pub async fn index() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(INDEX_HTML)
}
