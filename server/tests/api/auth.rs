//! Accounts, access tokens, refresh-token rotation and roles on a spawned server.

use base64::Engine;
use entities::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reelhouse::config::Secret;
use sea_orm::{ActiveModelTrait, EntityTrait, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    error_code, random_secret, spawn_app, spawn_app_with, Credentials, TestApp, TestUser, AUTH_PAYLOAD_FIELDS,
    TEST_PASSWORD,
};

const ME: &str = "{ me { id email displayName role } }";

fn register_mutation() -> String {
    format!("mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}")
}

fn login_mutation() -> String {
    format!("mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}")
}

fn refresh_mutation() -> String {
    format!("mutation($token: String!) {{ refreshToken(refreshToken: $token) {{ {AUTH_PAYLOAD_FIELDS} }} }}")
}

async fn me_code(app: &TestApp, credentials: &Credentials) -> Option<String> {
    let (status, body) = app.graphql_as(credentials, ME, json!({})).await;
    assert_eq!(status, 200, "credential problems are GraphQL errors, not HTTP errors: {body}");
    error_code(&body)
}

async fn refresh(app: &TestApp, token: &str) -> Value {
    let (status, body) = app.graphql(&refresh_mutation(), json!({ "token": token })).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[actix_web::test]
async fn register_login_and_me_round_trip() {
    let app = spawn_app().await;
    let (status, body) = app
        .graphql(
            &register_mutation(),
            json!({ "input": { "email": "  Ada@Example.COM ", "password": TEST_PASSWORD, "displayName": "Ada" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let payload = &body["data"]["register"];
    assert_eq!(payload["user"]["email"], "ada@example.com", "emails are normalized");
    assert_eq!(payload["user"]["role"], "USER");
    assert_eq!(payload["expiresIn"], 15 * 60);

    let (_, body) = app
        .graphql(&login_mutation(), json!({ "input": { "email": "ada@example.com", "password": TEST_PASSWORD } }))
        .await;
    let login = &body["data"]["login"];
    assert!(login["accessToken"].is_string(), "{body}");
    assert_ne!(login["refreshToken"], payload["refreshToken"], "each sign-in is its own session");

    let (_, body) =
        app.graphql_as(&Credentials::Bearer(login["accessToken"].as_str().unwrap().into()), ME, json!({})).await;
    assert_eq!(body["data"]["me"]["email"], "ada@example.com", "{body}");
    assert_eq!(body["data"]["me"]["displayName"], "Ada");

    // The access token carries the documented claims and a kid header.
    let token = login["accessToken"].as_str().unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some(app.state.tokens.signing_kid()));
    let claims = decode_claims(token);
    for claim in ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "role", "sid"] {
        assert!(claims.get(claim).is_some(), "missing {claim} in {claims}");
    }
    assert_eq!(claims["sub"], login["user"]["id"]);
}

#[actix_web::test]
async fn anonymous_callers_get_unauthenticated_and_public_fields_still_work() {
    let app = spawn_app().await;
    assert_eq!(me_code(&app, &Credentials::Anonymous).await.as_deref(), Some("UNAUTHENTICATED"));
    let (status, body) =
        app.graphql_as(&Credentials::Bearer("garbage".into()), "{ serverInfo { version } }", json!({})).await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "a bad token must not break public fields: {body}");
    assert_eq!(body["data"]["serverInfo"]["version"], env!("CARGO_PKG_VERSION"));
}

/// Registering a known email answers like a new sign-up (issue 18): nothing in the
/// answer says the account exists, and the account is untouched.
#[actix_web::test]
async fn registering_a_known_email_does_not_reveal_the_account() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let register = |email: String, password: &'static str| {
        let app = &app;
        async move {
            let (status, body) = app
                .graphql(
                    &register_mutation(),
                    json!({ "input": { "email": email, "password": password, "displayName": "Again" } }),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert!(body["errors"].is_null(), "the same answer as a new account: {body}");
            body["data"]["register"].clone()
        }
    };
    let fresh = register(format!("{}@example.com", Uuid::new_v4().simple()), "another horse battery 7").await;
    let known = register(user.email.to_uppercase(), "another horse battery 7").await;
    let shape = |payload: &Value| {
        (
            payload["accessToken"].as_str().map(|t| t.split('.').count()),
            payload["refreshToken"].as_str().map(str::len),
            payload["expiresIn"].clone(),
            payload["user"]["role"].clone(),
            payload["user"]["displayName"].clone(),
        )
    };
    assert_eq!(shape(&known), shape(&fresh));
    assert_eq!(known["user"]["email"], user.email.as_str());
    assert_ne!(known["user"]["id"], user.id.as_str(), "the answer names no existing account");
    // The decoy's tokens open nothing, and the account is unchanged.
    let decoy = Credentials::Bearer(known["accessToken"].as_str().unwrap().to_string());
    assert_eq!(me_code(&app, &decoy).await.as_deref(), Some("UNAUTHENTICATED"));
    let body = refresh(&app, known["refreshToken"].as_str().unwrap()).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    assert_eq!(me_code(&app, &user.bearer()).await, None);
    let again = app.login(&user.email, TEST_PASSWORD).await;
    assert_eq!(me_code(&app, &again.bearer()).await, None);
    // The owner retrying a sign-up with their own password is simply signed in.
    let own = register(user.email.clone(), TEST_PASSWORD).await;
    assert_eq!(own["user"]["id"], user.id.as_str());
    assert_eq!(me_code(&app, &Credentials::Bearer(own["accessToken"].as_str().unwrap().to_string())).await, None);
}

#[actix_web::test]
async fn weak_passwords_are_refused_with_the_policy_reason() {
    let app = spawn_app().await;
    let cases = [
        ("short1!", "at least 10 characters"),
        ("abcdefghijklmnop", "two kinds of characters"),
        ("weak@example.com", "must not be your email"),
    ];
    for (password, reason) in cases {
        let (_, body) = app
            .graphql(
                &register_mutation(),
                json!({ "input": { "email": "weak@example.com", "password": password, "displayName": "W" } }),
            )
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{password}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{password}: {message}");
    }
}

#[actix_web::test]
async fn unknown_email_and_wrong_password_get_identical_errors() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let attempt = |email: String, password: &'static str| {
        let app = &app;
        async move {
            let (status, body) =
                app.graphql(&login_mutation(), json!({ "input": { "email": email, "password": password } })).await;
            assert_eq!(status, 200);
            body["errors"].clone()
        }
    };
    let wrong_password = attempt(user.email.clone(), "wrong password 123").await;
    let unknown_email = attempt("nobody@example.com".into(), "wrong password 123").await;
    let malformed_email = attempt("not-an-email".into(), "wrong password 123").await;
    assert_eq!(wrong_password[0]["extensions"]["code"], "UNAUTHENTICATED", "{wrong_password}");
    assert_eq!(wrong_password, unknown_email);
    assert_eq!(wrong_password, malformed_email);

    // An unknown email still pays for a password hash. The bound is loose on purpose:
    // it catches the 100x gap of skipping the hash, not scheduling noise.
    let median_ms = |email: String| {
        let app = &app;
        async move {
            let mut times = Vec::new();
            for _ in 0..3 {
                let started = std::time::Instant::now();
                app.graphql(
                    &login_mutation(),
                    json!({ "input": { "email": email, "password": "wrong password 123" } }),
                )
                .await;
                times.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            times[1]
        }
    };
    let known = median_ms(user.email.clone()).await;
    let unknown = median_ms("nobody@example.com".into()).await;
    assert!(unknown * 4.0 >= known, "unknown email answered in {unknown:.1} ms, wrong password in {known:.1} ms");
}

#[actix_web::test]
async fn disabled_users_cannot_log_in_and_their_tokens_stop_working() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let victim = app.register_user().await;
    let (_, body) = app
        .graphql_as(
            &admin.bearer(),
            "mutation($id: ID!) { disableUser(id: $id) { disabled } }",
            json!({ "id": victim.id }),
        )
        .await;
    assert_eq!(body["data"]["disableUser"]["disabled"], true, "{body}");
    assert_eq!(me_code(&app, &victim.bearer()).await.as_deref(), Some("UNAUTHENTICATED"));
    let (_, body) =
        app.graphql(&login_mutation(), json!({ "input": { "email": victim.email, "password": TEST_PASSWORD } })).await;
    assert!(body["data"].is_null() || body["data"]["login"].is_null(), "{body}");
    assert!(error_code(&body).is_some(), "{body}");
}

#[actix_web::test]
async fn weak_password_hashes_are_upgraded_on_login() {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let app = spawn_app().await;
    let user = app.register_user().await;
    let weak = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(4096, 1, 1, None).unwrap(),
    )
    .hash_password(TEST_PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
    .unwrap()
    .to_string();
    let id = Uuid::parse_str(&user.id).unwrap();
    let model = entities::user::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap();
    let mut active: entities::user::ActiveModel = model.into();
    active.password_hash = Set(weak.clone());
    active.update(&app.state.db).await.unwrap();

    app.login(&user.email, TEST_PASSWORD).await;
    let stored = entities::user::Entity::find_by_id(id).one(&app.state.db).await.unwrap().unwrap().password_hash;
    assert_ne!(stored, weak);
    assert!(stored.starts_with("$argon2id$") && stored.contains("m=19456,t=2,p=1"), "{stored}");
    app.login(&user.email, TEST_PASSWORD).await;
}

fn decode_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn sign(claims: &Value, kid: Option<&str>, key: &[u8], alg: Algorithm) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key)).unwrap()
}

fn unsigned(claims: &Value, kid: &str) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.", b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid })), b64(claims))
}

#[actix_web::test]
async fn forged_access_tokens_are_refused() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let genuine = decode_claims(&user.access_token);
    let key = app.state.keys.jwt.clone();
    let kid = app.state.tokens.signing_kid().to_string();
    let now = chrono::Utc::now().timestamp();
    let with = |field: &str, value: Value| {
        let mut claims = genuine.clone();
        claims[field] = value;
        claims
    };

    // The harness forges correctly: the same claims, re-signed with the real key, pass.
    let control = sign(&with("jti", json!(Uuid::new_v4().to_string())), Some(&kid), &key, Algorithm::HS256);
    assert_eq!(me_code(&app, &Credentials::Bearer(control)).await, None);

    let public_key_bytes = b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
    let forged: Vec<(&str, String)> = vec![
        ("alg none", unsigned(&genuine, &kid)),
        (
            "HS256 with another key",
            sign(&genuine, Some(&kid), b"another key entirely, not the server's", Algorithm::HS256),
        ),
        ("public key used as HS256 secret", sign(&genuine, Some(&kid), public_key_bytes, Algorithm::HS256)),
        ("HS512 with the real key", sign(&genuine, Some(&kid), &key, Algorithm::HS512)),
        ("unknown kid", sign(&genuine, Some("0011223344556677"), &key, Algorithm::HS256)),
        ("no kid", sign(&genuine, None, &key, Algorithm::HS256)),
        ("wrong aud", sign(&with("aud", json!("someone-else")), Some(&kid), &key, Algorithm::HS256)),
        ("wrong iss", sign(&with("iss", json!("https://evil.example")), Some(&kid), &key, Algorithm::HS256)),
        ("expired", sign(&with("exp", json!(now - 3600)), Some(&kid), &key, Algorithm::HS256)),
        ("nbf in the future", sign(&with("nbf", json!(now + 3600)), Some(&kid), &key, Algorithm::HS256)),
        ("unknown session", sign(&with("sid", json!(Uuid::now_v7().to_string())), Some(&kid), &key, Algorithm::HS256)),
        ("refresh token as access token", user.refresh_token.clone()),
        ("tampered payload", {
            let mut parts: Vec<String> = user.access_token.split('.').map(str::to_string).collect();
            parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::to_vec(&with("role", json!("ADMIN"))).unwrap());
            parts.join(".")
        }),
    ];
    for (name, token) in forged {
        assert_eq!(me_code(&app, &Credentials::Bearer(token)).await.as_deref(), Some("UNAUTHENTICATED"), "{name}");
    }
    assert_eq!(me_code(&app, &user.bearer()).await, None, "the genuine token still works");
}

#[actix_web::test]
async fn tokens_signed_with_a_retired_key_are_refused() {
    let old_secret = random_secret();
    let new_secret = random_secret();
    let old = {
        let old_secret = old_secret.clone();
        spawn_app_with(move |s| s.auth.jwt_secret = Some(Secret::new(old_secret))).await
    };
    let user = old.register_user().await;
    let share_database = |s: &mut reelhouse::config::Settings| {
        s.server.data_dir = old.state.settings.server.data_dir.clone();
        s.database.url = old.state.settings.database.url.clone();
    };

    let rotated = spawn_app_with(|s| {
        share_database(s);
        s.auth.jwt_secret = Some(Secret::new(new_secret.clone()));
        s.auth.previous_jwt_secrets = vec![Secret::new(old_secret.clone())];
    })
    .await;
    assert_eq!(me_code(&rotated, &user.bearer()).await, None, "the previous key still verifies");
    let fresh = rotated.login(&user.email, TEST_PASSWORD).await;
    assert_eq!(
        jsonwebtoken::decode_header(&fresh.access_token).unwrap().kid.as_deref(),
        Some(rotated.state.tokens.signing_kid())
    );
    assert_ne!(rotated.state.tokens.signing_kid(), old.state.tokens.signing_kid(), "the current key signs");

    let retired = spawn_app_with(|s| {
        share_database(s);
        s.auth.jwt_secret = Some(Secret::new(new_secret.clone()));
    })
    .await;
    assert_eq!(me_code(&retired, &user.bearer()).await.as_deref(), Some("UNAUTHENTICATED"), "retired key");
    assert_eq!(me_code(&retired, &fresh.bearer()).await, None, "tokens of the current key still work");
}

#[actix_web::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let app = spawn_app().await;
    let user = app.register_user().await;

    let body = refresh(&app, &user.refresh_token).await;
    let second = &body["data"]["refreshToken"];
    let second_refresh = second["refreshToken"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let second_access = second["accessToken"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, user.refresh_token);
    assert_eq!(me_code(&app, &Credentials::Bearer(second_access.clone())).await, None);

    let body = refresh(&app, &second_refresh).await;
    let third_refresh = body["data"]["refreshToken"]["refreshToken"].as_str().unwrap().to_string();
    let third_access = body["data"]["refreshToken"]["accessToken"].as_str().unwrap().to_string();

    // Presenting the first (rotated) token again is reuse: the whole family ends.
    let body = refresh(&app, &user.refresh_token).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    let body = refresh(&app, &third_refresh).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "the newest token stops working: {body}");
    assert_eq!(me_code(&app, &Credentials::Bearer(third_access)).await.as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(me_code(&app, &user.bearer()).await.as_deref(), Some("UNAUTHENTICATED"));

    // Another session of the same user is untouched.
    let other = app.login(&user.email, TEST_PASSWORD).await;
    assert_eq!(me_code(&app, &other.bearer()).await, None);
    let body = refresh(&app, "not-a-refresh-token").await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"));
}

#[actix_web::test]
async fn concurrent_refresh_of_one_token_has_exactly_one_winner() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let user = app.register_user().await;
        let (a, b) = futures::join!(refresh(&app, &user.refresh_token), refresh(&app, &user.refresh_token));
        let winners = [&a, &b].iter().filter(|body| body["data"]["refreshToken"]["accessToken"].is_string()).count();
        assert_eq!(winners, 1, "{a}\n{b}");
        let winner = if error_code(&a).is_none() { &a } else { &b };
        let loser = if error_code(&a).is_none() { &b } else { &a };
        assert_eq!(error_code(loser).as_deref(), Some("UNAUTHENTICATED"), "{loser}");
        // The loser presented a token that had just been rotated: that is reuse, so
        // (no grace window) the session ends for the winner too.
        let next = winner["data"]["refreshToken"]["refreshToken"].as_str().unwrap();
        let body = refresh(&app, next).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    }
}

#[actix_web::test]
async fn logout_ends_one_session() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let other = app.login(&user.email, TEST_PASSWORD).await;
    let logout = "mutation($token: String!) { logout(refreshToken: $token) }";
    let (_, body) = app.graphql(logout, json!({ "token": user.refresh_token })).await;
    assert_eq!(body["data"]["logout"], true, "{body}");
    assert_eq!(me_code(&app, &user.bearer()).await.as_deref(), Some("UNAUTHENTICATED"));
    let body = refresh(&app, &user.refresh_token).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"));
    assert_eq!(me_code(&app, &other.bearer()).await, None, "the other session lives on");
    let (_, body) = app.graphql(logout, json!({ "token": "unknown" })).await;
    assert_eq!(body["data"]["logout"], false);
}

#[actix_web::test]
async fn revoke_all_sessions_ends_every_session() {
    let app = spawn_app().await;
    let user = app.register_user().await;
    let other = app.login(&user.email, TEST_PASSWORD).await;
    let stranger = app.register_user().await;
    let (_, body) = app.graphql_as(&other.bearer(), "mutation { revokeAllSessions }", json!({})).await;
    assert_eq!(body["data"]["revokeAllSessions"], true, "{body}");
    for session in [&user, &other] {
        assert_eq!(me_code(&app, &session.bearer()).await.as_deref(), Some("UNAUTHENTICATED"));
        let body = refresh(&app, &session.refresh_token).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"));
    }
    assert_eq!(me_code(&app, &stranger.bearer()).await, None, "other users are untouched");
    let (_, body) = app.graphql("mutation { revokeAllSessions }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"));
}

/// Each role against each permission-gated field: allowed, FORBIDDEN, or (anonymous)
/// UNAUTHENTICATED.
#[actix_web::test]
async fn every_role_against_every_gated_field() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let callers: Vec<(&str, Option<TestUser>)> = vec![
        ("ADMIN", Some(admin.clone())),
        ("MODERATOR", Some(app.create_user_with_role(Role::Moderator).await)),
        ("USER", Some(app.create_user_with_role(Role::User).await)),
        ("VIEWER", Some(app.create_user_with_role(Role::Viewer).await)),
        ("anonymous", None),
    ];
    // (field, document, roles allowed)
    let fields: [(&str, &str, &[&str]); 6] = [
        ("me", "{ me { id } }", &["ADMIN", "MODERATOR", "USER", "VIEWER"]),
        ("apiKeys", "{ apiKeys { id } }", &["ADMIN", "MODERATOR", "USER", "VIEWER"]),
        ("users", "{ users(first: 5) { edges { node { id email } } pageInfo { hasNextPage } } }", &["ADMIN"]),
        ("setUserRole", "mutation($id: ID!) { setUserRole(id: $id, role: VIEWER) { role } }", &["ADMIN"]),
        ("disableUser", "mutation($id: ID!) { disableUser(id: $id) { disabled } }", &["ADMIN"]),
        (
            "createApiKey",
            "mutation { createApiKey(name: \"ci\", role: VIEWER) { secret } }",
            &["ADMIN", "MODERATOR", "USER"],
        ),
    ];
    for (field, document, allowed) in fields {
        for (role, caller) in &callers {
            // A fresh target per attempt, so one caller's success does not change the next.
            let target = app.register_user().await;
            let credentials = caller.as_ref().map_or(Credentials::Anonymous, TestUser::bearer);
            let (status, body) = app.graphql_as(&credentials, document, json!({ "id": target.id })).await;
            assert_eq!(status, 200, "{field} as {role}: {body}");
            let expected = match (caller, allowed.contains(role)) {
                (None, _) => Some("UNAUTHENTICATED"),
                (Some(_), true) => None,
                (Some(_), false) => Some("FORBIDDEN"),
            };
            assert_eq!(error_code(&body).as_deref(), expected, "{field} as {role}: {body}");
            if expected.is_none() {
                assert!(!body["data"][field].is_null(), "{field} as {role}: {body}");
            }
        }
    }
}

#[actix_web::test]
async fn demotion_applies_on_the_next_request() {
    let app = spawn_app().await;
    let admin = app.create_user_with_role(Role::Admin).await;
    let other_admin = app.create_user_with_role(Role::Admin).await;
    let users = "{ users(first: 1) { edges { cursor } pageInfo { hasNextPage endCursor } } }";
    let (_, body) = app.graphql_as(&other_admin.bearer(), users, json!({})).await;
    assert_eq!(error_code(&body), None, "{body}");
    assert_eq!(body["data"]["users"]["pageInfo"]["hasNextPage"], true, "{body}");
    let (_, body) = app
        .graphql_as(
            &admin.bearer(),
            "mutation($id: ID!) { setUserRole(id: $id, role: USER) { role } }",
            json!({ "id": other_admin.id }),
        )
        .await;
    assert_eq!(body["data"]["setUserRole"]["role"], "USER", "{body}");
    let (_, body) = app.graphql_as(&other_admin.bearer(), users, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
}

/// A session ends `auth.session_max_lifetime_secs` after sign-in, however often it is
/// refreshed (issue 18). The family's start is moved back instead of waiting.
#[actix_web::test]
async fn refreshing_never_outlives_the_absolute_session_lifetime() {
    use entities::{refresh_token, refresh_token_family};
    use sea_orm::{ColumnTrait, QueryFilter};
    let app = spawn_app_with(|s| s.auth.session_max_lifetime_secs = 7 * 24 * 3600).await;
    let user = app.register_user().await;
    let user_id = Uuid::parse_str(&user.id).unwrap();
    let family = refresh_token_family::Entity::find()
        .filter(refresh_token_family::Column::UserId.eq(user_id))
        .one(&app.state.db)
        .await
        .unwrap()
        .unwrap();
    // A refresh token never expires after its family's end.
    let tokens = refresh_token::Entity::find()
        .filter(refresh_token::Column::FamilyId.eq(family.id))
        .all(&app.state.db)
        .await
        .unwrap();
    let end = family.created_at + chrono::Duration::days(7);
    assert!(tokens.iter().all(|t| t.expires_at <= end), "{tokens:?} outlive {end}");

    let body = refresh(&app, &user.refresh_token).await;
    let next = body["data"]["refreshToken"]["refreshToken"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    let mut active: refresh_token_family::ActiveModel = family.into();
    active.created_at = Set(chrono::Utc::now() - chrono::Duration::days(8));
    let family = active.update(&app.state.db).await.unwrap();
    let body = refresh(&app, &next).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "an old session is over: {body}");
    let family = refresh_token_family::Entity::find_by_id(family.id).one(&app.state.db).await.unwrap().unwrap();
    assert!(family.revoked_at.is_some(), "and revoked, so its access tokens stop too");
}
