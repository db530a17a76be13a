//! The session cache: access-token checks answered from memory, forgotten the moment
//! an access change names them, on this instance and (through Redis) on every other.
//! The two-instance tests need Redis and a shared database
//! (REELHOUSE_TEST_BACKEND=postgres) and skip on sqlite.

use entities::refresh_token_family;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::fanout::{second_instance, wait_for_relays};
use crate::helpers::{
    backend, error_code, eventually, service_env, socket_of, spawn_app_with, Backend, TcpProxy, TestApp, TestUser,
};

const ME: &str = "query { me { id role } }";
const ADMIN_ONLY: &str = "query { users(first: 1) { edges { node { id } } } }";

async fn me(app: &TestApp, who: &TestUser) -> Value {
    app.graphql_as(&who.bearer(), ME, json!({})).await.1
}

fn authenticated(body: &Value) -> bool {
    body["data"]["me"]["id"].is_string()
}

async fn session_of(app: &TestApp, who: &TestUser) -> Uuid {
    let user = Uuid::parse_str(&who.id).unwrap();
    refresh_token_family::Entity::find()
        .filter(refresh_token_family::Column::UserId.eq(user))
        .one(&app.state.db)
        .await
        .unwrap()
        .expect("the user has a session")
        .id
}

/// A request whose session is cached reads no database: a revocation written
/// behind the cache's back (no access change) is not seen, which is exactly why
/// every path that revokes announces it. Once announced, the very next request
/// is refused.
#[actix_web::test]
async fn a_cached_session_is_answered_from_memory_until_a_change_names_it() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register_user().await;
    let sessions = app.state.access_signals.sessions();
    if !eventually(100, || async { sessions.is_trusted() }).await {
        panic!("the session cache never became trusted");
    }
    assert!(authenticated(&me(&app, &user).await));
    let sid = session_of(&app, &user).await;
    assert!(matches!(sessions.get(sid), reelhouse::access::sessions::Lookup::Hit(_)), "cached after one request");

    refresh_token_family::Entity::update_many()
        .col_expr(refresh_token_family::Column::RevokedAt, sea_orm::sea_query::Expr::value(chrono::Utc::now()))
        .filter(refresh_token_family::Column::Id.eq(sid))
        .exec(&app.state.db)
        .await
        .unwrap();
    assert!(authenticated(&me(&app, &user).await), "a hit does not read the database");

    let user_id = Uuid::parse_str(&user.id).unwrap();
    app.state.access_signals.announce(reelhouse::access::AccessChange::session(user_id, sid)).await;
    let body = me(&app, &user).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
}

/// Signing out revokes the session for the very next request (the logout path
/// announces it; it did not before the cache existed).
#[actix_web::test]
async fn logout_ends_a_cached_session_at_once() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register_user().await;
    assert!(eventually(100, || async { app.state.access_signals.sessions().is_trusted() }).await);
    assert!(authenticated(&me(&app, &user).await));
    assert!(authenticated(&me(&app, &user).await));
    let (status, body) =
        app.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": user.refresh_token })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["logout"], true, "{body}");
    let body = me(&app, &user).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
}

#[actix_web::test]
async fn the_cache_is_bounded_by_its_capacity() {
    let app = spawn_app_with(|s| s.auth.session_cache_capacity = 2).await;
    assert!(eventually(100, || async { app.state.access_signals.sessions().is_trusted() }).await);
    let mut users = Vec::new();
    for _ in 0..5 {
        let user = app.register_user().await;
        assert!(authenticated(&me(&app, &user).await));
        assert!(app.state.access_signals.sessions().len() <= 2);
        users.push(user);
    }
    // Evicted sessions are read again, not refused.
    for user in &users {
        assert!(authenticated(&me(&app, user).await));
    }
}

fn skip() -> bool {
    if backend() != Backend::Postgres {
        eprintln!("skipped: two instances need Redis and a shared database (REELHOUSE_TEST_BACKEND=postgres)");
        return true;
    }
    false
}

async fn trusted(app: &TestApp) {
    let ok = eventually(100, || async { app.state.access_signals.sessions().is_trusted() }).await;
    assert!(ok, "the session cache never became trusted (relay not subscribed)");
}

/// Revocation, demotion and disabling on instance A apply to the very next request
/// on instance B, whose cache held the session.
#[actix_web::test]
async fn revocation_role_change_and_disable_reach_the_cache_of_another_instance_at_once() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let b = second_instance(&a, None).await;
    wait_for_relays(&a, 2).await;
    trusted(&a).await;
    trusted(&b).await;
    let admin = a.create_user_with_role(entities::Role::Admin).await;

    // Revocation (revokeSession by an admin, on A).
    let user = a.register_user().await;
    assert!(authenticated(&me(&b, &user).await));
    let sid = session_of(&a, &user).await;
    assert!(matches!(b.state.access_signals.sessions().get(sid), reelhouse::access::sessions::Lookup::Hit(_)));
    let (_, body) =
        a.graphql_as(&admin.bearer(), "mutation($id: ID!) { revokeSession(id: $id) }", json!({ "id": sid })).await;
    assert_eq!(body["data"]["revokeSession"], true, "{body}");
    let body = me(&b, &user).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "revoked on A, still served on B: {body}");

    // Demotion: an admin's token keeps its ADMIN claim, the cached role goes.
    let other_admin = a.create_user_with_role(entities::Role::Admin).await;
    let (_, body) = b.graphql_as(&other_admin.bearer(), ADMIN_ONLY, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    let (_, body) = a
        .graphql_as(
            &admin.bearer(),
            "mutation($id: ID!) { setUserRole(id: $id, role: USER) { role } }",
            json!({ "id": other_admin.id }),
        )
        .await;
    assert_eq!(body["data"]["setUserRole"]["role"], "USER", "{body}");
    let (_, body) = b.graphql_as(&other_admin.bearer(), ADMIN_ONLY, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "demoted on A, still ADMIN on B: {body}");

    // Disabling.
    let victim = a.register_user().await;
    assert!(authenticated(&me(&b, &victim).await));
    let (_, body) = a
        .graphql_as(
            &admin.bearer(),
            "mutation($id: ID!) { disableUser(id: $id) { disabled } }",
            json!({ "id": victim.id }),
        )
        .await;
    assert_eq!(body["data"]["disableUser"]["disabled"], true, "{body}");
    let body = me(&b, &victim).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "disabled on A, still served on B: {body}");
}

/// While B's relay cannot hear A (Redis cut), B's cache is not trusted: a session
/// revoked on A meanwhile is refused on B by the database, not served from memory.
#[actix_web::test]
async fn without_the_change_stream_the_database_answers() {
    if skip() {
        return;
    }
    let a = spawn_app_with(|s| s.workers.embedded = false).await;
    let mut proxy = TcpProxy::start(socket_of(&service_env("REELHOUSE_TEST_REDIS_URL"))).await;
    let b = second_instance(&a, Some(format!("redis://127.0.0.1:{}", proxy.port))).await;
    wait_for_relays(&a, 2).await;
    trusted(&b).await;
    let user = a.register_user().await;
    assert!(authenticated(&me(&b, &user).await));
    let sid = session_of(&a, &user).await;
    assert!(matches!(b.state.access_signals.sessions().get(sid), reelhouse::access::sessions::Lookup::Hit(_)));

    proxy.cut().await;
    let untrusted = eventually(100, || async { !b.state.access_signals.sessions().is_trusted() }).await;
    assert!(untrusted, "B's cache stayed trusted without its relay");
    let (_, body) =
        a.graphql("mutation($t: String!) { logout(refreshToken: $t) }", json!({ "t": user.refresh_token })).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    let body = me(&b, &user).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    proxy.restore().await;
    trusted(&b).await;
    let body = me(&b, &user).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "reconnected with a stale entry: {body}");
}
