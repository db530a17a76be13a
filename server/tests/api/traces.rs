//! OpenTelemetry traces end to end, against a real OTLP/HTTP receiver run by the test:
//! one upload is one trace, from the request that completes it (continuing the
//! client's `traceparent`) through the job attempt and its pipeline stages (in a
//! separate `reelhouse worker` process on PostgreSQL) to the webhook delivery, whose
//! request carries the same trace to the receiver. Spans are decoded from the
//! protobuf bodies the exporter sends, with the OpenTelemetry project's own message
//! definitions (opentelemetry-proto).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;
use serde_json::{json, Value};

use crate::helpers::{
    backend, create_postgres_database, random_secret, reelhouse_command, service_env, Backend, ServerProcess,
    TEST_PASSWORD,
};
use crate::uploads::small_clip;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    role: String,
    attributes: HashMap<String, String>,
    /// (trace id, span id) of each span link.
    links: Vec<(String, String)>,
}

/// What a webhook delivery brought: its `traceparent` header and its body.
type Hook = (Option<String>, Value);

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    /// The `traceparent` header of each webhook delivery, and its body.
    hooks: Arc<Mutex<Vec<Hook>>>,
}

fn text(attributes: &[KeyValue]) -> HashMap<String, String> {
    attributes
        .iter()
        .filter_map(|kv| {
            let value = match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(s) => s.clone(),
                AnyValue::IntValue(i) => i.to_string(),
                AnyValue::BoolValue(b) => b.to_string(),
                AnyValue::DoubleValue(d) => d.to_string(),
                _ => return None,
            };
            Some((kv.key.clone(), value))
        })
        .collect()
}

async fn traces(collector: web::Data<Collector>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().finish();
    };
    let mut spans = collector.spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = text(&resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        assert_eq!(resource.get("service.name").map(String::as_str), Some("reelhouse"), "{resource:?}");
        let role = resource.get("reelhouse.role").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(Received {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name,
                    role: role.clone(),
                    attributes: text(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|link| (hex::encode(&link.trace_id), hex::encode(&link.span_id)))
                        .collect(),
                });
            }
        }
    }
    HttpResponse::Ok().content_type("application/x-protobuf").finish()
}

async fn hook(collector: web::Data<Collector>, request: HttpRequest, body: web::Bytes) -> HttpResponse {
    let traceparent = request.headers().get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    collector.hooks.lock().unwrap().push((traceparent, body));
    HttpResponse::NoContent().finish()
}

/// The OTLP receiver and webhook target, on one port.
fn start_collector() -> (String, Collector) {
    let collector = Collector::default();
    let data = web::Data::new(collector.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .route("/v1/traces", web::post().to(traces))
            .route("/hook", web::post().to(hook))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let port = server.addrs()[0].port();
    actix_rt::spawn(server.run());
    (format!("http://127.0.0.1:{port}"), collector)
}

/// What every reelhouse process of this test gets: traces exported to the receiver
/// quickly, webhooks to a loopback target allowed, fast encodes.
fn apply_common_env(cmd: &mut tokio::process::Command, collector: &str) {
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_SDK_DISABLED")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env("REELHOUSE__WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")
        .env("REELHOUSE__WEBHOOKS__POLL_INTERVAL_MS", "50")
        .env("REELHOUSE__MEDIA__SPEED_PRESET", "ultrafast")
        .env("REELHOUSE__MEDIA__SEGMENT_SECONDS", "1")
        .env("REELHOUSE__JOBS__POLL_INTERVAL_MS", "100")
        // The test signs up and uploads at once; verification is tested in accounts_mail.
        .env("REELHOUSE__AUTH__UNVERIFIED_CAN_UPLOAD", "true");
}

/// The API process (and, on PostgreSQL, a separate worker process sharing its
/// database and storage).
struct Deployment {
    api: ServerProcess,
    worker: Option<tokio::process::Child>,
    client: reqwest::Client,
    dir: tempfile::TempDir,
}

impl Deployment {
    async fn start(collector: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut api = reelhouse_command();
        api.arg("--data-dir").arg(dir.path().join("api"));
        apply_common_env(&mut api, collector);
        if backend() == Backend::Postgres {
            let shared: Vec<(String, String)> = vec![
                ("DATABASE_URL".into(), create_postgres_database().await),
                ("S3_ENDPOINT".into(), service_env("REELHOUSE_TEST_S3_ENDPOINT")),
                ("S3_BUCKET".into(), service_env("REELHOUSE_TEST_S3_BUCKET")),
                ("S3_REGION".into(), service_env("REELHOUSE_TEST_S3_REGION")),
                ("S3_ACCESS_KEY_ID".into(), service_env("REELHOUSE_TEST_S3_ACCESS_KEY_ID")),
                ("S3_SECRET_ACCESS_KEY".into(), service_env("REELHOUSE_TEST_S3_SECRET_ACCESS_KEY")),
                ("REELHOUSE__STORAGE__S3__KEY_PREFIX".into(), format!("tr{}/", &random_secret()[..10])),
                ("REELHOUSE__AUTH__JWT_SECRET".into(), random_secret()),
            ];
            api.envs(shared.iter().cloned()).env("REELHOUSE__WORKERS__EMBEDDED", "false");
            // The API must be up (and have migrated) before the worker starts.
            let server = ServerProcess::serve(api).await;
            let mut cmd = reelhouse_command();
            cmd.arg("worker").arg("--data-dir").arg(dir.path().join("worker"));
            cmd.envs(shared).env("REELHOUSE__WORKERS__HEARTBEAT_SECS", "1");
            apply_common_env(&mut cmd, collector);
            let log = std::fs::File::create(dir.path().join("worker.log")).unwrap();
            cmd.stdout(Stdio::null()).stderr(log);
            let worker = Some(cmd.spawn().unwrap());
            return Self { api: server, worker, client: reqwest::Client::new(), dir };
        }
        let server = ServerProcess::serve(api).await;
        Self { api: server, worker: None, client: reqwest::Client::new(), dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.address)
    }

    async fn graphql(&self, token: Option<&str>, traceparent: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request =
            self.client.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body["errors"].is_null(), "{body}");
        body["data"].clone()
    }

    fn logs(&self) -> String {
        let worker = std::fs::read_to_string(self.dir.path().join("worker.log")).unwrap_or_default();
        format!("api:\n{}\nworker:\n{worker}", self.api.stderr())
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if let Some(worker) = self.worker.as_mut() {
            let _ = worker.start_kill();
        }
    }
}

/// Poll every 100 ms, up to `secs`, for `check` to hold.
async fn wait_for(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

#[actix_web::test]
async fn one_upload_is_one_trace_from_completion_to_ready_and_its_webhook() {
    let (collector_url, collector) = start_collector();
    let deployment = Deployment::start(&collector_url).await;

    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let data = deployment
        .graphql(
            None,
            None,
            "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
            json!({ "input": { "email": email, "password": TEST_PASSWORD, "displayName": "Tracer" } }),
        )
        .await;
    let token = data["register"]["accessToken"].as_str().unwrap().to_string();
    let token = Some(token.as_str());
    deployment
        .graphql(
            token,
            None,
            "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { secret } }",
            json!({ "input": { "url": format!("{collector_url}/hook"), "events": ["READY"], "global": false } }),
        )
        .await;
    let data = deployment
        .graphql(
            token,
            None,
            "mutation($input: CreateVideoInput!) { createVideo(input: $input) { id } }",
            json!({ "input": { "title": "Traced", "visibility": "PRIVATE" } }),
        )
        .await;
    let video = data["createVideo"]["id"].as_str().unwrap().to_string();
    let clip = small_clip();
    let data = deployment
        .graphql(
            token,
            None,
            "mutation($input: CreateUploadInput!) { createUpload(input: $input) { id url headers { name value } } }",
            json!({ "input": { "videoId": video, "filename": "clip.mp4", "contentType": "video/mp4", "size": clip.len() } }),
        )
        .await;
    let ticket = &data["createUpload"];
    let mut put = deployment.client.put(ticket["url"].as_str().unwrap()).body(clip);
    for header in ticket["headers"].as_array().unwrap() {
        put = put.header(header["name"].as_str().unwrap(), header["value"].as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());

    // The client's own trace: the completion request continues it.
    let client_trace = uuid::Uuid::new_v4().simple().to_string();
    let client_span = &uuid::Uuid::new_v4().simple().to_string()[..16];
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    deployment
        .graphql(
            token,
            Some(&traceparent),
            "mutation($id: ID!) { completeUpload(id: $id) { id } }",
            json!({ "id": ticket["id"] }),
        )
        .await;

    let hooks = collector.hooks.clone();
    assert!(
        wait_for(180, || !hooks.lock().unwrap().is_empty()).await,
        "the READY webhook arrives; logs:\n{}",
        deployment.logs()
    );
    let (hook_traceparent, hook_body) = hooks.lock().unwrap()[0].clone();
    assert_eq!(hook_body["type"], "READY", "{hook_body}");
    let hook_traceparent = hook_traceparent.expect("the delivery carries a traceparent header");
    let spans = collector.spans.clone();
    assert_eq!(hook_traceparent.split('-').nth(1), Some(client_trace.as_str()), "{hook_traceparent}");

    // Every span of the chain arrives in the client's trace (the batch exporter sends
    // within a few hundred milliseconds; the webhook span ends after its request).
    let in_trace = |name: &str| {
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == client_trace && s.name == name)
            .cloned()
            .collect::<Vec<_>>()
    };
    let named = |wanted: &'static str| move || !in_trace(wanted).is_empty();
    for wanted in ["POST /graphql", "job transcode", "transcode encoding", "webhook delivery"] {
        assert!(
            wait_for(30, named(wanted)).await,
            "no `{wanted}` span in trace {client_trace}; got {:#?}",
            spans.lock().unwrap().iter().map(|s| (&s.name, &s.trace_id, &s.role)).collect::<Vec<_>>()
        );
    }
    let all: Vec<Received> = spans.lock().unwrap().iter().filter(|s| s.trace_id == client_trace).cloned().collect();
    let by_id: HashMap<&str, &Received> = all.iter().map(|s| (s.span_id.as_str(), s)).collect();
    // Whether `span` descends from the span with id `ancestor`.
    let descends = |span: &Received, ancestor: &str| {
        let mut parent = span.parent_span_id.as_str();
        for _ in 0..64 {
            if parent == ancestor {
                return true;
            }
            match by_id.get(parent) {
                Some(next) => parent = next.parent_span_id.as_str(),
                None => return false,
            }
        }
        false
    };

    // The request span is the client span's child, made by the API process.
    let requests = in_trace("POST /graphql");
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let request = &requests[0];
    assert_eq!(request.parent_span_id, client_span, "{request:?}");
    assert_eq!(request.role, "api");
    assert_eq!(request.attributes.get("http.route").map(String::as_str), Some("/graphql"), "{request:?}");
    // GraphQL's own spans (async-graphql's tracing extension) sit under it.
    let graphql: Vec<&Received> = all.iter().filter(|s| s.role == "api" && descends(s, &request.span_id)).collect();
    assert!(graphql.iter().any(|s| s.name == "execute"), "GraphQL execution span: {graphql:#?}");
    assert!(graphql.iter().any(|s| s.name == "field"), "resolver spans: {graphql:#?}");

    // The job attempt continues the request's trace, in the worker process on
    // PostgreSQL (the API's embedded workers on SQLite).
    let attempts = in_trace("job transcode");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let attempt = &attempts[0];
    assert!(descends(attempt, &request.span_id), "the attempt descends from the request: {attempt:?}");
    let worker_role = if backend() == Backend::Postgres { "worker" } else { "api" };
    assert_eq!(attempt.role, worker_role);
    assert_eq!(attempt.attributes.get("job.kind").map(String::as_str), Some("transcode"));
    assert_eq!(attempt.attributes.get("video.id").map(String::as_str), Some(video.as_str()));
    // Each pipeline stage is a span under the attempt.
    for stage in ["transcode probing", "transcode encoding", "transcode packaging", "transcode uploading"] {
        let found = in_trace(stage);
        assert_eq!(found.len(), 1, "{stage}: {found:#?}");
        assert!(descends(&found[0], &attempt.span_id), "{stage} is under the attempt: {found:?}");
    }

    // The webhook delivery continues the job's trace (READY was recorded by the
    // attempt), and its request carried that span to the receiver.
    let deliveries = in_trace("webhook delivery");
    assert_eq!(deliveries.len(), 1, "{deliveries:#?}");
    let delivery = &deliveries[0];
    assert_eq!(delivery.role, "api", "deliveries are sent by serve processes");
    assert!(descends(delivery, &attempt.span_id), "the delivery descends from the attempt: {delivery:?}");
    assert_eq!(hook_traceparent.split('-').nth(2), Some(delivery.span_id.as_str()), "{hook_traceparent}");
}

#[actix_web::test]
async fn without_otel_settings_nothing_is_exported_and_a_wrong_protocol_is_refused() {
    let (collector_url, collector) = start_collector();
    // No endpoint: the server runs, answers and sends nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(dir.path());
    for name in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] {
        cmd.env_remove(name);
    }
    let server = ServerProcess::serve(cmd).await;
    let response = reqwest::Client::new()
        .post(format!("{}/graphql", server.address))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .json(&json!({ "query": "{ __typename }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
    assert!(!stderr.contains("exporting traces"), "{stderr}");
    assert!(collector.spans.lock().unwrap().is_empty());

    // Only http/protobuf is built in: asking for gRPC is a startup error, not silence.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_reelhouse"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("serve")
        .arg("--bind")
        .arg("127.0.0.1:0")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"), "{stderr}");
}

/// A fresh W3C `traceparent` (sampled) and its trace and span ids.
fn new_traceparent() -> (String, String, String) {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_string();
    (format!("00-{trace}-{span}-01"), trace, span)
}

/// POST `{ __typename }` (or `query`) with a `traceparent` and, optionally, an
/// `Authorization` header.
async fn traced_post(server: &ServerProcess, traceparent: &str, authorization: Option<&str>, query: &str) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{}/graphql", server.address))
        .header("traceparent", traceparent)
        .json(&json!({ "query": query }));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A `serve` process exporting traces to `collector`, with `trusted` as
/// `server.trusted_trace_sources` (TOML array syntax).
async fn traced_server(collector: &str, trusted: &str, dir: &std::path::Path) -> ServerProcess {
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(dir);
    apply_common_env(&mut cmd, collector);
    cmd.env("REELHOUSE__SERVER__TRUSTED_TRACE_SOURCES", trusted);
    ServerProcess::serve(cmd).await
}

/// W3C Trace Context from strangers is not trusted (issue 24 follow-up): an
/// anonymous caller's `traceparent` (or one with a token that does not verify)
/// does not choose the request's trace id or sampling; the request starts a new
/// trace with the caller's span as a link. A caller with a valid access token, or
/// a peer in `server.trusted_trace_sources`, is continued.
#[actix_web::test]
async fn a_strangers_traceparent_starts_a_new_trace_linked_to_it() {
    let (collector_url, collector) = start_collector();
    let dir = tempfile::tempdir().unwrap();
    // Trusts one address that is not the test's (loopback).
    let server = traced_server(&collector_url, r#"["10.9.9.9", "fd00::/8"]"#, &dir.path().join("a")).await;

    let (anonymous, anonymous_trace, anonymous_span) = new_traceparent();
    traced_post(&server, &anonymous, None, "{ __typename }").await;
    let (forged, forged_trace, forged_span) = new_traceparent();
    traced_post(&server, &forged, Some("Bearer not.a.token"), "{ __typename }").await;

    let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
    let (register, _, _) = new_traceparent();
    let body = reqwest::Client::new()
        .post(format!("{}/graphql", server.address))
        .header("traceparent", register)
        .json(&json!({
            "query": "mutation($input: RegisterInput!) { register(input: $input) { accessToken } }",
            "variables": { "input": { "email": email, "password": TEST_PASSWORD, "displayName": "Tracer" } },
        }))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let token = body["data"]["register"]["accessToken"].as_str().expect("registered").to_string();
    let (signed_in, signed_in_trace, signed_in_span) = new_traceparent();
    traced_post(&server, &signed_in, Some(&format!("Bearer {token}")), "{ me { id } }").await;

    let spans = collector.spans.clone();
    let requests = |predicate: &dyn Fn(&Received) -> bool| {
        spans.lock().unwrap().iter().filter(|s| s.name == "POST /graphql" && predicate(s)).cloned().collect::<Vec<_>>()
    };
    let linked_to = |trace: &str, span: &str| {
        let (trace, span) = (trace.to_string(), span.to_string());
        move |s: &Received| s.links.iter().any(|(t, p)| *t == trace && *p == span)
    };
    let arrived = wait_for(30, || {
        !requests(&linked_to(&anonymous_trace, &anonymous_span)).is_empty()
            && !requests(&linked_to(&forged_trace, &forged_span)).is_empty()
            && !requests(&|s| s.trace_id == signed_in_trace).is_empty()
    })
    .await;
    assert!(
        arrived,
        "{:#?}\n{}",
        spans.lock().unwrap().iter().map(|s| (&s.name, &s.trace_id, &s.links)).collect::<Vec<_>>(),
        server.stderr()
    );
    for (trace, span) in [(&anonymous_trace, &anonymous_span), (&forged_trace, &forged_span)] {
        let found = requests(&linked_to(trace, span));
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_ne!(&found[0].trace_id, trace, "a new trace: {found:#?}");
        assert!(found[0].parent_span_id.is_empty(), "a root span: {found:#?}");
        assert!(
            spans.lock().unwrap().iter().all(|s| &s.trace_id != trace),
            "nothing is recorded in the stranger's trace"
        );
    }
    let continued = requests(&|s| s.trace_id == signed_in_trace);
    assert_eq!(continued.len(), 1, "{continued:#?}");
    assert_eq!(continued[0].parent_span_id, signed_in_span, "a signed-in caller's trace is continued");
    assert!(continued[0].links.is_empty());
    let (status, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");

    // A peer in `server.trusted_trace_sources` is continued without any credentials.
    let server = traced_server(&collector_url, r#"["127.0.0.0/8", "::1"]"#, &dir.path().join("b")).await;
    let (trusted, trusted_trace, trusted_span) = new_traceparent();
    traced_post(&server, &trusted, None, "{ __typename }").await;
    assert!(wait_for(30, || !requests(&|s| s.trace_id == trusted_trace).is_empty()).await, "{}", server.stderr());
    let continued = requests(&|s| s.trace_id == trusted_trace);
    assert_eq!(continued.len(), 1, "{continued:#?}");
    assert_eq!(continued[0].parent_span_id, trusted_span);
    let (status, stderr) = server.terminate().await;
    assert!(status.success(), "{stderr}");
}
