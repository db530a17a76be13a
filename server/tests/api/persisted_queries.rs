//! Apollo automatic persisted queries over the wire, as Apollo clients speak it:
//! a hash alone first (PERSISTED_QUERY_NOT_FOUND), then the document with its hash,
//! then the hash alone again, over POST and GET; and nothing a full document may
//! not do becomes possible through a kept one.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{spawn_app_with, TestApp};

fn sha256(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

fn persisted(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

async fn post(app: &TestApp, body: Value) -> (u16, Value) {
    let res = app.client.post(app.url("/graphql")).json(&body).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn get(app: &TestApp, params: &[(&str, String)]) -> (u16, Value) {
    let res =
        app.client.get(app.url("/graphql")).query(params).header("Accept", "application/json").send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn first_error(body: &Value) -> (Option<&str>, Option<&str>) {
    (body["errors"][0]["message"].as_str(), body["errors"][0]["extensions"]["code"].as_str())
}

async fn metric(app: &TestApp, outcome: &str) -> f64 {
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let prefix = format!("reelhouse_persisted_queries_total{{outcome=\"{outcome}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[actix_web::test]
async fn a_hash_is_unknown_then_registered_then_served_over_post_and_get() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let query = "query Version { serverInfo { version } }";
    let hash = sha256(query);

    let (_, body) = post(&app, json!({ "extensions": persisted(&hash) })).await;
    assert_eq!(first_error(&body), (Some("PersistedQueryNotFound"), Some("PERSISTED_QUERY_NOT_FOUND")), "{body}");

    let (status, body) = post(&app, json!({ "query": query, "extensions": persisted(&hash) })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["serverInfo"]["version"].is_string(), "{body}");

    let (status, body) = post(&app, json!({ "extensions": persisted(&hash) })).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["serverInfo"]["version"].is_string(), "{body}");

    let (status, body) = get(&app, &[("extensions", persisted(&hash).to_string())]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["serverInfo"]["version"].is_string(), "{body}");

    assert!(metric(&app, "hit").await >= 2.0);
    assert!(metric(&app, "miss").await >= 1.0);
    assert!(metric(&app, "registered").await >= 1.0);

    // Registration over GET works too (Apollo's GET mode sends both in the URL).
    let other = "{ serverInfo { mode } }";
    let (_, body) =
        get(&app, &[("query", other.to_string()), ("extensions", persisted(&sha256(other)).to_string())]).await;
    assert!(body["data"]["serverInfo"]["mode"].is_string(), "{body}");
    let (_, body) = get(&app, &[("extensions", persisted(&sha256(other)).to_string())]).await;
    assert!(body["data"]["serverInfo"]["mode"].is_string(), "{body}");
}

#[actix_web::test]
async fn a_wrong_hash_is_refused_and_nothing_is_kept_under_it() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let query = "{ serverInfo { version } }";
    let wrong = sha256("{ serverInfo { mode } }");
    let (_, body) = post(&app, json!({ "query": query, "extensions": persisted(&wrong) })).await;
    assert_eq!(first_error(&body).1, Some("BAD_USER_INPUT"), "{body}");
    let (_, body) = post(&app, json!({ "extensions": persisted(&wrong) })).await;
    assert_eq!(first_error(&body).1, Some("PERSISTED_QUERY_NOT_FOUND"), "{body}");
    let (_, body) = post(&app, json!({ "extensions": persisted("not-a-hash") })).await;
    assert_eq!(first_error(&body).1, Some("BAD_USER_INPUT"), "{body}");
}

/// GET must stay safe: a kept mutation named by its hash is not run over GET.
#[actix_web::test]
async fn a_persisted_mutation_is_refused_over_get() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let mutation = "mutation { logout(refreshToken: \"not a token\") }";
    let hash = sha256(mutation);
    let (status, body) = post(&app, json!({ "query": mutation, "extensions": persisted(&hash) })).await;
    assert_eq!(status, 200, "registered over POST: {body}");
    let (_, body) = get(&app, &[("extensions", persisted(&hash).to_string())]).await;
    let (message, code) = first_error(&body);
    assert_eq!(code, Some("BAD_USER_INPUT"), "{body}");
    assert!(message.is_some_and(|m| m.contains("only queries may be sent with GET")), "{body}");
    assert!(body["data"].is_null(), "the mutation ran over GET: {body}");
}

/// The document limits apply to a kept document as to one sent in full.
#[actix_web::test]
async fn the_document_limits_apply_to_kept_documents() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.max_aliases = 2;
    })
    .await;
    let query = "{ a: serverInfo { version } b: serverInfo { version } c: serverInfo { version } }";
    let hash = sha256(query);
    for body in [json!({ "query": query, "extensions": persisted(&hash) }), json!({ "extensions": persisted(&hash) })] {
        let (_, answer) = post(&app, body).await;
        let message = first_error(&answer).0.unwrap_or_default().to_string();
        assert!(message.contains("aliases"), "{answer}");
        assert!(answer["data"].is_null(), "{answer}");
    }
}

/// With introspection off, a kept introspection document is refused too.
#[actix_web::test]
async fn introspection_stays_off_for_kept_documents() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.introspection = Some(false);
    })
    .await;
    let query = "{ __schema { queryType { name } } }";
    let hash = sha256(query);
    let (_, full) = post(&app, json!({ "query": query })).await;
    assert!(full["data"]["__schema"]["queryType"]["name"].is_null(), "{full}");
    for body in [json!({ "query": query, "extensions": persisted(&hash) }), json!({ "extensions": persisted(&hash) })] {
        let (_, answer) = post(&app, body).await;
        assert!(answer["data"]["__schema"]["queryType"]["name"].is_null(), "introspection through a hash: {answer}");
    }
}

#[actix_web::test]
async fn capacity_zero_answers_not_supported() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.graphql.persisted_queries_capacity = 0;
    })
    .await;
    let query = "{ serverInfo { version } }";
    let (_, body) = post(&app, json!({ "query": query, "extensions": persisted(&sha256(query)) })).await;
    assert_eq!(
        first_error(&body),
        (Some("PersistedQueryNotSupported"), Some("PERSISTED_QUERY_NOT_SUPPORTED")),
        "{body}"
    );
}
