//! The GraphiQL page at `GET /graphql` (without a query), when
//! `graphql.playground` is on.
//!
//! The page is the web build's second entry, `graphiql.html` (web-demo/graphiql.html
//! and web-demo/src/graphiql/, built by `make web-demo` with the app): React,
//! GraphiQL with the explorer plugin, Monaco and its workers are all files of the
//! build, served from `/assets/…` like the app's. Nothing comes from a CDN, so the
//! explorer works on a machine without internet access, and the page's
//! Content-Security-Policy allows this server only. Without a build, the page says
//! how to make one instead of loading forever.

use actix_web::{web, HttpResponse};

use crate::error::AppError;
use crate::http::web_demo::{build_dir_with, html_response};
use crate::state::AppState;

/// The built page's file name in `server.web_demo_dir`.
const PAGE: &str = "graphiql.html";

/// What the GraphiQL page may load: its own scripts, styles, fonts and workers
/// from this server, and requests to this server only (`connect-src 'self'`
/// covers the same-origin `ws:`/`wss:` of `/graphql/ws`).
///
/// Two allowances, both for the editor rather than for anything remote:
/// - `style-src 'unsafe-inline'`: Monaco (GraphiQL's editor) adds `<style>`
///   elements and `style` attributes as it renders (token colours, bracket
///   colours, indent guides); without it Chromium blocks hundreds of them and
///   the editors lose their highlighting. A nonce would not cover attributes.
///   Scripts stay `'self'` only: no inline script, no `eval`.
/// - `data:` fonts and images: GraphiQL's stylesheet carries its fonts and icons
///   inline as `data:` URLs.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; font-src 'self' data:; img-src 'self' data:; \
    connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The missing build's page: inline style only, nothing else.
const MISSING_BUILD_CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const MISSING_BUILD_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>reelhouse GraphiQL</title>
  <style>
    body { font-family: system-ui, sans-serif; max-width: 44rem; margin: 4rem auto; padding: 0 1rem; color: #1d1d1f; }
    code, pre { background: #f2f2f5; padding: .1rem .3rem; border-radius: 4px; }
    pre { padding: .6rem .8rem; overflow-x: auto; }
  </style>
</head>
<body>
  <main>
    <h1>GraphiQL is not built</h1>
    <p>This server serves GraphiQL itself (no CDN), from the web build, which is not
      there yet. Build it with <code>make web-demo</code> (or
      <code>web-demo/build.sh</code>; Node.js 22 or later is installed for it when missing), then reload this page.
      <code>make run</code> does this for you.</p>
    <p>The API works meanwhile, for instance:</p>
    <pre>curl -s -H 'Content-Type: application/json' \
  -d '{"query":"{ serverInfo { version } }"}' http://&lt;this server&gt;/graphql</pre>
    <p>Subscriptions are served over WebSocket at <code>/graphql/ws</code>
      (<code>graphql-transport-ws</code>).</p>
  </main>
</body>
</html>
"#;

/// `GET /graphql` without a query.
pub async fn page(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    if !state.settings.graphql.playground_enabled() {
        return Err(AppError::not_found("page"));
    }
    let Some(dir) = build_dir_with(&state.settings, PAGE) else {
        return Ok(missing_build());
    };
    match tokio::fs::read_to_string(dir.join(PAGE)).await {
        Ok(page) => Ok(html_response(page, Some(CONTENT_SECURITY_POLICY.to_string()))),
        Err(err) => {
            tracing::warn!(error = %err, dir = %dir.display(), "graphiql.html unreadable");
            Ok(missing_build())
        }
    }
}

fn missing_build() -> HttpResponse {
    html_response(MISSING_BUILD_HTML.to_string(), Some(MISSING_BUILD_CSP.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_no_other_host() {
        for directive in CONTENT_SECURITY_POLICY.split(';') {
            for source in directive.split_whitespace().skip(1) {
                assert!(
                    ["'self'", "'none'", "'unsafe-inline'", "data:"].contains(&source),
                    "{directive} allows {source}"
                );
            }
        }
        assert!(CONTENT_SECURITY_POLICY.contains("script-src 'self';"));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-eval"));
    }
}
