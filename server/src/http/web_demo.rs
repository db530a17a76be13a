//! `GET /`: the web demo, a single-page app built by `make web-demo` into
//! `server.web_demo_dir` (default `web-demo/dist`).
//!
//! - `/` and the app's own paths (`/upload`, `/watch/…`: any GET that asks for
//!   HTML outside the API's prefixes) answer `index.html`, never cached;
//! - `/assets/…` are Vite's content-hashed files, cached as immutable (the
//!   GraphiQL page's too: it is the build's second page, served at `GET /graphql`
//!   by `graphiql.rs`);
//! - without a build, `/` answers a page that says how to make one.
//!
//! The files are read from disk on each request (they are small), so rebuilding
//! the app needs no server restart.

use std::path::{Path, PathBuf};

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};

use crate::config::Settings;
use crate::error::AppError;
use crate::state::AppState;

/// Paths the app never claims: API doors keep their own 404s.
const RESERVED_PREFIXES: &[&str] =
    &["/graphql", "/uploads", "/media", "/storage", "/health", "/ready", "/metrics", "/assets"];

const MISSING_BUILD_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>reelhouse</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 4rem auto; padding: 0 1rem; color: #1d1d1f; }
    code { background: #f2f2f5; padding: .1rem .3rem; border-radius: 4px; }
  </style>
</head>
<body>
  <main>
    <h1>reelhouse</h1>
    <p>The server is running, but the web app has not been built.</p>
    <p>Build it with <code>make web-demo</code> (Node.js 22 or later is installed for it when missing), then reload
      this page. <code>make run</code> does this for you.</p>
    <p>The API is ready meanwhile: explore it in <a href="/graphql">GraphiQL</a>.</p>
  </main>
</body>
</html>
"#;

/// Mount `/` and `/assets/…`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").route(web::get().to(index)).route(web::head().to(index)))
        .service(web::resource("/assets/{file:.*}").route(web::get().to(asset)).route(web::head().to(asset)));
}

/// The built app's directory, if it has an `index.html`.
fn app_dir(settings: &Settings) -> Option<PathBuf> {
    build_dir_with(settings, "index.html")
}

/// The web build's directory, if it has `page` (`index.html`, `graphiql.html`).
///
/// A relative `server.web_demo_dir` is looked up from the working directory,
/// then from the checkout the binary was built in, so `cargo run` works from
/// any directory of the repository.
pub(crate) fn build_dir_with(settings: &Settings, page: &str) -> Option<PathBuf> {
    let configured = &settings.server.web_demo_dir;
    let mut candidates = vec![configured.clone()];
    if configured.is_relative() {
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(configured));
    }
    candidates.into_iter().find(|dir| dir.join(page).is_file())
}

fn settings(req: &HttpRequest) -> Option<web::Data<AppState>> {
    req.app_data::<web::Data<AppState>>().cloned()
}

/// `GET /` (and every app route): the app's `index.html`, or how to build it.
pub async fn index(req: HttpRequest) -> HttpResponse {
    let dir = settings(&req).and_then(|state| app_dir(&state.settings).map(|dir| (dir, state)));
    let Some((dir, state)) = dir else {
        return html_response(MISSING_BUILD_HTML.to_string(), None);
    };
    match tokio::fs::read_to_string(dir.join("index.html")).await {
        Ok(page) => html_response(page, Some(content_security_policy(&state.settings))),
        Err(err) => {
            tracing::warn!(error = %err, dir = %dir.display(), "web demo index.html unreadable");
            html_response(MISSING_BUILD_HTML.to_string(), None)
        }
    }
}

pub(crate) fn html_response(page: String, csp: Option<String>) -> HttpResponse {
    let mut res = HttpResponse::Ok();
    res.content_type("text/html; charset=utf-8").insert_header((header::CACHE_CONTROL, "no-cache"));
    if let Some(csp) = csp.and_then(|v| HeaderValue::from_str(&v).ok()) {
        res.insert_header((header::CONTENT_SECURITY_POLICY, csp));
    }
    res.body(page)
}

/// What the app may load: its own origin, plus blob: for hls.js (MediaSource and
/// its worker), and the storage origin when media answers redirect there.
fn content_security_policy(settings: &Settings) -> String {
    let origin = |url: &str| url::Url::parse(url).ok().map(|u| format!(" {}", u.origin().ascii_serialization()));
    let mut storage = String::new();
    if settings.media.redirect_to_storage {
        storage = settings.storage.s3.endpoint.as_deref().and_then(origin).unwrap_or_else(|| " https:".to_string());
        // Public media may redirect to the CDN instead.
        if let Some(cdn) = settings.media.cdn_base_url.as_deref().and_then(origin) {
            storage.push_str(&cdn);
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:{storage}; \
         media-src 'self' blob:{storage}; connect-src 'self'{storage}; worker-src 'self' blob:; \
         object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// `GET /assets/{file}`: a content-hashed build output, cacheable forever.
pub async fn asset(req: HttpRequest) -> HttpResponse {
    let not_found = || AppError::not_found("asset").to_http_response();
    let file = req.match_info().query("file");
    if !is_safe_relative(file) {
        return not_found();
    }
    let Some(dir) = settings(&req).and_then(|state| app_dir(&state.settings)) else {
        return not_found();
    };
    match tokio::fs::read(dir.join("assets").join(file)).await {
        Ok(bytes) => HttpResponse::Ok()
            .content_type(content_type(file))
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .body(bytes),
        Err(_) => not_found(),
    }
}

/// A path below the assets directory: no `..`, no absolute or empty parts.
fn is_safe_relative(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".." && !seg.contains(['\\', '\0']))
}

fn content_type(file: &str) -> &'static str {
    match file.rsplit_once('.').map(|(_, ext)| ext.to_ascii_lowercase()).as_deref() {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("wasm") => "application/wasm",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Does this request name a page of the app (a client-side route)?
fn is_app_route(req: &HttpRequest) -> bool {
    let path = req.path();
    let method_ok = req.method() == Method::GET || req.method() == Method::HEAD;
    let reserved = RESERVED_PREFIXES.iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
    // `/favicon.ico` and the like are files, not pages.
    let looks_like_file = path.rsplit('/').next().is_some_and(|last| last.contains('.'));
    let wants_html = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    method_ok && !reserved && !looks_like_file && wants_html
}

/// Unmatched requests: a browser opening an app route gets the app; everything
/// else the JSON 404 every other door answers.
pub async fn app_route_or_not_found(req: HttpRequest) -> HttpResponse {
    if is_app_route(&req) {
        return index(req).await;
    }
    AppError::not_found("route").to_http_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asset_paths_cannot_climb_out() {
        assert!(is_safe_relative("index-abc123.js"));
        assert!(is_safe_relative("fonts/a.woff2"));
        for bad in ["", "../secret.key", "a/../../b", "/etc/passwd", "a//b", "./x", "a\\..\\b"] {
            assert!(!is_safe_relative(bad), "{bad:?}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type("index-x.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("index-x.CSS"), "text/css; charset=utf-8");
        assert_eq!(content_type("blob"), "application/octet-stream");
    }

    #[test]
    fn csp_adds_the_storage_origin_only_when_media_redirects_there() {
        let mut settings = Settings::default();
        let csp = content_security_policy(&settings);
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        assert!(csp.contains("media-src 'self' blob:;"), "{csp}");
        settings.media.redirect_to_storage = true;
        settings.storage.s3.endpoint = Some("http://127.0.0.1:9000/".into());
        let csp = content_security_policy(&settings);
        assert!(csp.contains("connect-src 'self' http://127.0.0.1:9000;"), "{csp}");
        settings.media.cdn_base_url = Some("https://cdn.example.com/vod/".into());
        let csp = content_security_policy(&settings);
        assert!(csp.contains("media-src 'self' blob: http://127.0.0.1:9000 https://cdn.example.com;"), "{csp}");
    }
}
