//! TOTP two-factor sign-in on a spawned server: enrolment, confirmation, sign-in
//! with codes, replay, recovery codes, rate limits, API keys, disabling, and the
//! secret sealed at rest. Codes are computed here from the returned secret with
//! HMAC-SHA1 (RFC 4226/6238), independently of the server's code.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use entities::{audit_event, refresh_token_family, totp_recovery_code, user};
use hmac::{Hmac, Mac};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{error_code, spawn_app_with, Credentials, TestApp, TestUser, AUTH_PAYLOAD_FIELDS, TEST_PASSWORD};

const ENROLL: &str = "mutation { enrollTotp { secret otpauthUrl } }";
const CONFIRM: &str = "mutation($code: String!) { confirmTotp(code: $code) }";
const DISABLE: &str = "mutation($code: String!) { disableTotp(code: $code) }";
const ME: &str = "{ me { id totpEnabled } }";

/// Sign-ins per account and address are raised (these tests sign in many times
/// from 127.0.0.1); so is the `mfa` policy unless `default_mfa_limit`.
async fn spawn(default_mfa_limit: bool) -> TestApp {
    spawn_app_with(|settings| {
        let mut raise = vec![reelhouse::limits::Policy::Auth];
        if !default_mfa_limit {
            raise.push(reelhouse::limits::Policy::Mfa);
        }
        for policy in raise {
            settings
                .rate_limit
                .policies
                .insert(policy, reelhouse::config::rate_limit::PolicySettings::new(10_000, 60, 10_000, false));
        }
    })
    .await
}

fn login_mutation() -> String {
    format!("mutation($input: LoginInput!) {{ login(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}")
}

async fn login(app: &TestApp, email: &str, code: Option<&str>) -> Value {
    let mut input = json!({ "email": email, "password": TEST_PASSWORD });
    if let Some(code) = code {
        input["totpCode"] = json!(code);
    }
    let (status, body) = app.graphql(&login_mutation(), json!({ "input": input })).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn signed_in(body: &Value) -> bool {
    body["errors"].is_null() && body["data"]["login"]["accessToken"].is_string()
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// RFC 4648 base32 (no padding), as in the secret and the otpauth URI.
fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|a| *a == c.to_ascii_uppercase()).expect("base32") as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

/// An authenticator app: RFC 6238 with HMAC-SHA1, 6 digits, 30 s, that never
/// shows the server a step it has already used.
struct Authenticator {
    key: Vec<u8>,
    last_step: Option<u64>,
}

impl Authenticator {
    fn new(secret: &str) -> Self {
        let key = base32_decode(secret);
        assert!(key.len() >= 16, "a secret of at least 128 bits, got {}", key.len());
        Self { key, last_step: None }
    }

    fn code_at(&self, step: u64) -> String {
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&self.key).unwrap();
        mac.update(&step.to_be_bytes());
        let hash = mac.finalize().into_bytes();
        let offset = usize::from(hash[19] & 0x0f);
        let value = u32::from_be_bytes([hash[offset] & 0x7f, hash[offset + 1], hash[offset + 2], hash[offset + 3]]);
        format!("{:06}", value % 1_000_000)
    }

    /// A code for the current step, or the next one after the last used (the
    /// server takes one step of skew); waits for the clock when both are used.
    async fn next_code(&mut self) -> String {
        loop {
            let now = now_unix() / 30;
            let step = self.last_step.map_or(now, |last| (last + 1).max(now));
            if step <= now + 1 {
                self.last_step = Some(step);
                return self.code_at(step);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The code last handed out (for replays).
    fn last_code(&self) -> String {
        self.code_at(self.last_step.expect("a code was used"))
    }

    /// Six digits that are no valid code anywhere near now.
    fn wrong_code(&self) -> String {
        let now = now_unix() / 30;
        let valid: Vec<String> = (now.saturating_sub(3)..=now + 3).map(|step| self.code_at(step)).collect();
        (10..).map(|offset| self.code_at(now + offset)).find(|code| !valid.contains(code)).unwrap()
    }
}

async fn enroll(app: &TestApp, user: &TestUser) -> (String, String) {
    let (status, body) = app.graphql_as(&user.bearer(), ENROLL, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    let enrollment = &body["data"]["enrollTotp"];
    (enrollment["secret"].as_str().unwrap().to_string(), enrollment["otpauthUrl"].as_str().unwrap().to_string())
}

/// Enrol and confirm; returns the authenticator and the recovery codes.
async fn enable(app: &TestApp, user: &TestUser) -> (Authenticator, Vec<String>) {
    let (secret, _) = enroll(app, user).await;
    let mut authenticator = Authenticator::new(&secret);
    let code = authenticator.next_code().await;
    let (_, body) = app.graphql_as(&user.bearer(), CONFIRM, json!({ "code": code })).await;
    assert!(body["errors"].is_null(), "{body}");
    let codes = body["data"]["confirmTotp"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string());
    (authenticator, codes.collect())
}

async fn totp_enabled(app: &TestApp, credentials: &Credentials) -> bool {
    let (_, body) = app.graphql_as(credentials, ME, json!({})).await;
    assert!(body["errors"].is_null(), "{body}");
    body["data"]["me"]["totpEnabled"].as_bool().unwrap()
}

async fn user_row(app: &TestApp, user: &TestUser) -> user::Model {
    user::Entity::find_by_id(Uuid::parse_str(&user.id).unwrap()).one(&app.state.db).await.unwrap().unwrap()
}

async fn sessions_of(app: &TestApp, user: &TestUser) -> u64 {
    refresh_token_family::Entity::find()
        .filter(refresh_token_family::Column::UserId.eq(Uuid::parse_str(&user.id).unwrap()))
        .count(&app.state.db)
        .await
        .unwrap()
}

async fn audit_actions(app: &TestApp, user: &TestUser) -> Vec<(String, String)> {
    audit_event::Entity::find()
        .filter(audit_event::Column::TargetId.eq(user.id.clone()))
        .all(&app.state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.action, row.outcome))
        .collect()
}

#[actix_web::test]
async fn totp_enrolment_sign_in_replay_and_recovery_codes() {
    let app = spawn(false).await;
    let user = app.register_user().await;
    assert!(!totp_enabled(&app, &user.bearer()).await);

    // Enrolment: a secret and a URI authenticator apps read; not in force yet.
    let (first_secret, _) = enroll(&app, &user).await;
    let (secret, otpauth_url) = enroll(&app, &user).await;
    assert_ne!(first_secret, secret, "a new enrolment replaces the pending secret");
    let url = url::Url::parse(&otpauth_url).unwrap();
    assert_eq!((url.scheme(), url.host_str()), ("otpauth", Some("totp")));
    let params: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(params["secret"], secret);
    assert_eq!(params["issuer"], "reelhouse");
    assert_eq!(
        (params["algorithm"].as_str(), params["digits"].as_str(), params["period"].as_str()),
        ("SHA1", "6", "30")
    );
    assert_eq!(url.path(), format!("/reelhouse:{}", user.email));
    assert!(!totp_enabled(&app, &user.bearer()).await);
    assert!(signed_in(&login(&app, &user.email, None).await), "not in force before confirmation");

    // The secret is sealed at rest: neither its base32 nor its bytes are in the row.
    let row = user_row(&app, &user).await;
    let stored = row.totp_secret.clone().expect("a pending secret is stored");
    assert!(stored.starts_with("enc1:"), "{stored}");
    assert!(!stored.contains(&secret) && !stored.to_uppercase().contains(&secret), "{stored}");
    let raw = base32_decode(&secret);
    assert!(!stored.as_bytes().windows(raw.len()).any(|w| w == raw.as_slice()));
    assert!(row.totp_enabled_at.is_none());

    // Confirmation: the old pending secret's code and a wrong code are refused.
    let mut authenticator = Authenticator::new(&secret);
    let stale = Authenticator::new(&first_secret).code_at(now_unix() / 30);
    for code in [stale, authenticator.wrong_code()] {
        if authenticator.code_at(now_unix() / 30) == code {
            continue; // a one-in-a-million collision with the right code
        }
        let (_, body) = app.graphql_as(&user.bearer(), CONFIRM, json!({ "code": code })).await;
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    }
    assert!(!totp_enabled(&app, &user.bearer()).await);
    let code = authenticator.next_code().await;
    let (_, body) = app.graphql_as(&user.bearer(), CONFIRM, json!({ "code": code })).await;
    assert!(body["errors"].is_null(), "{body}");
    let recovery: Vec<String> =
        body["data"]["confirmTotp"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(recovery.len(), 10);
    assert_eq!(recovery.iter().collect::<std::collections::HashSet<_>>().len(), 10, "distinct codes");
    assert!(totp_enabled(&app, &user.bearer()).await);
    let (_, body) = app.graphql_as(&user.bearer(), ENROLL, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "no enrolment while TOTP is on: {body}");
    let (_, body) = app.graphql_as(&user.bearer(), CONFIRM, json!({ "code": authenticator.wrong_code() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");

    // Recovery codes are stored as hashes only.
    let rows = totp_recovery_code::Entity::find()
        .filter(totp_recovery_code::Column::UserId.eq(row.id))
        .all(&app.state.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    for row in &rows {
        assert!(recovery.iter().all(|code| !row.code_hash.contains(code.as_str())));
        assert_eq!(row.code_hash.len(), 64);
    }

    // Without a code: MFA_REQUIRED, and no session starts.
    let sessions = sessions_of(&app, &user).await;
    let body = login(&app, &user.email, None).await;
    assert_eq!(error_code(&body).as_deref(), Some("MFA_REQUIRED"), "{body}");
    assert!(body["data"].is_null(), "{body}");
    // A wrong password is still just a wrong password.
    let (_, body) = app
        .graphql(
            &login_mutation(),
            json!({ "input": { "email": user.email, "password": "not the password 1", "totpCode": authenticator.last_code() } }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    // register with the account's email and password signs in only without TOTP.
    let (_, body) = app
        .graphql(
            &format!("mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
            json!({ "input": { "email": user.email, "password": TEST_PASSWORD, "displayName": "Again" } }),
        )
        .await;
    assert_eq!(
        error_code(&body).as_deref(),
        Some("MFA_REQUIRED"),
        "register must not bypass the second factor: {body}"
    );
    // A wrong code: UNAUTHENTICATED.
    let body = login(&app, &user.email, Some(&authenticator.wrong_code())).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    assert_eq!(sessions_of(&app, &user).await, sessions, "no session without the second factor");

    // The right code signs in; the same code again does not.
    let code = authenticator.next_code().await;
    let body = login(&app, &user.email, Some(&code)).await;
    assert!(signed_in(&body), "{body}");
    assert_eq!(sessions_of(&app, &user).await, sessions + 1);
    let body = login(&app, &user.email, Some(&code)).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "a replayed code is refused: {body}");
    // Nor does the confirmation's code (an earlier step).
    let body = login(&app, &user.email, Some(&authenticator.code_at(authenticator.last_step.unwrap() - 1))).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");

    // A recovery code works once (however it is typed), and not twice.
    let spare = recovery[3].to_uppercase();
    let body = login(&app, &user.email, Some(&spare)).await;
    assert!(signed_in(&body), "{body}");
    let body = login(&app, &user.email, Some(&recovery[3])).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "a spent recovery code: {body}");
    let unused = totp_recovery_code::Entity::find()
        .filter(totp_recovery_code::Column::UserId.eq(row.id))
        .filter(totp_recovery_code::Column::UsedAt.is_null())
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(unused, 9);

    // Disabling needs a valid code: a wrong one and a spent one are refused, an
    // unused recovery code works (a lost authenticator).
    for code in [authenticator.wrong_code(), recovery[3].clone(), code] {
        let (_, body) = app.graphql_as(&user.bearer(), DISABLE, json!({ "code": code })).await;
        assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    }
    assert!(totp_enabled(&app, &user.bearer()).await);
    let (_, body) = app.graphql_as(&user.bearer(), DISABLE, json!({ "code": recovery[7] })).await;
    assert_eq!(body["data"]["disableTotp"], json!(true), "{body}");
    assert!(!totp_enabled(&app, &user.bearer()).await);
    let row = user_row(&app, &user).await;
    assert_eq!((row.totp_secret, row.totp_enabled_at, row.totp_last_step), (None, None, None));
    let left = totp_recovery_code::Entity::find()
        .filter(totp_recovery_code::Column::UserId.eq(row.id))
        .count(&app.state.db)
        .await
        .unwrap();
    assert_eq!(left, 0, "recovery codes are deleted with the secret");

    // After disabling, the password alone signs in.
    assert!(signed_in(&login(&app, &user.email, None).await));

    // Every step is in the audit log.
    let actions = audit_actions(&app, &user).await;
    for expected in [
        ("TOTP_ENABLED", "SUCCESS"),
        ("MFA_FAILED", "FAILURE"),
        ("RECOVERY_CODE_USED", "SUCCESS"),
        ("TOTP_DISABLED", "SUCCESS"),
    ] {
        assert!(
            actions.iter().any(|(action, outcome)| (action.as_str(), outcome.as_str()) == expected),
            "{expected:?} missing from {actions:?}"
        );
    }
}

#[actix_web::test]
async fn wrong_totp_codes_are_rate_limited_per_account() {
    let app = spawn(true).await;
    let user = app.register_user().await;
    let (mut authenticator, _) = enable(&app, &user).await;
    let other = app.register_user().await;
    let (mut other_authenticator, _) = enable(&app, &other).await;

    // The `mfa` policy allows a burst of 5 codes per account (the confirmation
    // was one): wrong codes are refused, then the account is RATE_LIMITED.
    let mut refused = 0;
    let limited = loop {
        let body = login(&app, &user.email, Some(&authenticator.wrong_code())).await;
        match error_code(&body).as_deref() {
            Some("UNAUTHENTICATED") => refused += 1,
            Some("RATE_LIMITED") => break body,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
        assert!(refused <= 5, "wrong codes were never rate-limited");
    };
    assert!(refused >= 3, "only {refused} wrong codes before the limit");
    assert!(limited["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() > 0, "{limited}");
    // While limited, the right code is refused too (no guess can be confirmed).
    let body = login(&app, &user.email, Some(&authenticator.next_code().await)).await;
    assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    // Without a code, the answer is still MFA_REQUIRED: the password check is
    // under the sign-in limits, not this one.
    let body = login(&app, &user.email, None).await;
    assert_eq!(error_code(&body).as_deref(), Some("MFA_REQUIRED"), "{body}");
    // Another account is not affected.
    let body = login(&app, &other.email, Some(&other_authenticator.next_code().await)).await;
    assert!(signed_in(&body), "{body}");
    // Each wrong code is audited; refusals by the limit are not (a flood must not
    // grow the table faster than the limit allows).
    let failed = audit_actions(&app, &user).await.into_iter().filter(|(action, _)| action == "MFA_FAILED").count();
    assert_eq!(failed, refused);
}

#[actix_web::test]
async fn api_keys_and_refresh_tokens_keep_working_with_totp_on() {
    let app = spawn(true).await;
    let user = app.register_user().await;
    let (_, body) =
        app.graphql_as(&user.bearer(), "mutation { createApiKey(name: \"ci\") { secret } }", json!({})).await;
    let key = Credentials::ApiKey(body["data"]["createApiKey"]["secret"].as_str().unwrap().to_string());
    let (mut authenticator, _) = enable(&app, &user).await;

    // The key works for an account with TOTP on, and cannot change its TOTP.
    assert!(totp_enabled(&app, &key).await);
    for (mutation, variables) in [
        (ENROLL, json!({})),
        (DISABLE, json!({ "code": authenticator.last_code() })),
        (CONFIRM, json!({ "code": authenticator.last_code() })),
    ] {
        let (_, body) = app.graphql_as(&key, mutation, variables).await;
        assert_eq!(error_code(&body).as_deref(), Some("FORBIDDEN"), "{mutation}: {body}");
    }
    // Anonymous callers cannot either.
    let (_, body) = app.graphql_as(&Credentials::Anonymous, ENROLL, json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");

    // A session started before keeps refreshing.
    let (_, body) = app
        .graphql(
            &format!("mutation($t: String!) {{ refreshToken(refreshToken: $t) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
            json!({ "t": user.refresh_token }),
        )
        .await;
    assert!(body["data"]["refreshToken"]["accessToken"].is_string(), "{body}");

    // Disabling with a current authenticator code (the confirmation's is spent).
    let (_, body) = app.graphql_as(&user.bearer(), DISABLE, json!({ "code": authenticator.last_code() })).await;
    assert_eq!(error_code(&body).as_deref(), Some("BAD_USER_INPUT"), "{body}");
    let code = authenticator.next_code().await;
    let (_, body) = app.graphql_as(&user.bearer(), DISABLE, json!({ "code": code })).await;
    assert_eq!(body["data"]["disableTotp"], json!(true), "{body}");
    let (_, body) = app.graphql_as(&user.bearer(), DISABLE, json!({ "code": code })).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "already off: {body}");
    assert!(!totp_enabled(&app, &key).await);
    assert!(signed_in(&login(&app, &user.email, None).await));
}
