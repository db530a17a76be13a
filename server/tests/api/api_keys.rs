//! API keys: shown once, stored hashed, usable as `X-Api-Key`, revocable.

use entities::Role;
use sea_orm::EntityTrait;
use serde_json::json;

use crate::helpers::{error_code, spawn_app, Credentials, TestApp, TestUser};

const CREATE: &str =
    "mutation($name: String!, $role: Role) { createApiKey(name: $name, role: $role) { apiKey { id name role prefix createdAt lastUsedAt } secret } }";

async fn create_key(app: &TestApp, owner: &TestUser, role: Option<&str>) -> (String, String) {
    let (status, body) = app.graphql_as(&owner.bearer(), CREATE, json!({ "name": "ci", "role": role })).await;
    assert_eq!(status, 200, "{body}");
    let payload = &body["data"]["createApiKey"];
    let secret = payload["secret"].as_str().unwrap_or_else(|| panic!("{body}")).to_string();
    (payload["apiKey"]["id"].as_str().unwrap().to_string(), secret)
}

#[actix_web::test]
async fn api_key_is_shown_once_and_only_its_hash_is_stored() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let (status, body) = app.graphql_as(&owner.bearer(), CREATE, json!({ "name": "deploy bot", "role": null })).await;
    assert_eq!(status, 200, "{body}");
    let payload = &body["data"]["createApiKey"];
    let secret = payload["secret"].as_str().unwrap();
    let (random, checksum) = secret.strip_prefix("rh_live_").unwrap().split_once('_').unwrap();
    assert_eq!((random.len(), checksum.len()), (32, 6), "{secret}");
    assert!(random.chars().chain(checksum.chars()).all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(payload["apiKey"]["role"], "USER", "defaults to the owner's role");
    assert_eq!(payload["apiKey"]["name"], "deploy bot");
    assert!(secret.starts_with(payload["apiKey"]["prefix"].as_str().unwrap()));
    assert!(payload["apiKey"]["lastUsedAt"].is_null());

    let rows = entities::api_key::Entity::find().into_json().all(&app.state.db).await.unwrap();
    assert_eq!(rows.len(), 1);
    let dump = serde_json::to_string(&rows).unwrap();
    assert!(!dump.contains(secret), "the raw secret is in the database: {dump}");
    assert!(!dump.contains(random), "the random part is in the database: {dump}");

    // Listing never shows the secret again.
    let (_, body) = app.graphql_as(&owner.bearer(), "{ apiKeys { id name prefix } }", json!({})).await;
    assert_eq!(body["data"]["apiKeys"][0]["id"], payload["apiKey"]["id"], "{body}");
    assert!(!body.to_string().contains(secret));
}

#[actix_web::test]
async fn api_key_authenticates_and_revocation_applies_on_the_next_request() {
    let app = spawn_app().await;
    let owner = app.register_user().await;
    let (id, secret) = create_key(&app, &owner, None).await;
    let key = Credentials::ApiKey(secret.clone());

    let (_, body) = app.graphql_as(&key, "{ me { id } }", json!({})).await;
    assert_eq!(body["data"]["me"]["id"], owner.id.as_str(), "{body}");
    let (_, body) = app.graphql_as(&owner.bearer(), "{ apiKeys { lastUsedAt } }", json!({})).await;
    assert!(body["data"]["apiKeys"][0]["lastUsedAt"].is_string(), "last use is recorded: {body}");

    let (_, body) =
        app.graphql_as(&owner.bearer(), "mutation($id: ID!) { revokeApiKey(id: $id) }", json!({ "id": id })).await;
    assert_eq!(body["data"]["revokeApiKey"], true, "{body}");
    let (_, body) = app.graphql_as(&key, "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");

    // Someone else's key id is not found, and malformed keys are refused.
    let stranger = app.register_user().await;
    let (_, other_secret) = create_key(&app, &stranger, None).await;
    let (other_id, _) = create_key(&app, &stranger, None).await;
    let (_, body) = app
        .graphql_as(&owner.bearer(), "mutation($id: ID!) { revokeApiKey(id: $id) }", json!({ "id": other_id }))
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("NOT_FOUND"), "{body}");
    let mut typo = other_secret.clone();
    typo.pop();
    typo.push(if other_secret.ends_with('x') { 'y' } else { 'x' });
    for bad in [typo, "rh_live_nope".to_string(), String::new()] {
        let (_, body) = app.graphql_as(&Credentials::ApiKey(bad.clone()), "{ me { id } }", json!({})).await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{bad}: {body}");
    }
    let (_, body) = app.graphql_as(&Credentials::ApiKey(other_secret), "{ me { id } }", json!({})).await;
    assert_eq!(body["data"]["me"]["id"], stranger.id.as_str(), "{body}");
}

#[actix_web::test]
async fn a_key_cannot_outrank_its_owner() {
    let app = spawn_app().await;
    let user = app.create_user_with_role(Role::User).await;
    for role in ["ADMIN", "MODERATOR"] {
        let (_, body) = app.graphql_as(&user.bearer(), CREATE, json!({ "name": "x", "role": role })).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{role}: {body}");
    }
    // A VIEWER key acts as a viewer, even though its owner is a USER.
    let (_, viewer_key) = create_key(&app, &user, Some("VIEWER")).await;
    let (_, body) =
        app.graphql_as(&Credentials::ApiKey(viewer_key), CREATE, json!({ "name": "y", "role": null })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");

    // An admin's ADMIN key works for admin-only fields.
    let admin = app.create_user_with_role(Role::Admin).await;
    let (_, admin_key) = create_key(&app, &admin, Some("ADMIN")).await;
    let (_, body) =
        app.graphql_as(&Credentials::ApiKey(admin_key.clone()), "{ users { edges { node { id } } } }", json!({})).await;
    assert_eq!(error_code(&body), None, "{body}");
    // Even an ADMIN key cannot mint keys: a leaked key must not outlive its revocation.
    let (_, body) =
        app.graphql_as(&Credentials::ApiKey(admin_key), CREATE, json!({ "name": "z", "role": "VIEWER" })).await;
    assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{body}");
}
