//! Device sessions (`User.sessions`, `revokeSession`) and user administration
//! (`users(filter)`, `disableUser`/`enableUser`, `deleteUser`, `setUserQuota`),
//! against the real server, database, storage and sockets.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use reelhouse::events::bus::{BusMessage, Subscribe};
use reelhouse::events::EventKind;
use reelhouse::jobs::{enqueue, queue, NewJob, DEFAULT_PRIORITY};
use reelhouse::repo::usage;

use crate::helpers::{
    error_code, eventually, spawn_app_with, Credentials, TestApp, TestUser, AUTH_PAYLOAD_FIELDS, TEST_PASSWORD,
};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const SESSIONS: &str = "query { me { sessions { id createdAt lastUsedAt ip userAgent current } } }";
const REVOKE: &str = "mutation($id: ID!) { revokeSession(id: $id) }";
const USERS: &str =
    "query($first: Int, $after: String, $filter: UserFilter) { users(first: $first, after: $after, filter: $filter) { \
    edges { cursor node { id email displayName role disabled } } pageInfo { hasNextPage endCursor } } }";
const DISABLE: &str = "mutation($id: ID!) { disableUser(id: $id) { id disabled } }";
const ENABLE: &str = "mutation($id: ID!) { enableUser(id: $id) { id disabled } }";
const SET_USER_ROLE: &str = "mutation($id: ID!, $role: Role!) { setUserRole(id: $id, role: $role) { id role } }";
const DELETE_USER: &str = "mutation($id: ID!) { deleteUser(id: $id) { id kind status } }";
/// `setUserQuota` with exactly the arguments present in `variables` (one left out
/// keeps its value; a variable declared but not sent would count as null).
async fn quota(app: &TestApp, admin: &TestUser, variables: Value) -> Value {
    ok(app, admin, &set_quota(&variables), variables).await
}

fn set_quota(variables: &Value) -> String {
    let mut declared = vec!["$id: ID!".to_string()];
    let mut arguments = vec!["id: $id".to_string()];
    for (variable, argument) in [("storage", "storageQuotaBytes"), ("budget", "processingBudgetSecondsPerDay")] {
        if variables.get(variable).is_some() {
            declared.push(format!("${variable}: Int"));
            arguments.push(format!("{argument}: ${variable}"));
        }
    }
    format!(
        "mutation({}) {{ setUserQuota({}) {{ id storageQuotaBytes processingBudgetSecondsPerDay }} }}",
        declared.join(", "),
        arguments.join(", ")
    )
}

/// The periodic socket re-check is pushed far out, so only the access-change
/// signal can close a socket within a test's patience.
async fn app_without_periodic_rechecks(customize: impl FnOnce(&mut reelhouse::config::Settings)) -> TestApp {
    spawn_app_with(|s| {
        s.graphql.ws_recheck_ms = 600_000;
        customize(s);
    })
    .await
}

/// Sign in with a chosen User-Agent and a forged X-Forwarded-For (not trusted:
/// no proxy is configured).
async fn login_from(app: &TestApp, email: &str, agent: &str) -> TestUser {
    let res = app
        .client
        .post(app.url("/graphql"))
        .header("User-Agent", agent)
        .header("X-Forwarded-For", "203.0.113.9")
        .json(&json!({
            "query": format!("mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
            "variables": { "input": { "email": email, "password": TEST_PASSWORD } },
        }))
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    let payload = &body["data"]["login"];
    assert!(payload["accessToken"].is_string(), "{body}");
    TestUser {
        id: payload["user"]["id"].as_str().unwrap().to_string(),
        email: email.to_string(),
        access_token: payload["accessToken"].as_str().unwrap().to_string(),
        refresh_token: payload["refreshToken"].as_str().unwrap().to_string(),
    }
}

async fn sessions(app: &TestApp, who: &TestUser) -> Vec<Value> {
    let (status, body) = app.graphql_as(&who.bearer(), SESSIONS, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["me"]["sessions"].as_array().unwrap().clone()
}

async fn current_session_id(app: &TestApp, who: &TestUser) -> String {
    let all = sessions(app, who).await;
    let current: Vec<&Value> = all.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1, "{all:?}");
    current[0]["id"].as_str().unwrap().to_string()
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Value {
    let (_, body) = app
        .graphql(
            &format!("mutation($t: String!) {{ refreshToken(refreshToken: $t) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
            json!({ "t": refresh_token }),
        )
        .await;
    body
}

async fn admin(app: &TestApp) -> TestUser {
    app.create_user_with_role(entities::Role::Admin).await
}

async fn ok(app: &TestApp, who: &TestUser, query: &str, variables: Value) -> Value {
    let (status, body) = app.graphql_as(&who.bearer(), query, variables).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{query}: {body}");
    body["data"].clone()
}

async fn subscribed(app: &TestApp, token: &str) -> Socket {
    let mut request = app.ws_url("/graphql/ws").into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let mut socket = tokio_tungstenite::connect_async(request).await.unwrap().0;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await.unwrap();
    assert_eq!(next_text(&mut socket).await["type"], "connection_ack");
    let subscribe =
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { heartbeat { seq } }" } });
    socket.send(Message::Text(subscribe.to_string().into())).await.unwrap();
    assert_eq!(next_text(&mut socket).await["type"], "next");
    socket
}

async fn next_text(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(20), socket.next()).await.expect("message in time") {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The close code and reason, if the server closes the socket within 5 seconds
/// (the periodic re-check is minutes away: only the pushed signal is that quick).
async fn closed_soon(socket: &mut Socket) -> Option<(u16, String)> {
    let read = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => return (1005, String::new()),
                Some(Ok(_)) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read).await.ok()
}

/// The socket still delivers heartbeats.
async fn still_open(socket: &mut Socket) {
    for _ in 0..3 {
        assert_eq!(next_text(socket).await["type"], "next");
    }
}

fn uuid(id: &str) -> Uuid {
    Uuid::parse_str(id).unwrap()
}

#[actix_web::test]
async fn sessions_list_each_sign_in_with_its_agent_and_real_address_and_exactly_one_current() {
    let app = spawn_app_with(|_| {}).await;
    let first = app.register_user().await;
    let laptop = login_from(&app, &first.email, "laptop-browser/1.0").await;
    let phone = login_from(&app, &first.email, "phone-app/2.0").await;

    let listed = sessions(&app, &phone).await;
    // register, laptop and phone: three sign-ins, the newest first.
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[0]["userAgent"], "phone-app/2.0", "{listed:?}");
    assert_eq!(listed[1]["userAgent"], "laptop-browser/1.0", "{listed:?}");
    assert_eq!(listed.iter().filter(|s| s["current"] == true).count(), 1, "{listed:?}");
    assert_eq!(listed[0]["current"], true, "the phone asked");
    for session in &listed {
        // X-Forwarded-For from an untrusted peer does not count.
        assert_eq!(session["ip"], "127.0.0.1", "{session}");
    }
    let laptop_id = current_session_id(&app, &laptop).await;
    assert_eq!(listed[1]["id"], laptop_id.as_str());
    let laptop_used = listed[1]["lastUsedAt"].as_str().unwrap().to_string();

    // A refresh is a use: the laptop's session moves to the top, same id.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let body = refresh(&app, &laptop.refresh_token).await;
    let access = body["data"]["refreshToken"]["accessToken"].as_str().unwrap_or_else(|| panic!("{body}"));
    let laptop = TestUser { access_token: access.to_string(), ..laptop };
    let listed = sessions(&app, &phone).await;
    assert_eq!(listed[0]["id"], laptop_id.as_str(), "{listed:?}");
    let used = |s: &Value| chrono::DateTime::parse_from_rfc3339(s["lastUsedAt"].as_str().unwrap()).unwrap();
    assert!(used(&listed[0]) > chrono::DateTime::parse_from_rfc3339(&laptop_used).unwrap(), "{listed:?}");
    assert_eq!(current_session_id(&app, &laptop).await, laptop_id, "the refreshed token is the same session");
}

#[actix_web::test]
async fn revoking_a_session_ends_its_refresh_token_and_closes_its_sockets_at_once_others_stay() {
    let app = app_without_periodic_rechecks(|_| {}).await;
    let user = app.register_user().await;
    let other = app.login(&user.email, TEST_PASSWORD).await;
    let mut doomed = subscribed(&app, &user.access_token).await;
    let mut kept = subscribed(&app, &other.access_token).await;
    let doomed_id = current_session_id(&app, &user).await;

    let data = ok(&app, &other, REVOKE, json!({ "id": doomed_id })).await;
    assert_eq!(data["revokeSession"], true);

    let (code, reason) = closed_soon(&mut doomed).await.expect("the revoked session's socket closes at once");
    assert_eq!((code, reason.as_str()), (4403, "session revoked"));
    still_open(&mut kept).await;

    // Its tokens are dead; the other session lives on.
    let body = refresh(&app, &user.refresh_token).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let (_, body) = app.graphql_as(&user.bearer(), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let left = sessions(&app, &other).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(left[0]["id"], doomed_id.as_str());

    // Again: already ended.
    assert_eq!(ok(&app, &other, REVOKE, json!({ "id": doomed_id })).await["revokeSession"], false);
    let entry = reelhouse::repo::audit::AuditAction::SessionRevoked.as_str();
    let (_, body) = app
        .graphql_as(
            &admin(&app).await.bearer(),
            "query($f: AuditFilter) { auditLog(filter: $f) { edges { node { targetId actor { id } } } } }",
            json!({ "f": { "action": entry } }),
        )
        .await;
    let rows = body["data"]["auditLog"]["edges"].as_array().unwrap_or_else(|| panic!("{body}"));
    assert!(
        rows.iter()
            .any(|r| r["node"]["targetId"] == doomed_id.as_str() && r["node"]["actor"]["id"] == other.id.as_str()),
        "{body}"
    );
}

#[actix_web::test]
async fn strangers_can_neither_see_nor_revoke_anothers_sessions_and_admins_can() {
    let app = app_without_periodic_rechecks(|_| {}).await;
    let victim = app.register_user().await;
    let stranger = app.register_user().await;
    let victim_session = current_session_id(&app, &victim).await;

    let (_, body) = app.graphql_as(&stranger.bearer(), REVOKE, json!({ "id": victim_session })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let (_, body) = app.graphql_as(&stranger.bearer(), REVOKE, json!({ "id": "not-a-uuid" })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let own = sessions(&app, &stranger).await;
    assert_eq!(own.len(), 1);
    assert_ne!(own[0]["id"], victim_session.as_str());
    // Only admins list accounts (and so reach another user's sessions).
    let (_, body) = app.graphql_as(&stranger.bearer(), USERS, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
    let (_, body) = app.graphql_as(&Credentials::Anonymous, REVOKE, json!({ "id": victim_session })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    // The victim's session is untouched.
    assert_eq!(current_session_id(&app, &victim).await, victim_session);

    // An admin sees them and may end them.
    let admin = admin(&app).await;
    let query = "query($f: UserFilter) { users(filter: $f) { edges { node { id sessions { id current } } } } }";
    let data = ok(&app, &admin, query, json!({ "f": { "search": victim.email } })).await;
    let edges = data["users"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{data}");
    assert_eq!(edges[0]["node"]["sessions"], json!([{ "id": victim_session, "current": false }]));
    let mut socket = subscribed(&app, &victim.access_token).await;
    assert_eq!(ok(&app, &admin, REVOKE, json!({ "id": victim_session })).await["revokeSession"], true);
    assert_eq!(closed_soon(&mut socket).await.map(|c| c.0), Some(4403));
}

#[actix_web::test]
async fn admins_filter_and_page_users_by_search_role_and_disabled() {
    let app = spawn_app_with(|_| {}).await;
    let admin = admin(&app).await;
    let db = &app.state.db;
    let tag = Uuid::new_v4().simple().to_string()[..8].to_string();
    let make = |email: String, name: &'static str, role| async move {
        reelhouse::auth::accounts::create_user(db, &email, TEST_PASSWORD, name, role).await.unwrap().id
    };
    let ann = make(format!("ann.{tag}@example.com"), "Ann Percent 100%_sure", entities::Role::User).await;
    let bob = make(format!("bob.{tag}@example.com"), "Bob 1000 sure", entities::Role::Moderator).await;
    let cy = make(format!("cy@{tag}.example.com"), "Cy", entities::Role::User).await;
    let dee = make("dee@example.org".into(), "Dee", entities::Role::Viewer).await;
    ok(&app, &admin, DISABLE, json!({ "id": cy })).await;

    let ids = |data: &Value| -> Vec<Uuid> {
        data["users"]["edges"].as_array().unwrap().iter().map(|e| uuid(e["node"]["id"].as_str().unwrap())).collect()
    };
    let page = |filter: Value| {
        let app = &app;
        let admin = &admin;
        async move { ok(app, admin, USERS, json!({ "filter": filter })).await }
    };
    // Substring of the email, any case; oldest first.
    assert_eq!(ids(&page(json!({ "search": tag.to_uppercase() })).await), vec![ann, bob, cy]);
    // Of the display name, with LIKE wildcards taken literally.
    assert_eq!(ids(&page(json!({ "search": "0%_s" })).await), vec![ann]);
    assert_eq!(ids(&page(json!({ "search": "percent" })).await), vec![ann]);
    assert_eq!(ids(&page(json!({ "search": "_" })).await), vec![ann]);
    assert_eq!(ids(&page(json!({ "search": "%" })).await), vec![ann]);
    assert_eq!(ids(&page(json!({ "role": "MODERATOR" })).await), vec![bob]);
    assert_eq!(ids(&page(json!({ "role": "VIEWER" })).await), vec![dee]);
    assert_eq!(ids(&page(json!({ "disabled": true })).await), vec![cy]);
    assert_eq!(ids(&page(json!({ "search": tag, "disabled": false })).await), vec![ann, bob]);
    assert_eq!(ids(&page(json!({ "search": tag, "role": "USER", "disabled": false })).await), vec![ann]);
    assert!(ids(&page(json!({ "search": "nobody-has-this" })).await).is_empty());

    // Paging through a filter.
    let first = ok(&app, &admin, USERS, json!({ "first": 2, "filter": { "search": tag } })).await;
    assert_eq!(ids(&first), vec![ann, bob]);
    assert_eq!(first["users"]["pageInfo"]["hasNextPage"], true);
    let after = first["users"]["pageInfo"]["endCursor"].clone();
    let second = ok(&app, &admin, USERS, json!({ "first": 2, "after": after, "filter": { "search": tag } })).await;
    assert_eq!(ids(&second), vec![cy]);
    assert_eq!(second["users"]["pageInfo"]["hasNextPage"], false);
    let all = ok(&app, &admin, USERS, json!({})).await;
    assert_eq!(ids(&all).len(), 5, "the admin and the four");

    // Not for anyone below admin.
    for role in [entities::Role::Moderator, entities::Role::User, entities::Role::Viewer] {
        let who = app.create_user_with_role(role).await;
        for (query, variables) in [
            (USERS.to_string(), json!({ "filter": { "search": tag } })),
            (ENABLE.to_string(), json!({ "id": cy })),
            (DELETE_USER.to_string(), json!({ "id": dee })),
            (set_quota(&json!({ "storage": 1 })), json!({ "id": dee, "storage": 1 })),
        ] {
            let (_, body) = app.graphql_as(&who.bearer(), &query, variables).await;
            assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{role:?} {query}: {body}");
        }
    }
}

#[actix_web::test]
async fn disabling_refuses_sign_in_and_tokens_and_closes_sockets_at_once_and_enabling_restores_sign_in() {
    let app = app_without_periodic_rechecks(|_| {}).await;
    let admin = admin(&app).await;
    let user = app.register_user().await;
    let key = ok(&app, &user, "mutation { createApiKey(name: \"k\") { secret } }", json!({})).await["createApiKey"]
        ["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut socket = subscribed(&app, &user.access_token).await;
    let mut admin_socket = subscribed(&app, &admin.access_token).await;

    let data = ok(&app, &admin, DISABLE, json!({ "id": user.id })).await;
    assert_eq!(data["disableUser"]["disabled"], true);
    let (code, _) = closed_soon(&mut socket).await.expect("the disabled user's socket closes at once");
    assert_eq!(code, 4403);
    still_open(&mut admin_socket).await;

    let (_, body) = app.graphql_as(&user.bearer(), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "access token refused: {body}");
    let (_, body) = app.graphql_as(&Credentials::ApiKey(key.clone()), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "API key refused: {body}");
    let body = refresh(&app, &user.refresh_token).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let (_, body) = app
        .graphql(
            "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
            json!({ "input": { "email": user.email, "password": TEST_PASSWORD } }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "sign-in refused: {body}");

    let data = ok(&app, &admin, ENABLE, json!({ "id": user.id })).await;
    assert_eq!(data["enableUser"]["disabled"], false);
    let back = app.login(&user.email, TEST_PASSWORD).await;
    assert_eq!(ok(&app, &back, "{ me { id } }", json!({})).await["me"]["id"], user.id.as_str());
    let (_, body) = app.graphql_as(&Credentials::ApiKey(key), "{ me { id } }", json!({})).await;
    assert!(body["errors"].is_null(), "the API key works again: {body}");
    let (_, body) = app.graphql_as(&admin.bearer(), ENABLE, json!({ "id": Uuid::now_v7() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");

    // Both are audited, with the admin as actor.
    let query = "query($f: AuditFilter) { auditLog(filter: $f) { edges { node { action targetId actor { id } } } } }";
    for action in ["USER_DISABLED", "USER_ENABLED"] {
        let data = ok(&app, &admin, query, json!({ "f": { "action": action, "targetId": user.id } })).await;
        let rows = data["auditLog"]["edges"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{action}: {data}");
        assert_eq!(rows[0]["node"]["actor"]["id"], admin.id.as_str());
    }
}

#[actix_web::test]
async fn deleting_a_user_ends_access_at_once_and_a_job_removes_their_videos_and_objects() {
    let app = app_without_periodic_rechecks(|_| {}).await;
    let admin = admin(&app).await;
    let user = app.register_user().await;
    let user_id = uuid(&user.id);
    let bystander = app.register_user().await;
    let create = "mutation($t: String!) { createVideo(input: { title: $t, visibility: PUBLIC }) { id } }";
    let mut videos = Vec::new();
    for title in ["one", "two"] {
        videos.push(uuid(ok(&app, &user, create, json!({ "t": title })).await["createVideo"]["id"].as_str().unwrap()));
    }
    let kept_video =
        uuid(ok(&app, &bystander, create, json!({ "t": "kept" })).await["createVideo"]["id"].as_str().unwrap());
    let store = app.state.store.clone();
    let keys = [
        format!("users/{user_id}/videos/{}/source", videos[0]),
        format!("users/{user_id}/videos/{}/out/v1/hls/360p/index.m3u8", videos[1]),
        format!("users/{user_id}/stray-object"),
    ];
    let bystander_key = format!("users/{}/videos/{kept_video}/source", bystander.id);
    for key in keys.iter().chain([&bystander_key]) {
        store.put_bytes(key, bytes::Bytes::from_static(b"bytes"), None).await.unwrap();
    }
    let key = ok(&app, &user, "mutation { createApiKey(name: \"k\") { secret } }", json!({})).await["createApiKey"]
        ["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut socket = subscribed(&app, &user.access_token).await;
    let mut bus = app.state.hubs.event_bus.addr().send(Subscribe).await.unwrap();

    let data = ok(&app, &admin, DELETE_USER, json!({ "id": user.id })).await;
    let job = &data["deleteUser"];
    assert_eq!(job["kind"], "DELETE_USER", "{data}");
    let job_id = job["id"].as_str().unwrap().to_string();

    // At once: sockets closed, tokens, API keys and the password refused.
    assert_eq!(closed_soon(&mut socket).await.map(|c| c.0), Some(4403));
    let (_, body) = app.graphql_as(&user.bearer(), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let (_, body) = app.graphql_as(&Credentials::ApiKey(key), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    assert_eq!(error_code(&refresh(&app, &user.refresh_token).await).as_deref(), Some("UNAUTHENTICATED"));
    let login = "mutation($input: LoginInput!) { login(input: $input) { accessToken } }";
    let (_, body) = app.graphql(login, json!({ "input": { "email": user.email, "password": TEST_PASSWORD } })).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    // The account is gone from the listing at once.
    let listed = ok(&app, &admin, USERS, json!({})).await;
    assert!(!listed.to_string().contains(&user.id), "{listed}");

    // The tracked job finishes.
    let job_query = "query($id: ID!) { job(id: $id) { status error } }";
    let done = eventually(300, || async {
        let (_, body) = app.graphql_as(&admin.bearer(), job_query, json!({ "id": job_id })).await;
        body["data"]["job"]["status"] == "SUCCEEDED"
    })
    .await;
    let (_, body) = app.graphql_as(&admin.bearer(), job_query, json!({ "id": job_id })).await;
    assert!(done, "the DELETE_USER job did not succeed: {body}");

    // Subscribers were told: one DELETED per video.
    let mut deleted = Vec::new();
    while deleted.len() < videos.len() {
        let message = tokio::time::timeout(Duration::from_secs(10), bus.recv()).await.expect("DELETED events").unwrap();
        if let BusMessage::Video(event) = message {
            if event.kind == EventKind::Deleted {
                deleted.push(event.video_id);
            }
        }
    }
    deleted.sort();
    assert_eq!(deleted, videos);
    // Videos and objects are gone; the bystander keeps theirs.
    for id in &videos {
        let body = ok(&app, &admin, "query($id: ID!) { video(id: $id) { id } }", json!({ "id": id })).await;
        assert!(body["video"].is_null(), "{body}");
        assert!(entities::video::Entity::find_by_id(*id).one(&app.state.db).await.unwrap().is_none());
    }
    for key in &keys {
        assert!(store.head(key).await.is_err(), "{key} is still stored");
    }
    assert!(store.head(&bystander_key).await.is_ok());
    let body = ok(&app, &bystander, "query($id: ID!) { video(id: $id) { id } }", json!({ "id": kept_video })).await;
    assert_eq!(body["video"]["id"], kept_video.to_string());

    // The address may sign up again, as a new account.
    let (_, body) = app
        .graphql(
            "mutation($input: RegisterInput!) { register(input: $input) { user { id } } }",
            json!({ "input": { "email": user.email, "password": TEST_PASSWORD, "displayName": "Again" } }),
        )
        .await;
    let again = body["data"]["register"]["user"]["id"].as_str().unwrap_or_else(|| panic!("{body}"));
    assert_ne!(again, user.id);
    let back = app.login(&user.email, TEST_PASSWORD).await;
    assert_eq!(back.id, again);

    let query = "query($f: AuditFilter) { auditLog(filter: $f) { edges { node { outcome actor { id } } } } }";
    let data = ok(&app, &admin, query, json!({ "f": { "action": "USER_DELETED", "targetId": user.id } })).await;
    assert_eq!(data["auditLog"]["edges"].as_array().unwrap().len(), 1, "{data}");
    // Deleting it again: there is no such user any more.
    let (_, body) = app.graphql_as(&admin.bearer(), DELETE_USER, json!({ "id": user.id })).await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
}

#[actix_web::test]
async fn admins_cannot_delete_themselves_or_the_last_admin() {
    let app = spawn_app_with(|s| s.workers.embedded = false).await;
    let first = admin(&app).await;
    let (_, body) = app.graphql_as(&first.bearer(), DELETE_USER, json!({ "id": first.id })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    let (_, body) = app.graphql_as(&first.bearer(), "{ me { id } }", json!({})).await;
    assert!(body["errors"].is_null(), "still there: {body}");

    // The rule itself, whoever asks: the only enabled admin is never deleted.
    let moderator = app.create_user_with_role(entities::Role::Moderator).await;
    let txn = app.state.db.begin().await.unwrap();
    let refused = reelhouse::repo::users::retire(&txn, uuid(&moderator.id), uuid(&first.id)).await.unwrap_err();
    assert_eq!(refused.code(), reelhouse::error::ErrorCode::Conflict, "{refused:?}");
    drop(txn);

    // Two admins deleting each other at the same moment: one admin remains.
    let second = admin(&app).await;
    let (first_auth, second_auth) = (first.bearer(), second.bearer());
    let (a, b) = tokio::join!(
        app.graphql_as(&first_auth, DELETE_USER, json!({ "id": second.id })),
        app.graphql_as(&second_auth, DELETE_USER, json!({ "id": first.id })),
    );
    let succeeded = [&a.1, &b.1].iter().filter(|body| body["errors"].is_null()).count();
    assert_eq!(succeeded, 1, "{a:?} {b:?}");
    let admins = entities::user::Entity::find()
        .filter(entities::user::Column::Role.eq(entities::Role::Admin))
        .filter(entities::user::Column::DeletedAt.is_null())
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(admins.len(), 1, "{admins:?}");

    // Nor demoted or disabled: whoever remains is the last enabled admin.
    let last = if a.1["errors"].is_null() { first } else { second };
    for (query, vars) in
        [(SET_USER_ROLE, json!({ "id": last.id, "role": "USER" })), (DISABLE, json!({ "id": last.id }))]
    {
        let (_, body) = app.graphql_as(&last.bearer(), query, vars).await;
        assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{query}: {body}");
    }
    let (_, body) = app.graphql_as(&last.bearer(), "{ me { role disabled } }", json!({})).await;
    assert_eq!(body["data"]["me"], json!({ "role": "ADMIN", "disabled": false }), "{body}");
    // With a second admin, either may be demoted (or disabled) again.
    let other = admin(&app).await;
    let (_, body) = app.graphql_as(&last.bearer(), SET_USER_ROLE, json!({ "id": other.id, "role": "USER" })).await;
    assert!(body["errors"].is_null(), "{body}");
}

#[actix_web::test]
async fn per_user_quota_overrides_apply_to_uploads_and_to_the_processing_budget_in_the_lease() {
    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.uploads.quota_bytes_per_user = 10_000_000;
        s.jobs.processing_budget_secs_per_day = 60;
    })
    .await;
    let admin = admin(&app).await;
    let heavy = app.register_user().await;
    let light = app.register_user().await;
    let (heavy_id, light_id) = (uuid(&heavy.id), uuid(&light.id));
    let limits = "{ me { storageQuotaBytes processingBudgetSecondsPerDay } }";
    assert_eq!(
        ok(&app, &heavy, limits, json!({})).await["me"],
        json!({ "storageQuotaBytes": 10_000_000, "processingBudgetSecondsPerDay": 60 })
    );

    // Storage: a per-user quota below the server's refuses the upload.
    let data = quota(&app, &admin, json!({ "id": heavy.id, "storage": 1000 })).await;
    assert_eq!(data["setUserQuota"]["storageQuotaBytes"], 1000);
    assert_eq!(data["setUserQuota"]["processingBudgetSecondsPerDay"], 60, "left out: unchanged (server default)");
    let upload = "mutation($i: CreateUploadInput!) { createUpload(input: $i) { id } }";
    let create = "mutation { createVideo(input: { title: \"q\" }) { id } }";
    for (who, expected) in [(&heavy, Some("PAYLOAD_TOO_LARGE")), (&light, None)] {
        let video = ok(&app, who, create, json!({})).await["createVideo"]["id"].clone();
        let input = json!({ "videoId": video, "filename": "a.mp4", "contentType": "video/mp4", "size": 2000 });
        let (_, body) = app.graphql_as(&who.bearer(), upload, json!({ "i": input })).await;
        assert_eq!(error_code(&body).as_deref(), expected, "{body}");
    }
    for bad in [json!({ "storage": -1 }), json!({ "budget": -5 })] {
        let mut variables = bad.clone();
        variables["id"] = json!(heavy.id);
        let (_, body) = app.graphql_as(&admin.bearer(), &set_quota(&variables), variables.clone()).await;
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{bad}: {body}");
    }

    // Processing: heavy used 75 s today, over the server's 60.
    usage::add_processing_seconds(&app.state.db, heavy_id, 75.0).await.unwrap();
    let db = app.state.db.clone();
    let job_of = |owner: Uuid, priority: i32| NewJob {
        kind: entities::JobKind::DeleteObjects,
        video_id: None,
        owner_id: Some(owner),
        priority,
        payload: json!({ "prefix": format!("users/{owner}/nothing/") }),
        max_attempts: 3,
    };
    let lease = |db: sea_orm::DatabaseConnection| {
        let settings = app.state.settings.jobs.clone();
        async move { queue::lease(&db, "w1", Duration::from_secs(30), &settings).await.unwrap().map(|l| l.job.id) }
    };
    // Raised to 100: heavy's job runs first (higher priority).
    quota(&app, &admin, json!({ "id": heavy.id, "budget": 100 })).await;
    let raised = enqueue(&db, job_of(heavy_id, DEFAULT_PRIORITY + 10)).await.unwrap();
    let other = enqueue(&db, job_of(light_id, DEFAULT_PRIORITY)).await.unwrap();
    assert_eq!(lease(db.clone()).await, Some(raised.id), "heavy is under their own budget");
    assert_eq!(lease(db.clone()).await, Some(other.id));

    // Lowered to 50: heavy waits while others run.
    let data = quota(&app, &admin, json!({ "id": heavy.id, "budget": 50 })).await;
    assert_eq!(data["setUserQuota"]["processingBudgetSecondsPerDay"], 50);
    assert_eq!(data["setUserQuota"]["storageQuotaBytes"], 1000, "left out: unchanged");
    let held = enqueue(&db, job_of(heavy_id, DEFAULT_PRIORITY + 10)).await.unwrap();
    let other = enqueue(&db, job_of(light_id, DEFAULT_PRIORITY)).await.unwrap();
    assert_eq!(lease(db.clone()).await, Some(other.id), "heavy is over their own budget");
    assert_eq!(lease(db.clone()).await, None);
    let (_, body) = app
        .graphql_as(
            &heavy.bearer(),
            "query($id: ID!) { job(id: $id) { status waitingFor } me { processingBudgetSecondsPerDay } }",
            json!({ "id": held.id.to_string() }),
        )
        .await;
    assert_eq!(body["data"]["job"]["waitingFor"], "PROCESSING_BUDGET", "{body}");
    assert_eq!(body["data"]["me"]["processingBudgetSecondsPerDay"], 50, "{body}");

    // 0: no budget for this user.
    let data = quota(&app, &admin, json!({ "id": heavy.id, "budget": 0 })).await;
    assert!(data["setUserQuota"]["processingBudgetSecondsPerDay"].is_null(), "{data}");
    assert_eq!(lease(db.clone()).await, Some(held.id));

    // null: back to the server defaults.
    let data = quota(&app, &admin, json!({ "id": heavy.id, "storage": null, "budget": null })).await;
    assert_eq!(data["setUserQuota"]["storageQuotaBytes"], 10_000_000);
    assert_eq!(data["setUserQuota"]["processingBudgetSecondsPerDay"], 60);
    let back = enqueue(&db, job_of(heavy_id, DEFAULT_PRIORITY)).await.unwrap();
    assert_eq!(lease(db.clone()).await, None, "over the server's 60 again");
    quota(&app, &admin, json!({ "id": heavy.id, "budget": 80 })).await;
    assert_eq!(lease(db.clone()).await, Some(back.id));

    let query = "query($f: AuditFilter) { auditLog(filter: $f) { edges { node { outcome } } } }";
    let data = ok(&app, &admin, query, json!({ "f": { "action": "QUOTA_CHANGED", "targetId": heavy.id } })).await;
    // Six changes; the refused (negative) ones changed nothing and are not recorded.
    assert_eq!(data["auditLog"]["edges"].as_array().unwrap().len(), 6, "{data}");
}

/// Two instances sharing PostgreSQL and Redis: a session revoked through one
/// closes its socket on the other at once, through the Redis access channel.
/// (Needs Redis: runs with REELHOUSE_TEST_BACKEND=postgres, skips on sqlite.)
#[actix_web::test]
async fn a_session_revoked_on_one_instance_closes_its_socket_on_another_at_once() {
    if crate::helpers::backend() != crate::helpers::Backend::Postgres {
        eprintln!("skipped: needs Redis and a shared database (REELHOUSE_TEST_BACKEND=postgres)");
        return;
    }
    let first = app_without_periodic_rechecks(|_| {}).await;
    let shared = first.state.settings.clone();
    let second = spawn_app_with(move |s| {
        s.database = shared.database.clone();
        s.storage = shared.storage.clone();
        s.redis.key_prefix = shared.redis.key_prefix.clone();
        s.auth = shared.auth.clone();
        s.workers.embedded = false;
        s.database.migrate_on_start = false;
        s.graphql.ws_recheck_ms = 600_000;
    })
    .await;
    // Both relays listen on the access channel.
    let redis = first.state.redis.clone().unwrap();
    let channel = reelhouse::access::channel(&redis);
    let listening = eventually(100, || {
        let (redis, channel) = (redis.clone(), channel.clone());
        async move {
            let mut conn = redis.connection().await.unwrap();
            let answer: (String, i64) =
                redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
            answer.1 >= 2
        }
    })
    .await;
    assert!(listening, "both instances subscribe to {channel}");

    let user = first.register_user().await;
    let other = first.login(&user.email, TEST_PASSWORD).await;
    let mut socket = subscribed(&second, &user.access_token).await;
    let mut kept = subscribed(&second, &other.access_token).await;
    let id = current_session_id(&first, &user).await;
    assert_eq!(ok(&first, &other, REVOKE, json!({ "id": id })).await["revokeSession"], true);
    let closed = closed_soon(&mut socket).await.expect("the other instance closes the socket at once");
    assert_eq!(closed, (4403, "session revoked".to_string()));
    still_open(&mut kept).await;
}
