//! The security audit log: every audited action leaves one row with its actor,
//! target, address, agent, outcome and request id; only admins read it; it pages
//! and filters; and no row ever holds a password, token or secret.

use chrono::Utc;
use entities::{audit_event, job, JobKind, JobStatus, Role, VideoStatus, Visibility};
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    error_code, spawn_app, spawn_app_with, Credentials, TestApp, TestUser, AUTH_PAYLOAD_FIELDS, TEST_PASSWORD,
};

const AUDIT_FIELDS: &str = "id at action actor { id } targetId ip userAgent outcome requestId detail";
const AGENT: &str = "audit-test-agent/1.0";

/// Every row `filter` selects, newest first (following every page).
async fn audit_rows(app: &TestApp, admin: &TestUser, filter: Value) -> Vec<Value> {
    let query = format!(
        "query($after: String, $filter: AuditFilter) {{ auditLog(first: 100, after: $after, filter: $filter) {{ \
         edges {{ node {{ {AUDIT_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let mut rows = Vec::new();
    let mut after = Value::Null;
    loop {
        let (status, body) = app.graphql_as(&admin.bearer(), &query, json!({ "after": after, "filter": filter })).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["errors"].is_null(), "{body}");
        let log = &body["data"]["auditLog"];
        rows.extend(log["edges"].as_array().unwrap().iter().map(|e| e["node"].clone()));
        if log["pageInfo"]["hasNextPage"] != true {
            return rows;
        }
        after = log["pageInfo"]["endCursor"].clone();
    }
}

/// The only row of `action` (optionally for `target`).
async fn only_row(app: &TestApp, admin: &TestUser, action: &str, target: Option<&str>) -> Value {
    let mut filter = json!({ "action": action });
    if let Some(target) = target {
        filter["targetId"] = json!(target);
    }
    let rows = audit_rows(app, admin, filter).await;
    assert_eq!(rows.len(), 1, "one {action} row expected: {rows:#?}");
    rows[0].clone()
}

fn detail(row: &Value) -> Value {
    serde_json::from_str(row["detail"].as_str().unwrap_or("null")).unwrap()
}

/// A GraphQL call with a User-Agent; returns the body and the response's request id.
async fn call_with_agent(app: &TestApp, credentials: &Credentials, query: &str, variables: Value) -> (Value, String) {
    let mut request = app
        .client
        .post(app.url("/graphql"))
        .header("User-Agent", AGENT)
        .json(&json!({ "query": query, "variables": variables }));
    if let Credentials::Bearer(token) = credentials {
        request = request.bearer_auth(token);
    }
    let res = request.send().await.unwrap();
    let request_id = res.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
    (res.json().await.unwrap(), request_id)
}

const LOGIN: &str = "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken user { id } } }";

#[actix_web::test]
async fn audit_sign_in_success_and_failure_with_address_agent_and_request_id() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let vars = |email: &str, password: &str| json!({ "input": { "email": email, "password": password } });

    let (body, ok_request) =
        call_with_agent(&app, &Credentials::Anonymous, LOGIN, vars(&user.email, TEST_PASSWORD)).await;
    assert!(body["errors"].is_null(), "{body}");
    let rows = audit_rows(&app, &admin, json!({ "action": "LOGIN_SUCCEEDED", "actorId": user.id })).await;
    let row = rows.iter().find(|r| r["userAgent"] == AGENT).unwrap_or_else(|| panic!("{rows:#?}"));
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(row["targetId"], user.id.as_str());
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["requestId"], ok_request.as_str());

    let (body, bad_request) =
        call_with_agent(&app, &Credentials::Anonymous, LOGIN, vars(&user.email, "wrong password 123")).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let row = only_row(&app, &admin, "LOGIN_FAILED", Some(&user.id)).await;
    assert_eq!(row["outcome"], "FAILURE");
    assert!(row["actor"].is_null(), "nobody proved who they are: {row}");
    assert_eq!(row["ip"], "127.0.0.1");
    assert_eq!(row["userAgent"], AGENT);
    assert_eq!(row["requestId"], bad_request.as_str());

    // An unknown account: recorded, with no target.
    let (body, _) =
        call_with_agent(&app, &Credentials::Anonymous, LOGIN, vars("nobody@example.com", "whatever pass 1")).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let failed = audit_rows(&app, &admin, json!({ "action": "LOGIN_FAILED" })).await;
    assert_eq!(failed.len(), 2, "{failed:#?}");
    assert!(failed[0]["targetId"].is_null(), "newest first, unknown account: {failed:#?}");
}

#[actix_web::test]
async fn audit_refresh_token_reuse_is_recorded() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let refresh = format!("mutation($t: String!) {{ refreshToken(refreshToken: $t) {{ {AUTH_PAYLOAD_FIELDS} }} }}");
    let (_, body) = app.graphql(&refresh, json!({ "t": user.refresh_token })).await;
    assert!(body["errors"].is_null(), "{body}");
    assert!(audit_rows(&app, &admin, json!({ "action": "REFRESH_REUSE_DETECTED" })).await.is_empty());

    let (_, body) = app.graphql(&refresh, json!({ "t": user.refresh_token })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let row = only_row(&app, &admin, "REFRESH_REUSE_DETECTED", Some(&user.id)).await;
    assert_eq!(row["outcome"], "DENIED");
    assert!(row["actor"].is_null(), "{row}");
    assert!(detail(&row)["sessionId"].is_string(), "{row}");
}

#[actix_web::test]
async fn audit_logout_and_revoke_all_sessions() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let (_, body) =
        app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": user.refresh_token })).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let rows = audit_rows(&app, &admin, json!({ "action": "SESSION_REVOKED", "actorId": user.id })).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["outcome"], "SUCCESS");
    assert_eq!(detail(&rows[0])["reason"], "logout");
    assert!(rows[0]["targetId"].is_string(), "the session: {rows:#?}");

    let again = app.login(&user.email, TEST_PASSWORD).await;
    let (_, body) = app.graphql_as(&again.bearer(), "mutation { revokeAllSessions }", json!({})).await;
    assert_eq!(body["data"]["revokeAllSessions"], true, "{body}");
    let row = only_row(&app, &admin, "SESSION_REVOKED", Some(&user.id)).await;
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(detail(&row)["reason"], "revoke all sessions");
}

#[actix_web::test]
async fn audit_api_key_creation_and_revocation() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let (_, body) = app
        .graphql_as(&user.bearer(), "mutation { createApiKey(name: \"ci\") { apiKey { id } secret } }", json!({}))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let key_id = body["data"]["createApiKey"]["apiKey"]["id"].as_str().unwrap().to_string();
    let secret = body["data"]["createApiKey"]["secret"].as_str().unwrap().to_string();
    let row = only_row(&app, &admin, "API_KEY_CREATED", Some(&key_id)).await;
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(detail(&row)["role"], "USER");

    // A key may not mint keys: refused, and recorded as such.
    let (_, body) = app
        .graphql_as(&Credentials::ApiKey(secret), "mutation { createApiKey(name: \"x\") { secret } }", json!({}))
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let denied = audit_rows(&app, &admin, json!({ "action": "API_KEY_CREATED", "outcome": "DENIED" })).await;
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(denied[0]["actor"]["id"], user.id.as_str());

    let (_, body) =
        app.graphql_as(&user.bearer(), "mutation($id: ID!) { revokeApiKey(id: $id) }", json!({ "id": key_id })).await;
    assert_eq!(body["data"]["revokeApiKey"], true, "{body}");
    let row = only_row(&app, &admin, "API_KEY_REVOKED", Some(&key_id)).await;
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
}

#[actix_web::test]
async fn audit_role_change() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let (_, body) = app
        .graphql_as(
            &admin.bearer(),
            "mutation($id: ID!) { setUserRole(id: $id, role: MODERATOR) { role } }",
            json!({ "id": user.id }),
        )
        .await;
    assert_eq!(body["data"]["setUserRole"]["role"], "MODERATOR", "{body}");
    let row = only_row(&app, &admin, "ROLE_CHANGED", Some(&user.id)).await;
    assert_eq!(row["actor"]["id"], admin.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(detail(&row), json!({ "from": "USER", "to": "MODERATOR" }));
}

#[actix_web::test]
async fn audit_disable_user() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let (_, body) = app
        .graphql_as(
            &admin.bearer(),
            "mutation($id: ID!) { disableUser(id: $id) { disabled } }",
            json!({ "id": user.id }),
        )
        .await;
    assert_eq!(body["data"]["disableUser"]["disabled"], true, "{body}");
    let row = only_row(&app, &admin, "USER_DISABLED", Some(&user.id)).await;
    assert_eq!(row["actor"]["id"], admin.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(detail(&row)["sessionsRevoked"], 1);

    // Signing in to a disabled account is refused and recorded as DENIED.
    let (_, body) = app.graphql(LOGIN, json!({ "input": { "email": user.email, "password": TEST_PASSWORD } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let row = only_row(&app, &admin, "LOGIN_FAILED", Some(&user.id)).await;
    assert_eq!(row["outcome"], "DENIED");
}

#[actix_web::test]
async fn audit_webhook_endpoint_changes() {
    let app = spawn_app_with(|s| {
        s.webhooks.deliver = false;
        s.webhooks.allow_private_targets = true;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let url = "http://127.0.0.1:9/hook?token=url-token-not-for-logs";
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id } secret } }",
            json!({ "input": { "url": url, "events": ["READY"] } }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let id = body["data"]["createWebhook"]["webhook"]["id"].as_str().unwrap().to_string();
    let row = only_row(&app, &admin, "WEBHOOK_CREATED", Some(&id)).await;
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(detail(&row), json!({ "host": "127.0.0.1", "global": false }), "only the host is kept");

    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "mutation($id: ID!) { updateWebhook(id: $id, input: { enabled: false }) { enabled } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(body["data"]["updateWebhook"]["enabled"], false, "{body}");
    let row = only_row(&app, &admin, "WEBHOOK_UPDATED", Some(&id)).await;
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(detail(&row)["changed"], json!(["enabled"]));

    let (_, body) =
        app.graphql_as(&user.bearer(), "mutation($id: ID!) { deleteWebhook(id: $id) }", json!({ "id": id })).await;
    assert_eq!(body["data"]["deleteWebhook"], true, "{body}");
    let row = only_row(&app, &admin, "WEBHOOK_DELETED", Some(&id)).await;
    assert_eq!(row["actor"]["id"], user.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
}

async fn ready_video(app: &TestApp, owner: &TestUser) -> Uuid {
    let now = Utc::now();
    let model = entities::video::ActiveModel {
        id: Set(Uuid::now_v7()),
        owner_id: Set(Uuid::parse_str(&owner.id).unwrap()),
        title: Set("clip".into()),
        description: Set(String::new()),
        tags: Set(entities::video::Tags(vec![])),
        visibility: Set(Visibility::Public),
        status: Set(VideoStatus::Ready),
        source_key: Set(Some(format!("videos/{}/source", owner.id))),
        source_size_bytes: Set(Some(1000)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap();
    model.id
}

#[actix_web::test]
async fn audit_moderation_hide_and_unhide() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let moderator = app.create_user_with_role(Role::Moderator).await;
    let owner = app.register_user().await;
    let video = ready_video(&app, &owner).await.to_string();
    let (_, body) = app
        .graphql_as(
            &moderator.bearer(),
            "mutation($id: ID!) { hideVideo(id: $id, reason: \"spam\") { hidden } }",
            json!({ "id": video }),
        )
        .await;
    assert_eq!(body["data"]["hideVideo"]["hidden"], true, "{body}");
    let row = only_row(&app, &admin, "VIDEO_HIDDEN", Some(&video)).await;
    assert_eq!(row["actor"]["id"], moderator.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
    assert_eq!(detail(&row)["reason"], "spam");

    let (_, body) = app
        .graphql_as(&admin.bearer(), "mutation($id: ID!) { unhideVideo(id: $id) { hidden } }", json!({ "id": video }))
        .await;
    assert_eq!(body["data"]["unhideVideo"]["hidden"], false, "{body}");
    let row = only_row(&app, &admin, "VIDEO_UNHIDDEN", Some(&video)).await;
    assert_eq!(row["actor"]["id"], admin.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");
}

async fn insert_job(app: &TestApp, owner: &TestUser, video: Uuid, status: JobStatus) -> Uuid {
    let now = Utc::now();
    job::ActiveModel {
        id: Set(Uuid::now_v7()),
        kind: Set(JobKind::Transcode),
        video_id: Set(Some(video)),
        owner_id: Set(Some(Uuid::parse_str(&owner.id).unwrap())),
        status: Set(status),
        priority: Set(0),
        payload: Set(json!({ "preset": "MEDIUM" })),
        attempts: Set(1),
        max_attempts: Set(1),
        run_after: Set(now),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
    .insert(&app.state.db)
    .await
    .unwrap()
    .id
}

#[actix_web::test]
async fn audit_admin_job_actions() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let owner = app.register_user().await;
    let queued = insert_job(&app, &owner, ready_video(&app, &owner).await, JobStatus::Queued).await.to_string();
    let dead = insert_job(&app, &owner, ready_video(&app, &owner).await, JobStatus::Dead).await.to_string();

    let (_, body) = app
        .graphql_as(&admin.bearer(), "mutation($id: ID!) { cancelJob(id: $id) { status } }", json!({ "id": queued }))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let row = only_row(&app, &admin, "JOB_CANCELLED", Some(&queued)).await;
    assert_eq!(row["actor"]["id"], admin.id.as_str());
    assert_eq!(row["outcome"], "SUCCESS");

    let (_, body) = app
        .graphql_as(&admin.bearer(), "mutation($id: ID!) { retryJob(id: $id) { status } }", json!({ "id": dead }))
        .await;
    assert_eq!(body["data"]["retryJob"]["status"], "QUEUED", "{body}");
    let row = only_row(&app, &admin, "JOB_RETRIED", Some(&dead)).await;
    assert_eq!(row["actor"]["id"], admin.id.as_str());
    assert_eq!(detail(&row)["ownerId"], owner.id.as_str());
}

#[actix_web::test]
async fn audit_log_is_for_admins_only() {
    let app = spawn_app().await;
    let query = "query { auditLog { edges { node { id } } } }";
    for role in [Role::User, Role::Moderator, Role::Viewer] {
        let who = app.create_user_with_role(role).await;
        let (_, body) = app.graphql_as(&who.bearer(), query, json!({})).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{role:?}: {body}");
        assert!(body["data"].is_null(), "{body}");
    }
    let (_, body) = app.graphql_as(&Credentials::Anonymous, query, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let admin = app.create_user_with_role(Role::Admin).await;
    let (_, body) = app.graphql_as(&admin.bearer(), query, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[actix_web::test]
async fn audit_log_pages_newest_first_and_filters() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let started = Utc::now();
    for _ in 0..5 {
        let (_, body) =
            app.graphql(LOGIN, json!({ "input": { "email": user.email, "password": "wrong password 123" } })).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    }

    // Pages of two, following the cursor, give every row once, newest first.
    let page = "query($after: String) { auditLog(first: 2, after: $after, filter: { action: LOGIN_FAILED }) { \
        edges { cursor node { id at } } pageInfo { hasNextPage hasPreviousPage endCursor } } }";
    let mut ids = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let (_, body) = app.graphql_as(&admin.bearer(), page, json!({ "after": after })).await;
        assert!(body["errors"].is_null(), "{body}");
        let log = &body["data"]["auditLog"];
        let edges = log["edges"].as_array().unwrap();
        assert!(edges.len() <= 2);
        ids.extend(edges.iter().map(|e| e["node"]["id"].as_str().unwrap().to_string()));
        pages += 1;
        if log["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = log["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 5);
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(ids, sorted, "newest (largest UUIDv7) first");

    // Filters combine.
    assert_eq!(audit_rows(&app, &admin, json!({ "targetId": user.id, "outcome": "FAILURE" })).await.len(), 5);
    assert!(audit_rows(&app, &admin, json!({ "action": "LOGIN_FAILED", "outcome": "SUCCESS" })).await.is_empty());
    let mine = audit_rows(&app, &admin, json!({ "actorId": admin.id })).await;
    assert!(!mine.is_empty() && mine.iter().all(|r| r["actor"]["id"] == admin.id.as_str()), "{mine:#?}");
    assert_eq!(audit_rows(&app, &admin, json!({ "action": "LOGIN_FAILED", "from": started })).await.len(), 5);
    assert!(audit_rows(&app, &admin, json!({ "action": "LOGIN_FAILED", "to": started })).await.is_empty());
    let (_, body) = app
        .graphql_as(&admin.bearer(), "query { auditLog(after: \"not a cursor\") { edges { cursor } } }", json!({}))
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
}

#[actix_web::test]
async fn audit_rows_never_hold_a_secret() {
    let app = spawn_app_with(|s| {
        s.webhooks.deliver = false;
        s.webhooks.allow_private_targets = true;
    })
    .await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let user = app.register_user().await;
    let mut secrets = vec![TEST_PASSWORD.to_string(), "typo password 77".to_string()];
    secrets.extend([&admin, &user].iter().flat_map(|u| [u.access_token.clone(), u.refresh_token.clone()]));

    let (_, body) =
        app.graphql(LOGIN, json!({ "input": { "email": user.email, "password": "typo password 77" } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    // A password typed into the email field is not kept either.
    let (_, body) = app.graphql(LOGIN, json!({ "input": { "email": TEST_PASSWORD, "password": "x" } })).await;
    assert!(error_code(&body).is_some(), "{body}");
    let refresh = format!("mutation($t: String!) {{ refreshToken(refreshToken: $t) {{ {AUTH_PAYLOAD_FIELDS} }} }}");
    let (_, body) = app.graphql(&refresh, json!({ "t": user.refresh_token })).await;
    secrets.push(body["data"]["refreshToken"]["refreshToken"].as_str().unwrap().to_string());
    let (_, body) = app.graphql(&refresh, json!({ "t": user.refresh_token })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "reuse: {body}");
    let (_, body) = app
        .graphql_as(&user.bearer(), "mutation { createApiKey(name: \"ci\") { apiKey { id } secret } }", json!({}))
        .await;
    let user = app.login(&user.email, TEST_PASSWORD).await;
    let (_, body) = if body["errors"].is_null() {
        (200, body)
    } else {
        app.graphql_as(&user.bearer(), "mutation { createApiKey(name: \"ci\") { apiKey { id } secret } }", json!({}))
            .await
    };
    secrets.push(body["data"]["createApiKey"]["secret"].as_str().unwrap().to_string());
    let (_, body) = app
        .graphql_as(
            &user.bearer(),
            "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id } secret } }",
            json!({ "input": { "url": "http://127.0.0.1:9/h?sig=query-signature-secret", "events": ["READY"] } }),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    secrets.push(body["data"]["createWebhook"]["secret"].as_str().unwrap().to_string());
    secrets.push("query-signature-secret".into());
    secrets.push(user.access_token.clone());
    secrets.push(user.refresh_token.clone());
    let (_, body) =
        app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": user.refresh_token })).await;
    assert_eq!(body["data"]["logout"], true, "{body}");

    let rows = audit_event::Entity::find().all(&app.state.db).await.unwrap();
    let actions: std::collections::HashSet<&str> = rows.iter().map(|r| r.action.as_str()).collect();
    for expected in [
        "LOGIN_SUCCEEDED",
        "LOGIN_FAILED",
        "REFRESH_REUSE_DETECTED",
        "API_KEY_CREATED",
        "WEBHOOK_CREATED",
        "SESSION_REVOKED",
    ] {
        assert!(actions.contains(expected), "{expected} missing from {actions:?}");
    }
    let dump = serde_json::to_string(&rows).unwrap();
    for secret in &secrets {
        assert!(!dump.contains(secret.as_str()), "a secret leaked into the audit log: {secret}");
    }
}

#[actix_web::test]
async fn audit_retention_prunes_only_old_rows() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let db = &app.state.db;
    let count = || async { audit_event::Entity::find().all(db).await.unwrap().len() };
    let before = count().await;
    assert!(before > 0);
    let cutoff = Utc::now() - chrono::Duration::days(365);
    assert_eq!(reelhouse::repo::audit::prune(db, cutoff).await.unwrap(), 0, "nothing is a year old");
    assert_eq!(count().await, before);
    let everything = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(reelhouse::repo::audit::prune(db, everything).await.unwrap(), before as u64);
    assert!(audit_rows(&app, &admin, json!({})).await.is_empty());
    assert_eq!(reelhouse::config::Settings::default().audit.retention_days, 365);
}
