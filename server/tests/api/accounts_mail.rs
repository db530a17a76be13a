//! Account mail end to end: real SMTP through the test sink (`scripts/smtp-sink.py`,
//! which requires the AUTH credentials of `SMTP_URL`), the `.eml` fallback, the
//! durable SEND_MAIL job across an SMTP outage, and the rate limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use entities::{account_token, job, JobKind, JobStatus};
use reelhouse::config::SecretUrl;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    error_code, eventually, service_env, socket_of, spawn_app_with, Credentials, TcpProxy, TestApp, TestUser,
    AUTH_PAYLOAD_FIELDS, TEST_PASSWORD,
};
use crate::uploads::{create_upload, new_video, user_id};

const NEW_PASSWORD: &str = "a brand new passphrase 7";

/// The sink's SMTP URL (with its AUTH credentials) and the directory of its mails.
fn sink() -> (String, PathBuf) {
    (service_env("SMTP_URL"), PathBuf::from(service_env("SMTP_SINK_DIR")))
}

async fn spawn_smtp_app(customize: impl FnOnce(&mut reelhouse::config::Settings)) -> TestApp {
    let (url, _) = sink();
    spawn_app_with(|s| {
        s.mail.smtp_url = Some(SecretUrl::new(url));
        s.mail.from = "reelhouse test <noreply@reelhouse.test>".into();
        customize(s);
    })
    .await
}

/// Teardown: let the mail lane finish any send it is in the middle of, so the test's
/// runtime does not end under a job holding a database connection or an SMTP
/// transport (their destructors need the runtime). Waits, asserts nothing.
async fn settle(app: &TestApp) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    eventually(100, || async {
        entities::job::Entity::find()
            .filter(entities::job::Column::Kind.eq(entities::JobKind::SendMail))
            .filter(entities::job::Column::Status.eq(entities::JobStatus::Running))
            .count(&app.state.db)
            .await
            .map(|running| running == 0)
            .unwrap_or(true)
    })
    .await;
}

fn unique_email() -> String {
    format!("{}@example.com", Uuid::new_v4().simple())
}

/// One received mail: its headers and the decoded bodies of its parts.
#[derive(Debug, Clone)]
struct Mail {
    raw: String,
    decoded: String,
}

impl Mail {
    fn subject(&self) -> String {
        header(&self.raw, "Subject").unwrap_or_default()
    }

    /// The token of the first `{page}?token=` link.
    fn token(&self, page: &str) -> String {
        let marker = format!("/{page}?token=");
        let start =
            self.decoded.find(&marker).unwrap_or_else(|| panic!("no {page} link in {}", self.decoded)) + marker.len();
        self.decoded[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect()
    }
}

fn header(raw: &str, name: &str) -> Option<String> {
    let head = raw.split("\r\n\r\n").next().unwrap_or(raw);
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.split("\r\n")
        .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
        .map(|line| line[prefix.len()..].trim().to_string())
}

fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every part's body, decoded by its Content-Transfer-Encoding, one after another.
fn decode_parts(raw: &str) -> String {
    let mut out = String::new();
    for part in raw.split("\r\n--") {
        let Some((head, body)) = part.split_once("\r\n\r\n") else { continue };
        let encoding = head
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("content-transfer-encoding:"))
            .map(|l| l.to_ascii_lowercase())
            .unwrap_or_default();
        if encoding.contains("base64") {
            let compact: String = body.split("\r\n").take_while(|l| !l.starts_with("--")).collect();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(compact.trim()) {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        } else if encoding.contains("quoted-printable") {
            out.push_str(&decode_quoted_printable(body));
        } else {
            out.push_str(body);
        }
        out.push('\n');
    }
    out
}

fn mails_in(dir: &Path, to: &str) -> Vec<Mail> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "eml")).collect();
    paths.sort();
    for path in paths {
        let Ok(bytes) = std::fs::read(&path) else { continue };
        let raw = String::from_utf8_lossy(&bytes).into_owned();
        if header(&raw, "To").is_some_and(|value| value.contains(to)) {
            let decoded = decode_parts(&raw);
            found.push(Mail { raw, decoded });
        }
    }
    found
}

/// Wait (at most ~30 s) until `dir` holds `count` mails to `to`; returns them in arrival order.
async fn wait_for_mails(dir: &Path, to: &str, count: usize) -> Vec<Mail> {
    for _ in 0..300 {
        let found = mails_in(dir, to);
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {count} mail(s) to {to} in {}, found {}", dir.display(), mails_in(dir, to).len());
}

/// The one mail to `to` whose subject contains `subject`.
async fn wait_for_mail(dir: &Path, to: &str, subject: &str) -> Mail {
    for _ in 0..300 {
        if let Some(mail) = mails_in(dir, to).into_iter().find(|m| m.subject().contains(subject)) {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no mail `{subject}` to {to} in {}", dir.display());
}

async fn register(app: &TestApp, email: &str) -> TestUser {
    let (status, body) = app
        .graphql(
            &format!("mutation($input: RegisterInput!) {{ register(input: $input) {{ {AUTH_PAYLOAD_FIELDS} }} }}"),
            json!({ "input": { "email": email, "password": TEST_PASSWORD, "displayName": "Mail <b>Tester</b>" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let payload = &body["data"]["register"];
    TestUser {
        id: payload["user"]["id"].as_str().unwrap().to_string(),
        email: email.to_string(),
        access_token: payload["accessToken"].as_str().unwrap().to_string(),
        refresh_token: payload["refreshToken"].as_str().unwrap().to_string(),
    }
}

async fn me(app: &TestApp, user: &TestUser) -> Value {
    let (_, body) = app.graphql_as(&user.bearer(), "{ me { id email emailVerified } }", json!({})).await;
    body
}

async fn verify(app: &TestApp, token: &str) -> Value {
    let (_, body) = app
        .graphql("mutation($t: String!) { verifyEmail(token: $t) { id email emailVerified } }", json!({ "t": token }))
        .await;
    body
}

async fn mutate(app: &TestApp, who: &Credentials, query: &str, vars: Value) -> Value {
    app.graphql_as(who, query, vars).await.1
}

async fn try_upload(app: &TestApp, user: &TestUser) -> Value {
    let video = new_video(app, user_id(user)).await;
    let input = json!({ "videoId": video, "filename": "clip.mp4", "contentType": "video/mp4", "size": 1000 });
    create_upload(app, user, input).await.1
}

async fn tus_create_status(app: &TestApp, user: &TestUser) -> (u16, Value) {
    let video = new_video(app, user_id(user)).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let res = app
        .client
        .post(app.url("/uploads/"))
        .bearer_auth(&user.access_token)
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1000")
        .header(
            "Upload-Metadata",
            format!("videoId {},filename {},filetype {}", b64(&video.to_string()), b64("a.mp4"), b64("video/mp4")),
        )
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[actix_rt::test]
async fn a_registration_mails_a_link_that_verifies_once_and_unlocks_uploads() {
    let app = spawn_smtp_app(|_| {}).await;
    let (_, dir) = sink();
    let email = unique_email();
    let user = register(&app, &email).await;
    assert_eq!(me(&app, &user).await["data"]["me"]["emailVerified"], false);

    // Unverified: no uploads, through GraphQL or tus.
    let refused = try_upload(&app, &user).await;
    assert_eq!(error_code(&refused).as_deref(), Some("EMAIL_NOT_VERIFIED"), "{refused}");
    let (status, body) = tus_create_status(&app, &user).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("EMAIL_NOT_VERIFIED")), "{body}");

    // The mail arrives through SMTP (the sink demanded the URL's credentials).
    let mail = wait_for_mail(&dir, &email, "Confirm your email address").await;
    assert!(
        mail.raw.contains("From: \"reelhouse test\" <noreply@reelhouse.test>")
            || mail.raw.contains("From: reelhouse test <noreply@reelhouse.test>"),
        "{}",
        mail.raw
    );
    // The display name is escaped in the HTML body.
    assert!(mail.decoded.contains("Mail &lt;b&gt;Tester&lt;/b&gt;"), "{}", mail.decoded);
    assert!(mail.decoded.contains(&format!("{}/verify-email?token=", app.address)), "{}", mail.decoded);
    let token = mail.token("verify-email");
    assert_eq!(token.len(), 43, "32 random bytes, base64url: {token}");
    // Only a hash is stored, and the job's payload is sealed.
    let stored = account_token::Entity::find()
        .filter(account_token::Column::UserId.eq(user_id(&user)))
        .all(&app.state.db)
        .await
        .unwrap();
    assert!(stored.iter().all(|row| row.token_hash != token && row.token_hash.len() == 64));
    let jobs = job::Entity::find().filter(job::Column::Kind.eq(JobKind::SendMail)).all(&app.state.db).await.unwrap();
    assert!(!jobs.is_empty());
    for row in &jobs {
        let payload = row.payload.to_string();
        assert!(!payload.contains(&token) && !payload.contains(&email), "{payload}");
    }

    let body = verify(&app, &token).await;
    assert_eq!(body["data"]["verifyEmail"]["emailVerified"], true, "{body}");
    assert_eq!(body["data"]["verifyEmail"]["email"], email.as_str());
    assert_eq!(me(&app, &user).await["data"]["me"]["emailVerified"], true);

    // Once only.
    let again = verify(&app, &token).await;
    assert_eq!(error_code(&again).as_deref(), Some("BAD_USER_INPUT"), "{again}");
    assert!(again["errors"][0]["message"].as_str().unwrap().contains("already used"), "{again}");
    let garbage = verify(&app, "not-a-token").await;
    assert_eq!(error_code(&garbage).as_deref(), Some("BAD_USER_INPUT"), "{garbage}");

    // Verified: uploads are allowed.
    let allowed = try_upload(&app, &user).await;
    assert!(allowed["errors"].is_null(), "{allowed}");
    let (status, body) = tus_create_status(&app, &user).await;
    assert_eq!(status, 201, "{body}");
    settle(&app).await;
}

#[actix_rt::test]
async fn an_expired_verification_link_is_refused_and_a_resent_one_works() {
    let app = spawn_smtp_app(|_| {}).await;
    let (_, dir) = sink();
    let email = unique_email();
    let user = register(&app, &email).await;
    let first = wait_for_mails(&dir, &email, 1).await.remove(0).token("verify-email");

    account_token::Entity::update_many()
        .col_expr(account_token::Column::ExpiresAt, Expr::value(Utc::now() - chrono::Duration::minutes(1)))
        .filter(account_token::Column::UserId.eq(user_id(&user)))
        .exec(&app.state.db)
        .await
        .unwrap();
    let expired = verify(&app, &first).await;
    assert_eq!(error_code(&expired).as_deref(), Some("BAD_USER_INPUT"), "{expired}");
    assert!(expired["errors"][0]["message"].as_str().unwrap().contains("expired"), "{expired}");

    let body = mutate(&app, &user.bearer(), "mutation { resendVerification }", json!({})).await;
    assert_eq!(body["data"]["resendVerification"], true, "{body}");
    let mails = wait_for_mails(&dir, &email, 2).await;
    let second = mails.iter().map(|m| m.token("verify-email")).find(|t| *t != first).expect("a new link");
    assert_eq!(verify(&app, &second).await["data"]["verifyEmail"]["emailVerified"], true);
    // Verified: nothing more to send.
    let body = mutate(&app, &user.bearer(), "mutation { resendVerification }", json!({})).await;
    assert_eq!(body["data"]["resendVerification"], false, "{body}");
    settle(&app).await;
}

const RESET: &str = "mutation($t: String!, $p: String!) { resetPassword(token: $t, newPassword: $p) }";
const REQUEST_RESET: &str = "mutation($e: String!) { requestPasswordReset(email: $e) }";

#[actix_rt::test]
async fn a_password_reset_by_mail_ends_every_session_and_works_once() {
    let app = spawn_smtp_app(|_| {}).await;
    let (_, dir) = sink();
    let user = app.register_user().await;
    let other_device = app.login(&user.email, TEST_PASSWORD).await;

    // The same answer for an address without an account.
    let unknown = unique_email();
    let body = mutate(&app, &Credentials::Anonymous, REQUEST_RESET, json!({ "e": unknown })).await;
    assert_eq!(body, json!({ "data": { "requestPasswordReset": true } }));
    let body = mutate(&app, &Credentials::Anonymous, REQUEST_RESET, json!({ "e": user.email.to_uppercase() })).await;
    assert_eq!(body, json!({ "data": { "requestPasswordReset": true } }));

    let mail = wait_for_mail(&dir, &user.email, "Reset your password").await;
    assert!(mail.decoded.contains(&format!("{}/reset-password?token=", app.address)), "{}", mail.decoded);
    let token = mail.token("reset-password");

    // A weak password is refused and leaves the link working.
    let weak = mutate(&app, &Credentials::Anonymous, RESET, json!({ "t": token, "p": "short" })).await;
    assert_eq!(error_code(&weak).as_deref(), Some("BAD_USER_INPUT"), "{weak}");

    let done = mutate(&app, &Credentials::Anonymous, RESET, json!({ "t": token, "p": NEW_PASSWORD })).await;
    assert_eq!(done["data"]["resetPassword"], true, "{done}");
    let again =
        mutate(&app, &Credentials::Anonymous, RESET, json!({ "t": token, "p": "another fine passphrase 8" })).await;
    assert_eq!(error_code(&again).as_deref(), Some("BAD_USER_INPUT"), "{again}");

    // Every session is over: refresh tokens are refused.
    for session in [&user, &other_device] {
        let (_, body) = app
            .graphql(
                "mutation($r: String!) { refreshToken(refreshToken: $r) { accessToken } }",
                json!({ "r": session.refresh_token }),
            )
            .await;
        assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    }
    // Old password out, new one in.
    let (_, body) = app
        .graphql(
            "mutation($i: LoginInput!) { login(input: $i) { accessToken } }",
            json!({ "i": { "email": user.email, "password": TEST_PASSWORD } }),
        )
        .await;
    assert_eq!(error_code(&body).as_deref(), Some("UNAUTHENTICATED"), "{body}");
    app.login(&user.email, NEW_PASSWORD).await;

    // A notice follows; the unknown address got nothing.
    wait_for_mail(&dir, &user.email, "Your password was changed").await;
    assert!(mails_in(&dir, &unknown).is_empty());
    settle(&app).await;
}

const CHANGE_EMAIL: &str = "mutation($e: String!, $p: String!) { changeEmail(newEmail: $e, password: $p) }";

#[actix_rt::test]
async fn changing_the_address_needs_the_new_one_confirmed_and_tells_the_old_one() {
    let app = spawn_smtp_app(|_| {}).await;
    let (_, dir) = sink();
    let user = app.register_user().await;
    let new_email = unique_email();

    let wrong = mutate(&app, &user.bearer(), CHANGE_EMAIL, json!({ "e": new_email, "p": "wrong password 123" })).await;
    assert_eq!(error_code(&wrong).as_deref(), Some("UNAUTHENTICATED"), "{wrong}");
    let body = mutate(&app, &user.bearer(), CHANGE_EMAIL, json!({ "e": new_email, "p": TEST_PASSWORD })).await;
    assert_eq!(body["data"]["changeEmail"], true, "{body}");

    let notice = wait_for_mail(&dir, &user.email, "Your email address is being changed").await;
    assert!(notice.decoded.contains(&new_email), "{}", notice.decoded);
    let confirm = wait_for_mail(&dir, &new_email, "Confirm your new email address").await;
    // Nothing changed yet.
    assert_eq!(me(&app, &user).await["data"]["me"]["email"], user.email.as_str());

    let body = verify(&app, &confirm.token("verify-email")).await;
    assert_eq!(body["data"]["verifyEmail"]["email"], new_email.as_str(), "{body}");
    assert_eq!(body["data"]["verifyEmail"]["emailVerified"], true);
    app.login(&new_email, TEST_PASSWORD).await;

    // A pending change whose address another account takes meanwhile: CONFLICT.
    let taken = unique_email();
    let body = mutate(&app, &user.bearer(), CHANGE_EMAIL, json!({ "e": taken, "p": TEST_PASSWORD })).await;
    assert_eq!(body["data"]["changeEmail"], true, "{body}");
    let confirm = wait_for_mail(&dir, &taken, "Confirm your new email address").await;
    register(&app, &taken).await;
    let body = verify(&app, &confirm.token("verify-email")).await;
    assert_eq!(error_code(&body).as_deref(), Some("CONFLICT"), "{body}");
    assert_eq!(me(&app, &user).await["data"]["me"]["email"], new_email.as_str());
    settle(&app).await;
}

const CHANGE_PASSWORD: &str =
    "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) }";

#[actix_rt::test]
async fn changing_the_password_keeps_this_session_and_ends_the_others() {
    let app = spawn_smtp_app(|_| {}).await;
    let (_, dir) = sink();
    let user = app.register_user().await;
    let other_device = app.login(&user.email, TEST_PASSWORD).await;

    let wrong =
        mutate(&app, &user.bearer(), CHANGE_PASSWORD, json!({ "c": "not it at all 1", "n": NEW_PASSWORD })).await;
    assert_eq!(error_code(&wrong).as_deref(), Some("UNAUTHENTICATED"), "{wrong}");
    let weak = mutate(&app, &user.bearer(), CHANGE_PASSWORD, json!({ "c": TEST_PASSWORD, "n": "short" })).await;
    assert_eq!(error_code(&weak).as_deref(), Some("BAD_USER_INPUT"), "{weak}");
    let body = mutate(&app, &user.bearer(), CHANGE_PASSWORD, json!({ "c": TEST_PASSWORD, "n": NEW_PASSWORD })).await;
    assert_eq!(body["data"]["changePassword"], true, "{body}");

    let refresh = |token: String| {
        let app = &app;
        async move {
            app.graphql(
                "mutation($r: String!) { refreshToken(refreshToken: $r) { accessToken } }",
                json!({ "r": token }),
            )
            .await
            .1
        }
    };
    let other = refresh(other_device.refresh_token.clone()).await;
    assert_eq!(error_code(&other).as_deref(), Some("UNAUTHENTICATED"), "{other}");
    let this = refresh(user.refresh_token.clone()).await;
    assert!(this["data"]["refreshToken"]["accessToken"].is_string(), "{this}");
    app.login(&user.email, NEW_PASSWORD).await;
    wait_for_mail(&dir, &user.email, "Your password was changed").await;
    settle(&app).await;
}

#[actix_rt::test]
async fn without_smtp_each_mail_is_an_eml_file_under_the_data_dir() {
    let app = spawn_app_with(|_| {}).await;
    let dir = app.data_dir.path().join("mail");
    let email = unique_email();
    let user = register(&app, &email).await;
    let mail = wait_for_mail(&dir, &email, "Confirm your email address").await;
    // A complete RFC 5322 message: headers, a multipart body with text and HTML.
    for name in ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version"] {
        assert!(header(&mail.raw, name).is_some(), "no {name} in {}", mail.raw);
    }
    assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
    assert!(mail.decoded.contains("text/plain") || mail.raw.contains("text/plain"));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
    let body = verify(&app, &mail.token("verify-email")).await;
    assert_eq!(body["data"]["verifyEmail"]["emailVerified"], true, "{body}");
    assert_eq!(me(&app, &user).await["data"]["me"]["emailVerified"], true);
}

async fn send_mail_jobs(app: &TestApp) -> Vec<job::Model> {
    job::Entity::find().filter(job::Column::Kind.eq(JobKind::SendMail)).all(&app.state.db).await.unwrap()
}

#[actix_rt::test]
async fn a_mail_job_is_retried_through_an_smtp_outage_and_delivered_after() {
    let (url, dir) = sink();
    let mut proxy = TcpProxy::start(socket_of(&url)).await;
    proxy.cut().await;
    let mut through_proxy = url::Url::parse(&url).unwrap();
    through_proxy.set_port(Some(proxy.port)).unwrap();
    let app = spawn_app_with(|s| {
        s.mail.smtp_url = Some(SecretUrl::new(through_proxy.to_string()));
        s.mail.send_timeout_secs = 2;
        s.jobs.backoff_base_secs = 1;
        s.jobs.backoff_max_secs = 1;
    })
    .await;
    let email = unique_email();
    register(&app, &email).await;

    // Retried, never lost, while the server is unreachable.
    let retried = eventually(300, || async {
        send_mail_jobs(&app)
            .await
            .iter()
            .any(|j| j.attempts >= 2 && j.status != JobStatus::Succeeded && j.last_error.is_some())
    })
    .await;
    assert!(retried, "{:?}", send_mail_jobs(&app).await);
    assert!(mails_in(&dir, &email).is_empty());

    proxy.restore().await;
    wait_for_mail(&dir, &email, "Confirm your email address").await;
    let done =
        eventually(100, || async { send_mail_jobs(&app).await.iter().all(|j| j.status == JobStatus::Succeeded) }).await;
    assert!(done, "{:?}", send_mail_jobs(&app).await);
    // Delivered once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mails_in(&dir, &email).len(), 1);
}

/// Rotating the master secret (the old one moved to `auth.previous_jwt_secrets`)
/// keeps queued mail deliverable: a SEND_MAIL job sealed by a process still on the
/// old secret is opened and delivered by one on the new secret.
#[actix_rt::test]
async fn mail_queued_before_a_master_secret_rotation_is_delivered_after_it() {
    use reelhouse::config::Secret;
    let (old, new) = (crate::helpers::random_secret(), crate::helpers::random_secret());
    let app = spawn_app_with({
        let old = old.clone();
        move |s| {
            s.auth.jwt_secret = Some(Secret::new(new));
            s.auth.previous_jwt_secrets = vec![Secret::new(old)];
        }
    })
    .await;
    let mut before = (*app.state.settings).clone();
    before.auth.jwt_secret = Some(Secret::new(old));
    before.auth.previous_jwt_secrets = Vec::new();
    let keys = reelhouse::keys::ServerKeys::load_or_generate(&before).unwrap();
    let old_mailer = reelhouse::mail::Mailer::new(&before, &keys).unwrap();
    let email = unique_email();
    let mail = reelhouse::mail::templates::password_reset(&email, "Rotated", "http://h/reset-password?token=t", 60);
    let queued = reelhouse::mail::enqueue(&app.state.db, &old_mailer, &before, &mail).await.unwrap();

    let dir = app.data_dir.path().join("mail");
    let delivered = wait_for_mail(&dir, &email, "Reset your password").await;
    assert!(delivered.decoded.contains("http://h/reset-password?token=t"), "{}", delivered.decoded);
    let done = eventually(100, || async {
        job::Entity::find_by_id(queued.id)
            .one(&app.state.db)
            .await
            .unwrap()
            .is_some_and(|j| j.status == JobStatus::Succeeded)
    })
    .await;
    assert!(done, "{:?}", send_mail_jobs(&app).await);
}

#[actix_rt::test]
async fn wrong_smtp_credentials_fail_the_mail_job_instead_of_delivering() {
    let (url, dir) = sink();
    let mut wrong = url::Url::parse(&url).unwrap();
    wrong.set_password(Some("not-the-password")).unwrap();
    let app = spawn_app_with(|s| s.mail.smtp_url = Some(SecretUrl::new(wrong.to_string()))).await;
    let email = unique_email();
    register(&app, &email).await;
    let failed = eventually(300, || async {
        send_mail_jobs(&app).await.iter().any(|j| j.status == JobStatus::Failed && j.last_error.is_some())
    })
    .await;
    assert!(failed, "{:?}", send_mail_jobs(&app).await);
    let error = send_mail_jobs(&app).await.remove(0).last_error.unwrap_or_default();
    assert!(!error.contains("not-the-password"), "{error}");
    assert!(mails_in(&dir, &email).is_empty());
}

#[actix_rt::test]
async fn account_mail_is_rate_limited_per_account() {
    let app = spawn_app_with(|s| {
        s.rate_limit.policies.insert(
            reelhouse::limits::Policy::AccountMail,
            reelhouse::config::rate_limit::PolicySettings::new(2, 3600, 2, false),
        );
    })
    .await;
    // Unknown and known addresses are limited alike.
    for email in [unique_email(), app.register_user().await.email] {
        for _ in 0..2 {
            let body = mutate(&app, &Credentials::Anonymous, REQUEST_RESET, json!({ "e": email })).await;
            assert_eq!(body["data"]["requestPasswordReset"], true, "{body}");
        }
        let body = mutate(&app, &Credentials::Anonymous, REQUEST_RESET, json!({ "e": email })).await;
        assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
    }
    let user = app.register_unverified_user().await;
    for _ in 0..2 {
        let body = mutate(&app, &user.bearer(), "mutation { resendVerification }", json!({})).await;
        assert_eq!(body["data"]["resendVerification"], true, "{body}");
    }
    let body = mutate(&app, &user.bearer(), "mutation { resendVerification }", json!({})).await;
    assert_eq!(error_code(&body).as_deref(), Some("RATE_LIMITED"), "{body}");
}

/// The SEND_MAIL jobs of one template (the payload names it; the mail is sealed).
async fn mail_jobs_of(app: &TestApp, template: &str) -> usize {
    send_mail_jobs(app).await.iter().filter(|job| job.payload["template"] == template).count()
}

const REGISTER_AGAIN: &str =
    "mutation($i: RegisterInput!) { register(input: $i) { accessToken refreshToken expiresIn user { id email } } }";

/// `register` with an address that has an account answers like a new sign-up and
/// mails the owner instead ("someone tried to sign up with your address"), under the
/// account-mail limits — which, when reached, change nothing in the answer.
#[actix_rt::test]
async fn signing_up_with_a_taken_address_mails_its_owner_and_tells_the_caller_nothing() {
    let app = spawn_smtp_app(|s| {
        s.rate_limit.policies.insert(
            reelhouse::limits::Policy::AccountMail,
            reelhouse::config::rate_limit::PolicySettings::new(2, 3600, 2, false),
        );
    })
    .await;
    let (_, dir) = sink();
    let owner = app.register_user().await;
    let attempt = |email: String, password: &'static str| {
        let app = &app;
        async move {
            let input = json!({ "i": { "email": email, "password": password, "displayName": "Stranger" } });
            let (status, body) = app.graphql(REGISTER_AGAIN, input).await;
            assert_eq!(status, 200, "{body}");
            assert!(body["errors"].is_null(), "the answer of a new sign-up: {body}");
            body["data"]["register"].clone()
        }
    };
    for _ in 0..3 {
        let answer = attempt(owner.email.to_uppercase(), "a stranger's passphrase 9").await;
        assert!(answer["accessToken"].is_string(), "{answer}");
        assert_ne!(answer["user"]["id"], owner.id.as_str(), "{answer}");
    }
    // Two notices (the account-mail burst), not three: the third attempt was answered
    // alike but sent nothing.
    assert_eq!(mail_jobs_of(&app, "SIGNUP_ATTEMPT").await, 2);
    // (The owner's own verification mail is the third.)
    let notices = wait_for_mails(&dir, &owner.email, 3).await;
    let notices: Vec<&Mail> =
        notices.iter().filter(|m| m.subject().contains("Someone tried to sign up with your address")).collect();
    assert_eq!(notices.len(), 2);
    let link = format!("{}/forgot-password", app.address);
    assert!(notices[0].decoded.contains(&link), "a way to reset the password: {}", notices[0].decoded);
    assert!(!notices[0].decoded.contains("token="), "a stranger's sign-up mints no token: {}", notices[0].decoded);
    assert!(!notices[0].decoded.contains("a stranger's passphrase"));

    // A new address gets its verification mail and nothing else; the owner retrying
    // with their own password is signed in and not warned about themself.
    let fresh = unique_email();
    attempt(fresh.clone(), "a stranger's passphrase 9").await;
    wait_for_mail(&dir, &fresh, "Confirm your email address").await;
    let own = attempt(owner.email.clone(), TEST_PASSWORD).await;
    assert_eq!(own["user"]["id"], owner.id.as_str());
    assert_eq!(mail_jobs_of(&app, "SIGNUP_ATTEMPT").await, 2);
    settle(&app).await;
}

#[actix_rt::test]
async fn unverified_accounts_may_upload_when_the_setting_allows_it() {
    let app = spawn_app_with(|s| s.auth.unverified_can_upload = true).await;
    let user = app.register_unverified_user().await;
    assert_eq!(me(&app, &user).await["data"]["me"]["emailVerified"], false);
    let allowed = try_upload(&app, &user).await;
    assert!(allowed["errors"].is_null(), "{allowed}");
}

/// Mail has its own lane: with the only media slot held by a job that never ends,
/// a sign-up's mail is still delivered.
#[actix_rt::test]
async fn mail_is_delivered_while_every_media_slot_is_busy() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use reelhouse::jobs::runner::JobError;

    let app = spawn_app_with(|s| {
        s.workers.embedded = false;
        s.workers.concurrency = Some(1);
    })
    .await;
    let runner: reelhouse::jobs::scheduler::RunFn = Arc::new(|ctx, job, cancel, reporter| {
        Box::pin(async move {
            if job.kind == JobKind::SendMail {
                return reelhouse::jobs::runner::run(&ctx, &job, cancel, reporter).await;
            }
            while !cancel.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(JobError::Cancelled)
        })
    });
    let blocker = reelhouse::jobs::enqueue(
        &app.state.db,
        reelhouse::jobs::NewJob {
            kind: JobKind::Transcode,
            video_id: None,
            owner_id: None,
            priority: 1000,
            payload: json!({}),
            max_attempts: 1,
        },
    )
    .await
    .unwrap();
    let deps = reelhouse::worker::WorkerDeps {
        db: app.state.db.clone(),
        store: app.state.store.clone(),
        settings: app.state.settings.clone(),
        publisher: reelhouse::events::Publisher::new(Some(app.state.hubs.event_bus.clone())),
        scratch_dir: app.data_dir.path().join("scratch"),
        runner: Some(runner),
        mailer: app.state.mailer.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = actix_rt::spawn(async move {
        reelhouse::worker::run_until(deps, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let status = |id: Uuid| {
        let db = app.state.db.clone();
        async move { job::Entity::find_by_id(id).one(&db).await.unwrap().map(|j| j.status) }
    };
    assert!(eventually(100, || async { status(blocker.id).await == Some(JobStatus::Running) }).await);

    let email = unique_email();
    register(&app, &email).await;
    wait_for_mail(&app.data_dir.path().join("mail"), &email, "Confirm your email address").await;
    assert_eq!(status(blocker.id).await, Some(JobStatus::Running), "the media slot was never given up");

    let _ = stop.send(());
    workers.await.unwrap();
}

/// Shutdown with a mail send in progress: the `reelhouse` binary, its SMTP server
/// an accept-and-say-nothing listener (the send hangs in the greeting), gets
/// SIGTERM while the SEND_MAIL job is RUNNING. It must exit 0 with no panic (a
/// runtime ending under the send aborted in sqlx's and lettre's destructors), and
/// the job must be back in the queue (QUEUED, attempt refunded), not left RUNNING.
#[tokio::test]
async fn sigterm_during_a_mail_send_releases_the_job_and_exits_cleanly() {
    use crate::helpers::{backend, create_postgres_database, random_secret, reelhouse_command, Backend, ServerProcess};
    use sea_orm::Database;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let smtp_port = listener.local_addr().unwrap().port();
    let (connected, mut sending) = tokio::sync::mpsc::unbounded_channel::<()>();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = connected.send(());
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE__MAIL__SMTP_URL", format!("smtp://127.0.0.1:{smtp_port}"))
        .env("REELHOUSE__MAIL__SEND_TIMEOUT_SECS", "600")
        .env("REELHOUSE__SERVER__SHUTDOWN_TIMEOUT_SECS", "1");
    let db_url = match backend() {
        Backend::Sqlite => format!("sqlite://{}?mode=ro", dir.path().join("reelhouse.db").display()),
        Backend::Postgres => {
            let url = create_postgres_database().await;
            cmd.env("DATABASE_URL", &url)
                .env("REDIS_URL", service_env("REELHOUSE_TEST_REDIS_URL"))
                .env("S3_ENDPOINT", service_env("REELHOUSE_TEST_S3_ENDPOINT"))
                .env("S3_BUCKET", service_env("REELHOUSE_TEST_S3_BUCKET"))
                .env("S3_REGION", service_env("REELHOUSE_TEST_S3_REGION"))
                .env("S3_ACCESS_KEY_ID", service_env("REELHOUSE_TEST_S3_ACCESS_KEY_ID"))
                .env("S3_SECRET_ACCESS_KEY", service_env("REELHOUSE_TEST_S3_SECRET_ACCESS_KEY"))
                .env("REELHOUSE__STORAGE__S3__KEY_PREFIX", format!("ms{}/", &Uuid::new_v4().simple().to_string()[..8]))
                .env("REELHOUSE__AUTH__JWT_SECRET", random_secret());
            url
        }
    };
    let server = ServerProcess::serve(cmd).await;
    let email = unique_email();
    let body: Value = reqwest::Client::new()
        .post(format!("{}/graphql", server.address))
        .json(&json!({
            "query": "mutation($i: RegisterInput!) { register(input: $i) { user { id } } }",
            "variables": { "i": { "email": email, "password": TEST_PASSWORD, "displayName": "Mail" } },
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["data"]["register"]["user"]["id"].is_string(), "{body}");
    // The verification mail's job has leased and opened its SMTP connection.
    tokio::time::timeout(Duration::from_secs(60), sending.recv())
        .await
        .expect("the mail lane connects to the SMTP server")
        .unwrap();

    let (status, stderr) = server.terminate().await;
    holder.abort();
    assert!(!stderr.contains("panicked"), "a panic on the way out:\n{stderr}");
    assert!(status.success(), "SIGTERM exits 0 with a mail send in progress; stderr:\n{stderr}");

    let db = Database::connect(&db_url).await.unwrap();
    let jobs = job::Entity::find().filter(job::Column::Kind.eq(JobKind::SendMail)).all(&db).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].status, JobStatus::Queued, "released, not left RUNNING: {:?}", jobs[0]);
    assert_eq!(jobs[0].attempts, 0, "the interrupted attempt is refunded: {:?}", jobs[0]);
    assert!(jobs[0].lease_token.is_none(), "{:?}", jobs[0]);
    db.close().await.ok();
}
