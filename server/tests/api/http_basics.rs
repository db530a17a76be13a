//! Health, metrics, GraphiQL, serverInfo and malformed input on a spawned server.

use crate::helpers::{backend, spawn_app, spawn_app_with, Backend};

#[actix_web::test]
async fn health_and_ready_answer_200_on_a_fresh_server() {
    let app = spawn_app().await;
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(health.headers().contains_key("x-request-id"), "every response carries its request id");

    let ready = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    let (db, storage) = match backend() {
        Backend::Sqlite => ("sqlite", "local"),
        Backend::Postgres => ("postgres", "s3"),
    };
    assert_eq!(body["checks"]["database"]["backend"], db);
    assert_eq!(body["checks"]["storage"]["backend"], storage);
    assert_eq!(body["checks"]["redis"]["ok"].as_bool(), (backend() == Backend::Postgres).then_some(true));
}

#[actix_web::test]
async fn server_info_reports_version_and_mode() {
    let app = spawn_app().await;
    let (status, body) = app.graphql("{ serverInfo { version mode instance } }", serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    let info = &body["data"]["serverInfo"];
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let mode = if backend() == Backend::Sqlite { "EMBEDDED" } else { "DISTRIBUTED" };
    assert_eq!(info["mode"], mode);
    assert_eq!(info["instance"], app.state.instance_id.as_str());
}

#[actix_web::test]
async fn metrics_expose_http_request_counters_and_latency() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.client.get(app.url("/health")).send().await.unwrap();
    }
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("reelhouse_http_requests_total")
                && l.contains("route=\"/health\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for /health in:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(text.contains("reelhouse_http_request_duration_seconds_bucket"), "latency histogram missing");
    let rss = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap_or_else(|| panic!("no resident memory in:\n{text}"));
    assert!(rss.parse::<f64>().unwrap() > 1024.0 * 1024.0, "{rss}");
}

#[actix_web::test]
async fn graphiql_page_is_served_from_the_web_build_with_a_policy_allowing_only_this_server() {
    let build = fake_web_build();
    let dir = build.path().to_path_buf();
    let app = spawn_app_with(move |s| s.server.web_demo_dir = dir).await;
    let res = app.client.get(app.url("/graphql")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'self';") && csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self';") && csp.contains("worker-src 'self';"), "{csp}");
    assert!(!csp.contains("http") && !csp.contains("unsafe-eval"), "no other host, no eval: {csp}");
    let page = res.text().await.unwrap();
    assert!(page.contains("/assets/graphiql-3c4d.js"), "the built page: {page}");
    // Its script comes from this server.
    let res = app.client.get(app.url("/assets/graphiql-3c4d.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "console.log('graphiql')");
}

#[actix_web::test]
async fn without_a_web_build_graphiql_says_how_to_make_one() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().join("dist");
    let app = spawn_app_with(move |s| s.server.web_demo_dir = dir).await;
    let res = app.client.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    let page = res.text().await.unwrap();
    assert!(page.contains("make web-demo") && page.contains("/graphql/ws"), "{page}");
    assert!(!page.contains("<script"), "nothing to load, so nothing loads forever: {page}");
}

#[actix_web::test]
async fn web_demo_is_served_at_root() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("<title>reelhouse</title>"));
}

/// A stand-in for `make web-demo`'s output: the app's and GraphiQL's pages, each
/// with one hashed asset.
fn fake_web_build() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("assets")).unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>reelhouse</title><script type=module src=/assets/app-1a2b.js></script>",
    )
    .unwrap();
    std::fs::write(dir.path().join("assets/app-1a2b.js"), "console.log('app')").unwrap();
    std::fs::write(
        dir.path().join("graphiql.html"),
        "<!doctype html><title>reelhouse GraphiQL</title><script type=module src=/assets/graphiql-3c4d.js></script>",
    )
    .unwrap();
    std::fs::write(dir.path().join("assets/graphiql-3c4d.js"), "console.log('graphiql')").unwrap();
    dir
}

#[actix_web::test]
async fn web_demo_build_is_served_with_its_assets_and_client_routes() {
    let build = fake_web_build();
    let dir = build.path().to_path_buf();
    let app = spawn_app_with(move |s| s.server.web_demo_dir = dir).await;

    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-cache");
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.contains("worker-src 'self' blob:") && csp.contains("media-src 'self' blob:"), "{csp}");
    assert!(res.text().await.unwrap().contains("/assets/app-1a2b.js"));

    let res = app.client.get(app.url("/assets/app-1a2b.js")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(res.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(res.text().await.unwrap(), "console.log('app')");

    let res = app.client.get(app.url("/assets/missing-0000.js")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let res = app.client.get(app.url("/assets/%2e%2e/index.html")).send().await.unwrap();
    assert_eq!(res.status(), 404, "no climbing out of assets/");

    // A browser opening an app page gets the app...
    for page in ["/watch/0b5c", "/upload", "/signin"] {
        let res = app.client.get(app.url(page)).header("accept", "text/html,*/*").send().await.unwrap();
        assert_eq!(res.status(), 200, "{page}");
        assert!(res.text().await.unwrap().contains("/assets/app-1a2b.js"), "{page}");
    }
    // ...but never in place of the API's own answers, nor for API clients.
    for path in
        ["/media/00000000-0000-0000-0000-000000000000/master.m3u8", "/graphql/nope", "/uploads/nope/x", "/metrics/x"]
    {
        let res = app.client.get(app.url(path)).header("accept", "text/html").send().await.unwrap();
        assert_ne!(res.status(), 200, "{path}");
        assert!(!res.text().await.unwrap().contains("/assets/app-1a2b.js"), "{path} was shadowed by the app");
    }
    let res = app.client.get(app.url("/upload")).send().await.unwrap();
    assert_eq!(res.status(), 404, "no Accept: text/html, no app");
    let res = app.client.get(app.url("/favicon.ico")).header("accept", "text/html").send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[actix_web::test]
async fn without_a_web_build_root_says_how_to_make_one() {
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().join("dist");
    let app = spawn_app_with(move |s| s.server.web_demo_dir = dir).await;
    let res = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("make web-demo"), "{page}");
}

#[actix_web::test]
async fn malformed_graphql_never_gives_a_5xx() {
    let app = spawn_app().await;
    let bodies = [
        "{ this is not json".to_string(),
        serde_json::json!({ "query": "{ serverInfo { version " }).to_string(),
        serde_json::json!({ "query": "{ noSuchField }" }).to_string(),
        serde_json::json!({ "query": 42 }).to_string(),
        serde_json::json!({}).to_string(),
    ];
    for body in bodies {
        let res = app
            .client
            .post(app.url("/graphql"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        assert!(status < 500, "{body} gave {status}");
        if status == 200 {
            // GraphQL-over-HTTP with application/json reports document errors in the body.
            let json: serde_json::Value = res.json().await.unwrap();
            assert!(json["errors"].as_array().is_some_and(|e| !e.is_empty()), "{body} was accepted: {json}");
            assert!(json["data"].is_null(), "{json}");
        } else {
            assert_eq!(status, 400, "{body}");
        }
    }
    // The server keeps serving afterwards.
    let (status, _) = app.graphql("{ serverInfo { version } }", serde_json::json!({})).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn oversized_batches_and_deep_queries_are_refused() {
    let app = spawn_app().await;
    let batch: Vec<_> = (0..50).map(|_| serde_json::json!({ "query": "{ serverInfo { version } }" })).collect();
    let res = app.client.post(app.url("/graphql")).json(&batch).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "BAD_USER_INPUT");

    // Introspection nesting beyond its own bound is refused before execution.
    let deep = format!(
        "{{ __schema {{ types {{ {} name {} }} }} }}",
        "fields { type { ofType { ".repeat(7),
        "} } } ".repeat(7)
    );
    let (_, body) = app.graphql(&deep, serde_json::json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(message.contains("too deep"), "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    assert!(body["data"].is_null(), "nothing executed: {body}");

    // So is an ordinary query deeper than graphql.max_depth (12).
    let deep = format!("{{ me {} id {} }}", "{ videos { edges { node { owner ".repeat(3), "} } } } ".repeat(3));
    let (_, body) = app.graphql(&deep, serde_json::json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default().to_lowercase();
    assert!(message.contains("too deep"), "{body}");

    // The standard introspection query of graphql-js (GraphiQL, graphql-codegen,
    // Apollo, Altair) nests 15 levels inside __schema and is answered whole.
    let standard = include_str!("../../src/graphql/introspection_query.graphql");
    let (status, body) = app.graphql(standard, serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let types = body["data"]["__schema"]["types"].as_array().expect("types");
    assert!(types.iter().any(|t| t["name"] == "Video"), "{body}");
}

#[actix_web::test]
async fn unknown_routes_get_a_json_404_free_of_internals() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/no/such/thing")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "code": "NOT_FOUND", "message": "route not found" }));
}

#[actix_web::test]
async fn alias_and_directive_bombs_are_refused_before_execution() {
    let app = spawn_app().await;
    let aliases: String = (0..100).map(|i| format!("a{i}: serverInfo {{ version }} ")).collect();
    let (status, body) = app.graphql(&format!("{{ {aliases} }}"), serde_json::json!({})).await;
    assert!(status < 500);
    assert!(body["data"].is_null(), "nothing executed: {body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("aliases"), "{body}");

    let directives = "@skip(if: false) ".repeat(200);
    let (_, body) = app.graphql(&format!("{{ serverInfo {directives} {{ version }} }}"), serde_json::json!({})).await;
    assert!(body["data"].is_null(), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("directives"), "{body}");

    // Within the limits the same shapes work.
    let (_, body) = app
        .graphql("{ a: serverInfo { version } b: serverInfo @skip(if: true) { version } }", serde_json::json!({}))
        .await;
    assert_eq!(body["data"]["a"]["version"], env!("CARGO_PKG_VERSION"), "{body}");
}

#[actix_web::test]
async fn oversized_graphql_bodies_are_refused_with_413() {
    let app = spawn_app_with(|s| s.server.max_graphql_body_bytes = 4096).await;
    let padding = " ".repeat(8192);
    let body = format!("{{\"query\": \"{{ serverInfo {{ version }} }}{padding}\"}}");
    // Declared length over the limit.
    let res = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["code"], "PAYLOAD_TOO_LARGE");
    // Chunked, no declared length: cut off while streaming.
    let chunks: Vec<Result<String, std::io::Error>> =
        body.as_bytes().chunks(1000).map(|c| Ok(String::from_utf8_lossy(c).to_string())).collect();
    let res = app
        .client
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // Within the limit, fine.
    let (status, body) = app.graphql("{ serverInfo { version } }", serde_json::json!({})).await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn cors_allows_only_listed_origins() {
    let app = spawn_app_with(|s| s.server.cors_allowed_origins = vec!["https://player.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type, authorization")
            .send()
    };
    let allowed = preflight("https://player.example.com").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://player.example.com");
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(refused.headers().get("access-control-allow-origin").is_none());

    let res = app.client.get(app.url("/graphql")).header("Origin", "https://player.example.com").send().await.unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "https://player.example.com");
    let exposed = res.headers()["access-control-expose-headers"].to_str().unwrap().to_lowercase();
    assert!(exposed.contains("retry-after") && exposed.contains("ratelimit"), "{exposed}");
}

#[actix_web::test]
async fn tls_enforcement_redirects_or_refuses_plain_http_behind_a_proxy() {
    use reelhouse::config::TlsEnforcement;
    let redirecting = spawn_app_with(|s| {
        s.server.tls_enforcement = TlsEnforcement::Redirect;
        s.server.trusted_proxies = vec!["127.0.0.1".into()];
        s.server.public_url = Some("https://media.example.com".into());
    })
    .await;
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let res = no_redirects
        .get(redirecting.url("/graphql?x=1"))
        .header("X-Forwarded-Proto", "http")
        .header("X-Forwarded-Host", "evil.example.net")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(
        res.headers()["location"],
        "https://media.example.com/graphql?x=1",
        "our own host, not the forwarded one"
    );
    let res = no_redirects.get(redirecting.url("/graphql")).header("X-Forwarded-Proto", "https").send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["strict-transport-security"].to_str().unwrap().contains("max-age="));
    // Probes stay reachable over plain HTTP.
    assert_eq!(no_redirects.get(redirecting.url("/health")).send().await.unwrap().status(), 200);

    let refusing = spawn_app_with(|s| {
        s.server.tls_enforcement = TlsEnforcement::Refuse;
        s.server.trusted_proxies = vec!["127.0.0.2".into()];
    })
    .await;
    // 127.0.0.1 is not the trusted proxy here, so its X-Forwarded-Proto is ignored.
    let res = no_redirects.get(refusing.url("/graphql")).header("X-Forwarded-Proto", "https").send().await.unwrap();
    assert_eq!(res.status(), 403, "a client cannot claim TLS itself");
    let res = no_redirects.get(refusing.url("/graphql")).header("X-Forwarded-Proto", "http").send().await.unwrap();
    assert_eq!(res.status(), 403);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["code"], "FORBIDDEN");
}

#[actix_web::test]
async fn introspection_and_graphiql_can_be_switched_off() {
    let app = spawn_app_with(|s| {
        s.graphql.introspection = Some(false);
        s.graphql.playground = Some(false);
    })
    .await;
    let (_, body) = app.graphql("{ __schema { types { name } } }", serde_json::json!({})).await;
    // async-graphql answers introspection with null when it is disabled.
    assert!(body["data"].is_null() || body["data"]["__schema"].is_null(), "{body}");
    assert!(!body.to_string().contains("ServerInfo"), "no type names leak: {body}");
    let (_, body) = app.graphql("{ serverInf { version } }", serde_json::json!({})).await;
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("serverInfo"), "no suggestions: {message}");
    assert_eq!(app.client.get(app.url("/graphql")).send().await.unwrap().status(), 404);
}

/// A writer collecting everything logged, for the test below.
#[derive(Clone, Default)]
struct CapturedLogs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Signed URLs carry their signature in the query string: the request log (the root
/// span of every request) records the path only (issue 18).
#[actix_web::test]
async fn request_logs_leave_out_query_strings() {
    let logs = CapturedLogs::default();
    // The process's global subscriber: nextest runs each test in its own process.
    tracing_subscriber::fmt()
        .json()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_max_level(tracing::Level::INFO)
        .with_writer(logs.clone())
        .try_init()
        .expect("no other subscriber in this process");
    let app = spawn_app().await;
    for path in ["/health?signature=sekrit-sig-1234&expires=99", "/media/x/y?sig=sekrit-sig-1234"] {
        app.client.get(app.url(path)).send().await.unwrap();
    }
    let logged = crate::helpers::eventually(50, || async { logs.text().matches("\"http.target\"").count() >= 2 }).await;
    let text = logs.text();
    assert!(logged, "no request spans logged: {text}");
    assert!(text.contains("/health"), "the path is still logged: {text}");
    assert!(!text.contains("sekrit-sig-1234"), "a query string reached the logs: {text}");
}

/// `/metrics` can be given a bearer token (issue 18).
#[actix_web::test]
async fn metrics_can_require_a_bearer_token() {
    let app =
        spawn_app_with(|s| s.telemetry.metrics_token = Some(reelhouse::config::Secret::new("scrape-me-123"))).await;
    let metrics = |token: Option<&'static str>| {
        let mut request = app.client.get(app.url("/metrics"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(metrics(None).await.unwrap().status(), 401);
    assert_eq!(metrics(Some("scrape-me-12")).await.unwrap().status(), 401);
    let res = metrics(Some("scrape-me-123")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("reelhouse_"));
}

/// `/metrics` can be moved to a listener of its own, off the public one (issue 18).
#[actix_web::test]
async fn metrics_can_move_to_their_own_address() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::test_settings(data_dir.path()).await;
    settings.telemetry.metrics_bind = Some("127.0.0.1:0".into());
    let app = reelhouse::startup::Application::build(settings).await.unwrap();
    let (main, metrics) = (app.addr(), app.metrics_addr().expect("a metrics listener"));
    assert_ne!(main, metrics);
    actix_rt::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    let public = client.get(format!("http://{main}/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404, "not on the public listener");
    let private = client.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(private.status(), 200);
    assert!(private.text().await.unwrap().contains("reelhouse_"));
}

/// POST `body` to /graphql with these headers; returns status, content type and body text.
async fn post_graphql(
    app: &crate::helpers::TestApp,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, serde_json::Value) {
    let mut request = app.client.post(app.url("/graphql")).body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let res = request.send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = res.text().await.unwrap();
    (status, content_type, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

const JSON: (&str, &str) = ("content-type", "application/json");
const GQL_RESPONSE: &str = "application/graphql-response+json";

#[actix_web::test]
async fn graphql_answers_in_the_media_type_the_client_accepts() {
    let app = spawn_app().await;
    let body = serde_json::json!({ "query": "{ serverInfo { version } }" }).to_string();
    for (accept, expected) in [
        (Some("application/json"), "application/json"),
        (Some(GQL_RESPONSE), GQL_RESPONSE),
        (Some("application/graphql-response+json, application/json"), GQL_RESPONSE),
        (Some("application/graphql-response+json;q=0.5, application/json"), "application/json"),
        (Some("*/*"), "application/json"),
        (Some("application/json; charset=utf-8"), "application/json"),
        (None, "application/json"),
    ] {
        let mut headers = vec![JSON];
        if let Some(accept) = accept {
            headers.push(("accept", accept));
        }
        let (status, content_type, json) = post_graphql(&app, &headers, &body).await;
        assert_eq!(status, 200, "Accept {accept:?}: {json}");
        assert!(content_type.starts_with(expected), "Accept {accept:?} answered as {content_type}");
        assert_eq!(json["data"]["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
    }
    let (status, content_type, json) = post_graphql(&app, &[JSON, ("accept", "text/html")], &body).await;
    assert_eq!(status, 406, "{json}");
    assert!(content_type.starts_with("application/json"), "{content_type}");
    assert!(json["errors"][0]["message"].as_str().unwrap().contains("Accept"), "{json}");
}

#[actix_web::test]
async fn request_errors_are_400_without_data_under_graphql_response_json() {
    let app = spawn_app().await;
    let bodies = [
        serde_json::json!({ "query": "{ serverInfo { version " }),
        serde_json::json!({ "query": "{ noSuchField }" }),
        serde_json::json!({ "query": "query Q($id: ID!) { video(id: $id) { id } }", "variables": { "id": { "no": 1 } } }),
    ];
    for body in &bodies {
        let body = body.to_string();
        let (status, content_type, json) = post_graphql(&app, &[JSON, ("accept", GQL_RESPONSE)], &body).await;
        assert_eq!(status, 400, "{body}: {json}");
        assert!(content_type.starts_with(GQL_RESPONSE), "{content_type}");
        assert!(json.get("data").is_none(), "no data entry for a request error: {json}");
        assert!(json["errors"].as_array().is_some_and(|e| !e.is_empty()), "{json}");
        // application/json: 200 and the errors in the body, still no data entry.
        let (status, content_type, json) = post_graphql(&app, &[JSON, ("accept", "application/json")], &body).await;
        assert_eq!(status, 200, "{body}: {json}");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        assert!(json.get("data").is_none() && json["errors"][0]["message"].is_string(), "{json}");
    }
    // A field error is not a request error: 200 with data under either type.
    let body = serde_json::json!({ "query": "{ me { id } }" }).to_string();
    let (status, _, json) = post_graphql(&app, &[JSON, ("accept", GQL_RESPONSE)], &body).await;
    assert_eq!(status, 200, "{json}");
    assert!(json.get("data").is_some(), "{json}");
}

#[actix_web::test]
async fn posts_need_a_json_content_type_and_well_formed_parameters() {
    let app = spawn_app().await;
    let body = serde_json::json!({ "query": "{ serverInfo { version } }" }).to_string();
    for headers in
        [vec![], vec![("content-type", "text/plain")], vec![("content-type", "application/x-www-form-urlencoded")]]
    {
        let (status, content_type, json) = post_graphql(&app, &headers, &body).await;
        assert_eq!(status, 415, "{headers:?}: {json}");
        assert!(content_type.starts_with("application/json"), "{content_type}");
        assert!(json["errors"][0]["message"].is_string(), "{json}");
    }
    let multipart = "--X\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{\"query\":\"{ serverInfo { version } }\"}\r\n--X--\r\n";
    let (status, _, _) = post_graphql(&app, &[("content-type", "multipart/form-data; boundary=X")], multipart).await;
    assert_eq!(status, 415);
    for bad in [
        serde_json::json!({}),
        serde_json::json!({ "query": 42 }),
        serde_json::json!({ "query": "{ serverInfo { version } }", "variables": "nope" }),
        serde_json::json!({ "query": "{ serverInfo { version } }", "operationName": 1 }),
        serde_json::json!([]),
    ] {
        let (status, _, json) = post_graphql(&app, &[JSON, ("accept", GQL_RESPONSE)], &bad.to_string()).await;
        assert_eq!(status, 400, "{bad}: {json}");
        assert!(json["errors"][0]["message"].is_string(), "{json}");
    }
}

#[actix_web::test]
async fn get_runs_queries_but_never_mutations() {
    let app = spawn_app().await;
    let get = |query: &[(&str, &str)]| app.client.get(app.url("/graphql")).query(query).send();
    let res = get(&[
        ("query", "query V($x: Boolean!) { serverInfo @include(if: $x) { version } }"),
        ("variables", r#"{"x":true}"#),
    ])
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let json: serde_json::Value = res.json().await.unwrap();
    assert_eq!(json["data"]["serverInfo"]["version"], env!("CARGO_PKG_VERSION"), "{json}");

    let mutation = "mutation { logout(refreshToken: \"x\") }";
    let res = get(&[("query", mutation)]).await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    let res = app
        .client
        .get(app.url("/graphql"))
        .query(&[
            ("query", "query A { serverInfo { version } } mutation B { logout(refreshToken: \"x\") }"),
            ("operationName", "B"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405, "the selected operation is a mutation");
    let res = get(&[("query", "{ serverInfo { version } }"), ("variables", "not json")]).await.unwrap();
    assert_eq!(res.status(), 400);

    // Without a query, GET /graphql is still the GraphiQL page.
    let res = app.client.get(app.url("/graphql")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
}
