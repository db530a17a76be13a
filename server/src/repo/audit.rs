//! The security audit log: who did what to whom, from where, and how it ended.
//!
//! Append-only in code: this module inserts and reads rows and has no update or
//! delete beyond retention pruning ([`prune`]). Every row is also emitted as a
//! structured tracing line with `target: "audit"`. Nothing secret is ever written:
//! callers pass ids and small, fixed details (a role, a reason, a host), never a
//! password, token, key or webhook secret.

use chrono::{DateTime, Utc};
use entities::audit_event;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, Select, Set};
use uuid::Uuid;

use crate::error::AppResult;
use crate::identity::ClientInfo;

/// What happened. The names ([`AuditAction::as_str`]) are stored and shown to
/// clients: never rename one, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    LoginSucceeded,
    LoginFailed,
    RefreshReuseDetected,
    SessionRevoked,
    ApiKeyCreated,
    ApiKeyRevoked,
    RoleChanged,
    PasswordChanged,
    UserDisabled,
    WebhookCreated,
    WebhookUpdated,
    WebhookDeleted,
    VideoHidden,
    VideoUnhidden,
    JobRetried,
    JobCancelled,
    JobPriorityChanged,
    EmailVerified,
    PasswordResetRequested,
    PasswordReset,
    EmailChangeRequested,
    EmailChanged,
    TotpEnabled,
    TotpDisabled,
    MfaFailed,
    RecoveryCodeUsed,
    UserEnabled,
    UserDeleted,
    QuotaChanged,
    WorkerTokenCreated,
    WorkerTokenRevoked,
}

impl AuditAction {
    pub const ALL: [AuditAction; 31] = [
        AuditAction::LoginSucceeded,
        AuditAction::LoginFailed,
        AuditAction::RefreshReuseDetected,
        AuditAction::SessionRevoked,
        AuditAction::ApiKeyCreated,
        AuditAction::ApiKeyRevoked,
        AuditAction::RoleChanged,
        AuditAction::PasswordChanged,
        AuditAction::UserDisabled,
        AuditAction::WebhookCreated,
        AuditAction::WebhookUpdated,
        AuditAction::WebhookDeleted,
        AuditAction::VideoHidden,
        AuditAction::VideoUnhidden,
        AuditAction::JobRetried,
        AuditAction::JobCancelled,
        AuditAction::JobPriorityChanged,
        AuditAction::EmailVerified,
        AuditAction::PasswordResetRequested,
        AuditAction::PasswordReset,
        AuditAction::EmailChangeRequested,
        AuditAction::EmailChanged,
        AuditAction::TotpEnabled,
        AuditAction::TotpDisabled,
        AuditAction::MfaFailed,
        AuditAction::RecoveryCodeUsed,
        AuditAction::UserEnabled,
        AuditAction::UserDeleted,
        AuditAction::QuotaChanged,
        AuditAction::WorkerTokenCreated,
        AuditAction::WorkerTokenRevoked,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            AuditAction::LoginSucceeded => "LOGIN_SUCCEEDED",
            AuditAction::LoginFailed => "LOGIN_FAILED",
            AuditAction::RefreshReuseDetected => "REFRESH_REUSE_DETECTED",
            AuditAction::SessionRevoked => "SESSION_REVOKED",
            AuditAction::ApiKeyCreated => "API_KEY_CREATED",
            AuditAction::ApiKeyRevoked => "API_KEY_REVOKED",
            AuditAction::RoleChanged => "ROLE_CHANGED",
            AuditAction::PasswordChanged => "PASSWORD_CHANGED",
            AuditAction::UserDisabled => "USER_DISABLED",
            AuditAction::WebhookCreated => "WEBHOOK_CREATED",
            AuditAction::WebhookUpdated => "WEBHOOK_UPDATED",
            AuditAction::WebhookDeleted => "WEBHOOK_DELETED",
            AuditAction::VideoHidden => "VIDEO_HIDDEN",
            AuditAction::VideoUnhidden => "VIDEO_UNHIDDEN",
            AuditAction::JobRetried => "JOB_RETRIED",
            AuditAction::JobCancelled => "JOB_CANCELLED",
            AuditAction::JobPriorityChanged => "JOB_PRIORITY_CHANGED",
            AuditAction::EmailVerified => "EMAIL_VERIFIED",
            AuditAction::PasswordResetRequested => "PASSWORD_RESET_REQUESTED",
            AuditAction::PasswordReset => "PASSWORD_RESET",
            AuditAction::EmailChangeRequested => "EMAIL_CHANGE_REQUESTED",
            AuditAction::EmailChanged => "EMAIL_CHANGED",
            AuditAction::TotpEnabled => "TOTP_ENABLED",
            AuditAction::TotpDisabled => "TOTP_DISABLED",
            AuditAction::MfaFailed => "MFA_FAILED",
            AuditAction::RecoveryCodeUsed => "RECOVERY_CODE_USED",
            AuditAction::UserEnabled => "USER_ENABLED",
            AuditAction::UserDeleted => "USER_DELETED",
            AuditAction::QuotaChanged => "QUOTA_CHANGED",
            AuditAction::WorkerTokenCreated => "WORKER_TOKEN_CREATED",
            AuditAction::WorkerTokenRevoked => "WORKER_TOKEN_REVOKED",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.as_str() == name)
    }
}

/// How it ended: done, failed (bad credentials, a conflict), or refused by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditOutcome {
    Success,
    Failure,
    Denied,
}

impl AuditOutcome {
    pub const ALL: [AuditOutcome; 3] = [AuditOutcome::Success, AuditOutcome::Failure, AuditOutcome::Denied];

    pub const fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "SUCCESS",
            AuditOutcome::Failure => "FAILURE",
            AuditOutcome::Denied => "DENIED",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|outcome| outcome.as_str() == name)
    }
}

/// One row to append; the client's address, agent and request id come from the
/// [`ClientInfo`] passed to [`record`].
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: AuditAction,
    pub outcome: AuditOutcome,
    pub actor_id: Option<Uuid>,
    pub target_id: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl AuditEntry {
    pub fn new(action: AuditAction, outcome: AuditOutcome) -> Self {
        Self { action, outcome, actor_id: None, target_id: None, detail: None }
    }

    pub fn actor(mut self, actor_id: Uuid) -> Self {
        self.actor_id = Some(actor_id);
        self
    }

    pub fn target(mut self, target_id: impl ToString) -> Self {
        self.target_id = Some(target_id.to_string());
        self
    }

    /// Small, non-secret context (a role, a reason, a host).
    pub fn detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }
}

fn clip(text: Option<&str>, max: usize) -> Option<String> {
    text.map(|t| t.chars().take(max).collect())
}

/// Append `entry` on `conn` (pass the change's transaction, so the record commits
/// or rolls back with it) and emit it as an `audit` log line.
pub async fn record<C: ConnectionTrait>(conn: &C, client: &ClientInfo, entry: AuditEntry) -> AppResult<()> {
    let row = audit_event::ActiveModel {
        id: Set(Uuid::now_v7()),
        at: Set(Utc::now()),
        action: Set(entry.action.as_str().to_string()),
        actor_id: Set(entry.actor_id),
        target_id: Set(clip(entry.target_id.as_deref(), 128)),
        ip: Set(clip(client.ip.as_deref(), 64)),
        user_agent: Set(clip(client.user_agent.as_deref(), 500)),
        outcome: Set(entry.outcome.as_str().to_string()),
        request_id: Set(clip(client.request_id.as_deref(), 64)),
        detail: Set(entry.detail.clone()),
    }
    .insert(conn)
    .await?;
    tracing::info!(
        target: "audit",
        audit_id = %row.id,
        action = %row.action,
        outcome = %row.outcome,
        actor_id = ?row.actor_id,
        target_id = ?row.target_id,
        ip = ?row.ip,
        user_agent = ?row.user_agent,
        request_id = ?row.request_id,
        detail = ?row.detail.as_ref().map(ToString::to_string),
        "audit event"
    );
    Ok(())
}

/// [`record`] for a failed or refused attempt: a failure to write the record is
/// logged, never returned, so the caller's own (client) error is what the client
/// sees rather than a 500.
pub async fn record_or_log<C: ConnectionTrait>(conn: &C, client: &ClientInfo, entry: AuditEntry) {
    let action = entry.action.as_str();
    if let Err(err) = record(conn, client, entry).await {
        tracing::error!(target: "audit", action, error = ?err, "writing an audit record failed");
    }
}

/// What `auditLog` may be narrowed to; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor_id: Option<Uuid>,
    pub target_id: Option<String>,
    pub outcome: Option<AuditOutcome>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

/// The rows `filter` selects, unordered: page them by id (UUIDv7, so newest first
/// is id descending) with `graphql::paging::by_uuid`.
pub fn filtered(filter: &AuditFilter) -> Select<audit_event::Entity> {
    let mut query = audit_event::Entity::find();
    if let Some(action) = filter.action {
        query = query.filter(audit_event::Column::Action.eq(action.as_str()));
    }
    if let Some(actor_id) = filter.actor_id {
        query = query.filter(audit_event::Column::ActorId.eq(actor_id));
    }
    if let Some(target_id) = &filter.target_id {
        query = query.filter(audit_event::Column::TargetId.eq(target_id.as_str()));
    }
    if let Some(outcome) = filter.outcome {
        query = query.filter(audit_event::Column::Outcome.eq(outcome.as_str()));
    }
    if let Some(from) = filter.from {
        query = query.filter(audit_event::Column::At.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(audit_event::Column::At.lt(to));
    }
    query
}

/// Delete records older than `cutoff` (retention); returns how many.
pub async fn prune<C: ConnectionTrait>(conn: &C, cutoff: DateTime<Utc>) -> Result<u64, DbErr> {
    Ok(audit_event::Entity::delete_many().filter(audit_event::Column::At.lt(cutoff)).exec(conn).await?.rows_affected)
}

/// Prune every `audit.prune_interval_secs` (spawned by startup; every replica may
/// run it, deleting is idempotent). `audit.retention_days = 0` keeps everything.
pub async fn run_pruner(db: sea_orm::DatabaseConnection, settings: crate::config::audit::AuditSettings) {
    if settings.retention_days == 0 {
        return;
    }
    let every = std::time::Duration::from_secs(settings.prune_interval_secs.max(1));
    loop {
        let cutoff = Utc::now() - chrono::TimeDelta::days(i64::from(settings.retention_days));
        match prune(&db, cutoff).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(deleted, "pruned audit records past their retention"),
            Err(err) => tracing::warn!(error = %err, "pruning audit records failed"),
        }
        actix_rt::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_round_trip() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()), Some(action));
            assert!(action.as_str().chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        for outcome in AuditOutcome::ALL {
            assert_eq!(AuditOutcome::parse(outcome.as_str()), Some(outcome));
        }
        assert_eq!(AuditAction::LoginFailed.as_str(), "LOGIN_FAILED");
    }

    /// A log writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    #[tokio::test]
    async fn each_record_is_an_audit_log_line_and_a_failed_write_is_only_logged() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
        let db = sea_orm::Database::connect(url).await.unwrap();
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt().json().with_writer(captured.clone()).finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let client = ClientInfo {
            ip: Some("198.51.100.7".into()),
            user_agent: Some("curl/8".into()),
            request_id: Some("req-1".into()),
        };
        let actor = Uuid::now_v7();
        let entry = AuditEntry::new(AuditAction::LoginFailed, AuditOutcome::Failure)
            .actor(actor)
            .target("someone")
            .detail(serde_json::json!({ "reason": "bad credentials" }));

        // No table yet: `record` fails, `record_or_log` only logs.
        assert!(record(&db, &client, entry.clone()).await.is_err());
        record_or_log(&db, &client, entry.clone()).await;
        assert!(String::from_utf8(captured.0.lock().unwrap().clone())
            .unwrap()
            .contains("writing an audit record failed"));

        crate::db::migrate(&db).await.unwrap();
        captured.0.lock().unwrap().clear();
        record(&db, &client, entry).await.unwrap();
        let line = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(line["target"], "audit", "{line}");
        assert_eq!(line["fields"]["action"], "LOGIN_FAILED", "{line}");
        assert_eq!(line["fields"]["outcome"], "FAILURE", "{line}");
        assert!(line["fields"]["actor_id"].as_str().unwrap().contains(&actor.to_string()), "{line}");
        assert!(line["fields"]["ip"].as_str().unwrap().contains("198.51.100.7"), "{line}");
        assert!(line["fields"]["request_id"].as_str().unwrap().contains("req-1"), "{line}");
        let rows = audit_event::Entity::find().all(&db).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].action, "LOGIN_FAILED");
    }
}
