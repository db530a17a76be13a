//! The `reelhouse` binary itself: embedded start from nothing, distributed start on
//! the real services, settings errors, `config`, `migrate`, `create-admin`,
//! `worker`, and clean exit on SIGTERM.

use std::time::Duration;

use entities::{user, worker};
use sea_orm::{Database, EntityTrait, PaginatorTrait};

use crate::helpers::{
    create_postgres_database, eventually, random_secret, reelhouse_command, service_env, ServerProcess,
};

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}?mode=ro", dir.join("reelhouse.db").display())
}

#[tokio::test]
async fn embedded_start_in_an_empty_dir_creates_its_state_and_serves_ready() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(&data);
    let server = ServerProcess::serve(cmd).await;
    let client = reqwest::Client::new();
    let ready = client.get(format!("{}/ready", server.address)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let info: serde_json::Value = client
        .post(format!("{}/graphql", server.address))
        .json(&serde_json::json!({ "query": "{ serverInfo { mode } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["data"]["serverInfo"]["mode"], "EMBEDDED");

    assert!(data.join("reelhouse.db").is_file(), "SQLite file created");
    assert!(data.join("objects").is_dir(), "object root created");
    let key = data.join("secret.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let key_before = std::fs::read(&key).unwrap();
    assert!(server.stderr().contains("set auth.jwt_secret"), "a warning says to set a key in production");
    assert!(server.stderr().contains(&format!("listening on {}", server.address)), "the real bound address is logged");

    let (status, stderr) = server.terminate().await;
    assert!(status.success(), "SIGTERM exits 0; stderr:\n{stderr}");
    assert!(stderr.contains("stopped"), "{stderr}");

    // A restart reuses the same key and database.
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(&data);
    let server = ServerProcess::serve(cmd).await;
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "the generated key is reused");
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn distributed_start_on_postgres_redis_and_s3_serves_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir")
        .arg(dir.path())
        .env("DATABASE_URL", create_postgres_database().await)
        .env("REDIS_URL", service_env("REELHOUSE_TEST_REDIS_URL"))
        .env("S3_ENDPOINT", service_env("REELHOUSE_TEST_S3_ENDPOINT"))
        .env("S3_BUCKET", service_env("REELHOUSE_TEST_S3_BUCKET"))
        .env("S3_REGION", service_env("REELHOUSE_TEST_S3_REGION"))
        .env("S3_ACCESS_KEY_ID", service_env("REELHOUSE_TEST_S3_ACCESS_KEY_ID"))
        .env("S3_SECRET_ACCESS_KEY", service_env("REELHOUSE_TEST_S3_SECRET_ACCESS_KEY"))
        .env("REELHOUSE__STORAGE__S3__KEY_PREFIX", format!("proc-{}/", uuid::Uuid::new_v4().simple()))
        .env("REELHOUSE__AUTH__JWT_SECRET", random_secret())
        .env("REELHOUSE__TELEMETRY__FORMAT", "json");
    let server = ServerProcess::serve(cmd).await;
    let ready: serde_json::Value =
        reqwest::get(format!("{}/ready", server.address)).await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["database"]["backend"], "postgres");
    assert_eq!(ready["checks"]["storage"]["backend"], "s3");
    assert_eq!(ready["checks"]["redis"]["ok"], true);
    // JSON logs: every line is a JSON object.
    let stderr = server.stderr();
    assert!(stderr.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "{stderr}");
    assert!(!dir.path().join("secret.key").exists(), "no key is generated when one is configured");
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn a_shared_database_without_a_configured_key_refuses_to_start() {
    let output = reelhouse_command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("DATABASE_URL", create_postgres_database().await)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.jwt_secret must be set"), "{stderr}");
}

#[tokio::test]
async fn bad_settings_stop_start_up_with_one_line_naming_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        ("REELHOUSE__SERVER__BIND", "not-an-address", "server.bind"),
        ("REELHOUSE__DATABASE__MAX_CONNECTIONS", "lots", "database.max_connections"),
        ("DATABASE_URL", "mysql://db/app", "database.url"),
        ("REDIS_URL", "http://cache", "redis.url"),
        ("REELHOUSE__TELEMETRY__FORMAT", "xml", "telemetry.format"),
        ("REELHOUSE__SERVER__NO_SUCH_KEY", "1", "no_such_key"),
        ("S3_BUCKET", "", "storage.s3.bucket"),
    ];
    for (name, value, key) in cases {
        let mut cmd = reelhouse_command();
        // REELHOUSE__SERVER__BIND beats REELHOUSE_BIND, so the bind case still applies.
        cmd.arg("serve").env("REELHOUSE_BIND", "127.0.0.1:0").env(name, value);
        cmd.env("REELHOUSE_DATA_DIR", std::env::temp_dir().join("rh-never"));
        let output = tokio::time::timeout(Duration::from_secs(30), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("{name}={value} did not stop start-up"))
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{name}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "one line for {name}={value}: {stderr}");
        assert!(stderr.contains(key), "{name}={value} must name `{key}`: {stderr}");
    }
}

#[tokio::test]
async fn config_prints_merged_settings_with_secrets_redacted_and_layers_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reelhouse.toml");
    std::fs::write(
        &file,
        "[server]\nbind = \"10.0.0.1:1\"\nheartbeat_interval_ms = 250\n[redis]\nkey_prefix = \"from-file:\"\n",
    )
    .unwrap();
    let output = reelhouse_command()
        .arg("config")
        .arg("--config")
        .arg(&file)
        .env("REELHOUSE__REDIS__KEY_PREFIX", "from-env:")
        .env("REELHOUSE_BIND", "10.0.0.2:2")
        .env("DATABASE_URL", "postgres://app:hunter2@db.internal:5432/app")
        .env("S3_BUCKET", "media")
        .env("S3_ACCESS_KEY_ID", "AKIAEXAMPLE")
        .env("S3_SECRET_ACCESS_KEY", "s3-secret-value")
        .env("REELHOUSE__AUTH__JWT_SECRET", "a-very-long-jwt-secret-that-must-not-print")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    for secret in ["hunter2", "s3-secret-value", "a-very-long-jwt-secret", "AKIAEXAMPLE"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(text.contains("db.internal:5432"), "{text}");
    assert!(text.contains("heartbeat_interval_ms = 250"), "file layer applies:\n{text}");
    assert!(text.contains("key_prefix = \"from-env:\""), "env beats file:\n{text}");
    assert!(text.contains("bind = \"10.0.0.2:2\""), "REELHOUSE_BIND beats file:\n{text}");
    assert!(text.contains("bucket = \"media\""), "{text}");

    // A CLI flag beats the environment.
    let output = reelhouse_command()
        .args(["config", "--bind", "10.0.0.3:3"])
        .env("REELHOUSE_BIND", "10.0.0.2:2")
        .output()
        .await
        .unwrap();
    assert!(String::from_utf8(output.stdout).unwrap().contains("bind = \"10.0.0.3:3\""));
}

#[tokio::test]
async fn migrate_and_create_admin_work_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let status = reelhouse_command().arg("migrate").arg("--data-dir").arg(dir.path()).status().await.unwrap();
    assert!(status.success());

    let output = reelhouse_command()
        .args(["create-admin", "--email", " Root@Example.COM "])
        .arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE_ADMIN_PASSWORD", "correct horse 7")
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let db = Database::connect(sqlite_url(dir.path())).await.unwrap();
    let admin = user::Entity::find().one(&db).await.unwrap().expect("admin row");
    assert_eq!(admin.email, "root@example.com");
    assert_eq!(admin.role, entities::Role::Admin);
    assert!(admin.password_hash.starts_with("$argon2id$"));
    assert!(!admin.password_hash.contains("correct horse"));
    assert!(admin.email_verified_at.is_some(), "create-admin vouches for the address");

    // Same email again: refused, still one account.
    let again = reelhouse_command()
        .args(["create-admin", "--email", "root@example.com"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE_ADMIN_PASSWORD", "another pass 8")
        .output()
        .await
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    // A weak password is refused with the policy's reason.
    let weak = reelhouse_command()
        .args(["create-admin", "--email", "second@example.com"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE_ADMIN_PASSWORD", "short")
        .output()
        .await
        .unwrap();
    assert!(!weak.status.success());
    assert!(String::from_utf8_lossy(&weak.stderr).contains("at least 10 characters"));
    assert_eq!(user::Entity::find().count(&db).await.unwrap(), 1);
}

/// The admin password never comes from argv, where `ps` shows it (issue 18): the
/// flag is gone, the environment and stdin work.
#[tokio::test]
async fn create_admin_takes_the_password_from_the_environment_or_stdin_only() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let on_argv = reelhouse_command()
        .args(["create-admin", "--email", "argv@example.com", "--password", "correct horse 7"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("REELHOUSE_ADMIN_PASSWORD")
        .output()
        .await
        .unwrap();
    assert!(!on_argv.status.success(), "a password on the command line is refused");
    let nothing = reelhouse_command()
        .args(["create-admin", "--email", "none@example.com"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("REELHOUSE_ADMIN_PASSWORD")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!nothing.status.success());
    assert!(String::from_utf8_lossy(&nothing.stderr).contains("REELHOUSE_ADMIN_PASSWORD"));

    let mut piped = reelhouse_command()
        .args(["create-admin", "--email", "stdin@example.com", "--password-stdin"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("REELHOUSE_ADMIN_PASSWORD")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    piped.stdin.take().unwrap().write_all(b"correct horse 7\n").await.unwrap();
    let output = piped.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let db = Database::connect(sqlite_url(dir.path())).await.unwrap();
    let admins = user::Entity::find().all(&db).await.unwrap();
    assert_eq!(admins.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(), ["stdin@example.com"]);
    let pool = reelhouse::auth::password::HashingPool::new(None);
    let verified =
        reelhouse::auth::accounts::verify_credentials(&db, &pool, "stdin@example.com", "correct horse 7").await;
    assert!(verified.is_ok(), "the password read from stdin is the one set");
}

#[tokio::test]
async fn worker_process_registers_heartbeats_and_deregisters_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = reelhouse_command()
        .arg("worker")
        .arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE__WORKERS__HEARTBEAT_SECS", "1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let db_file = dir.path().join("reelhouse.db");
    assert!(eventually(300, || async { db_file.exists() }).await, "worker creates the database");
    let db = Database::connect(sqlite_url(dir.path())).await.unwrap();
    assert!(
        eventually(300, || async { worker::Entity::find().count(&db).await.unwrap_or(0) == 1 }).await,
        "worker registers itself"
    );
    let first = worker::Entity::find().one(&db).await.unwrap().unwrap();
    assert_eq!(first.pid as u32, child.id().unwrap());
    assert!(
        eventually(100, || async {
            worker::Entity::find().one(&db).await.ok().flatten().is_some_and(|w| w.last_seen_at > first.last_seen_at)
        })
        .await,
        "worker heartbeats"
    );
    std::process::Command::new("kill").arg("-TERM").arg(child.id().unwrap().to_string()).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    assert_eq!(worker::Entity::find().count(&db).await.unwrap(), 0, "deregistered on shutdown");
}

#[tokio::test]
async fn log_files_rotate_daily_into_the_configured_dir_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(dir.path()).env("REELHOUSE__TELEMETRY__LOG_DIR", &logs);
    let server = ServerProcess::serve(cmd).await;
    reqwest::get(format!("{}/health", server.address)).await.unwrap();
    let (status, _) = server.terminate().await;
    assert!(status.success());
    let files: Vec<_> = std::fs::read_dir(&logs).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().to_string();
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(name, format!("reelhouse.{today}.log"), "daily file name");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("listening on http://"), "{text}");
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("JSON line: {line}"));
        assert!(event.get("level").is_some(), "{line}");
    }
}

#[tokio::test]
async fn eddsa_settings_are_checked_at_start_up() {
    let output = reelhouse_command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("REELHOUSE__AUTH__ALGORITHM", "EdDSA")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth.signing_key_pem"));

    let dir = tempfile::tempdir().unwrap();
    let output = reelhouse_command()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("REELHOUSE__AUTH__ALGORITHM", "EdDSA")
        .env("REELHOUSE__AUTH__SIGNING_KEY_PEM", "garbage")
        .env("REELHOUSE__AUTH__VERIFICATION_KEYS_PEM", "[\"garbage\"]")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("auth.signing_key_pem is not a valid PEM key"), "{stderr}");
}

#[tokio::test]
async fn embedded_serve_runs_its_workers_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(dir.path());
    let server = ServerProcess::serve(cmd).await;
    let db = Database::connect(sqlite_url(dir.path())).await.unwrap();
    assert!(
        eventually(100, || async { worker::Entity::find().count(&db).await.unwrap_or(0) == 1 }).await,
        "serve registers its in-process worker"
    );
    let row = worker::Entity::find().one(&db).await.unwrap().unwrap();
    assert_eq!(row.pid as u32, server.child.id().unwrap());
    let (status, _) = server.terminate().await;
    assert!(status.success());
    assert_eq!(worker::Entity::find().count(&db).await.unwrap(), 0, "deregistered on shutdown");

    // With workers.embedded = false the API runs alone.
    let mut cmd = reelhouse_command();
    cmd.arg("--data-dir").arg(dir.path()).env("REELHOUSE__WORKERS__EMBEDDED", "false");
    let server = ServerProcess::serve(cmd).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(worker::Entity::find().count(&db).await.unwrap(), 0);
    let (status, _) = server.terminate().await;
    assert!(status.success());
}
