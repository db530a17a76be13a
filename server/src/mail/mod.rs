//! Account mail: the [`Mailer`] that delivers, and the SEND_MAIL jobs that carry
//! each mail through the durable queue.
//!
//! A mail is rendered where it is asked for (the API process knows its public URL),
//! sealed, and enqueued as a SEND_MAIL job in the same transaction as the change
//! that needs it (a new account, a reset token). The payload holds only the mail's
//! id, its template name and the sealed mail (XChaCha20-Poly1305 under a key
//! derived from the master secret, the mail id as associated data): the one-use
//! links never sit in the jobs table in plain text; mail sealed under a master secret
//! since retired into `auth.previous_jwt_secrets` still opens. Workers run SEND_MAIL in their
//! own lane (`mail.concurrency` slots beside the media jobs), so a mail never waits
//! behind a long transcode; a failed delivery is retried with the queue's back-off
//! up to `mail.max_attempts`, and a permanent SMTP refusal (5xx) fails the job.
//!
//! Transport: SMTP through lettre when `mail.smtp_url` is set (`smtp://` plain,
//! `?tls=opportunistic` or `?tls=required` STARTTLS, `smtps://` implicit TLS,
//! credentials from the URL's userinfo); otherwise each mail is written atomically
//! as `{data_dir}/mail/<mail id>.eml`: the same RFC 5322 bytes SMTP would carry.

pub mod templates;

use std::path::PathBuf;
use std::time::Duration;

use entities::{job, JobKind};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sea_orm::ConnectionTrait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::Settings;
use crate::error::AppError;
use crate::keys::sealed::SecretBox;
use crate::keys::ServerKeys;
pub use templates::OutgoingMail;

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("mail settings: {0}")]
    Config(String),
    #[error("the address `{0}` cannot receive mail")]
    BadAddress(String),
    #[error("building the message: {0}")]
    Build(String),
    /// The server refused for good (5xx): retrying will not help.
    #[error("the SMTP server refused the mail: {0}")]
    Rejected(String),
    /// Unreachable, timed out, or refused for now (4xx): retry later.
    #[error("sending the mail failed: {0}")]
    Transient(String),
    #[error("writing the mail file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the sealed mail cannot be opened")]
    Seal,
}

enum Transport {
    Smtp { transport: AsyncSmtpTransport<Tokio1Executor>, host: String },
    Files(PathBuf),
}

/// Delivers rendered mails; seals and opens queued ones.
pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    seal: SecretBox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("transport", &self.describe()).field("from", &self.from.to_string()).finish()
    }
}

/// Where a mail went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Smtp,
    File(PathBuf),
}

impl Mailer {
    pub fn new(settings: &Settings, keys: &ServerKeys) -> Result<Self, MailError> {
        let mail = &settings.mail;
        let from: Mailbox = mail.from.parse().map_err(|_| MailError::Config("mail.from is not an address".into()))?;
        let transport = match &mail.smtp_url {
            Some(url) => {
                let host = url::Url::parse(url.expose())
                    .ok()
                    .and_then(|u| u.host_str().map(|h| format!("{h}:{}", u.port().unwrap_or(0))))
                    .unwrap_or_default();
                // The URL's error may quote the URL: say only what is wrong.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                    .map_err(|_| MailError::Config("mail.smtp_url cannot be used".into()))?
                    .timeout(Some(Duration::from_secs(mail.send_timeout_secs.max(1))))
                    .build();
                Transport::Smtp { transport, host }
            }
            None => Transport::Files(settings.server.data_dir.join("mail")),
        };
        // Retired keys still open: a SEND_MAIL job queued before the master secret
        // was rotated (into `auth.previous_jwt_secrets`) is delivered after it.
        let seal = SecretBox::new(&keys.mail_payloads, &keys.previous_mail_payloads)
            .map_err(|_| MailError::Config("mail sealing key".into()))?;
        Ok(Self { transport, from, seal })
    }

    /// `smtp host:port` or `files in DIR`, for logs (never credentials).
    pub fn describe(&self) -> String {
        match &self.transport {
            Transport::Smtp { host, .. } => format!("smtp {host}"),
            Transport::Files(dir) => format!("files in {}", dir.display()),
        }
    }

    /// The message exactly as it is sent (and written to `.eml`).
    pub fn build_message(&self, mail_id: Uuid, mail: &OutgoingMail) -> Result<Message, MailError> {
        let to: Mailbox = mail.to.parse().map_err(|_| MailError::BadAddress(mail.to.clone()))?;
        let domain = self.from.email.domain().to_string();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(format!("<{mail_id}@{domain}>")))
            .multipart(MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone()))
            .map_err(|err| MailError::Build(err.to_string()))
    }

    /// Send one mail now (the job runner calls this; requests never wait on it).
    pub async fn deliver(&self, mail_id: Uuid, mail: &OutgoingMail) -> Result<Delivered, MailError> {
        let message = self.build_message(mail_id, mail)?;
        match &self.transport {
            Transport::Smtp { transport, .. } => match transport.send(message).await {
                Ok(_) => Ok(Delivered::Smtp),
                Err(err) if err.is_permanent() => Err(MailError::Rejected(err.to_string())),
                Err(err) => Err(MailError::Transient(err.to_string())),
            },
            Transport::Files(dir) => {
                let bytes = message.formatted();
                tokio::fs::create_dir_all(dir).await?;
                let path = dir.join(format!("{mail_id}.eml"));
                // Written beside, then renamed: a reader never sees half a mail.
                let partial = dir.join(format!(".{mail_id}.eml.partial"));
                tokio::fs::write(&partial, &bytes).await?;
                tokio::fs::rename(&partial, &path).await?;
                Ok(Delivered::File(path))
            }
        }
    }

    fn seal_mail(&self, mail_id: Uuid, mail: &OutgoingMail) -> Result<String, MailError> {
        let json = serde_json::to_string(mail).map_err(|err| MailError::Build(err.to_string()))?;
        self.seal.seal(mail_id, &json).map_err(|_| MailError::Seal)
    }

    pub fn open_mail(&self, mail_id: Uuid, sealed: &str) -> Result<OutgoingMail, MailError> {
        // Only sealed payloads are accepted (the box would pass plain text through).
        if !sealed.starts_with("enc1:") {
            return Err(MailError::Seal);
        }
        let json = self.seal.open(mail_id, sealed).map_err(|_| MailError::Seal)?;
        serde_json::from_str(&json).map_err(|_| MailError::Seal)
    }
}

/// What a SEND_MAIL job's payload holds.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailPayload {
    pub mail_id: Uuid,
    pub template: String,
    pub sealed: String,
}

/// Enqueue `mail` as a SEND_MAIL job on `conn` (the caller's transaction).
pub async fn enqueue<C: ConnectionTrait>(
    conn: &C,
    mailer: &Mailer,
    settings: &Settings,
    mail: &OutgoingMail,
) -> Result<job::Model, AppError> {
    let mail_id = Uuid::now_v7();
    let sealed = mailer.seal_mail(mail_id, mail).map_err(AppError::internal)?;
    let payload = MailPayload { mail_id, template: mail.template.clone(), sealed };
    let new = crate::repo::jobs::NewJob {
        kind: JobKind::SendMail,
        video_id: None,
        // No owner: mail is not media work, so no processing budget or fairness applies.
        owner_id: None,
        priority: crate::repo::jobs::DEFAULT_PRIORITY,
        payload: serde_json::to_value(&payload).map_err(AppError::internal)?,
        max_attempts: settings.mail.max_attempts,
    };
    let job = crate::repo::jobs::enqueue(conn, new).await?;
    metrics::counter!("reelhouse_mail_queued_total", "template" => template_label(&mail.template)).increment(1);
    Ok(job)
}

/// The metrics label of a template name (a fixed set).
pub fn template_label(template: &str) -> &'static str {
    match template {
        "VERIFY_EMAIL" => "VERIFY_EMAIL",
        "CONFIRM_NEW_EMAIL" => "CONFIRM_NEW_EMAIL",
        "EMAIL_CHANGE_NOTICE" => "EMAIL_CHANGE_NOTICE",
        "PASSWORD_RESET" => "PASSWORD_RESET",
        "PASSWORD_CHANGED" => "PASSWORD_CHANGED",
        "SIGNUP_ATTEMPT" => "SIGNUP_ATTEMPT",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings_with(secret: &str, previous: &[&str]) -> Settings {
        let mut settings = Settings::default();
        settings.auth.jwt_secret = Some(Secret::new(secret.to_string()));
        settings.auth.previous_jwt_secrets = previous.iter().map(|s| Secret::new(s.to_string())).collect();
        settings
    }

    fn mailer(settings: &Settings) -> Mailer {
        Mailer::new(settings, &ServerKeys::load_or_generate(settings).unwrap()).unwrap()
    }

    #[test]
    fn mail_queued_before_a_master_secret_rotation_opens_after_it() {
        let (old, new) = ("o".repeat(40), "n".repeat(40));
        let mail = templates::password_reset("a@example.com", "A", "http://h/reset-password?token=t", 3600);
        let id = Uuid::now_v7();
        let sealed = mailer(&settings_with(&old, &[])).seal_mail(id, &mail).unwrap();

        let rotated = mailer(&settings_with(&new, &[&old]));
        assert_eq!(rotated.open_mail(id, &sealed).unwrap(), mail);
        // Still bound to its mail id, and new mail is sealed under the new key only.
        assert!(rotated.open_mail(Uuid::now_v7(), &sealed).is_err());
        let resealed = rotated.seal_mail(id, &mail).unwrap();
        assert!(mailer(&settings_with(&old, &[])).open_mail(id, &resealed).is_err());
        // Once the old secret is dropped from the previous ones, its mail no longer opens.
        assert!(matches!(mailer(&settings_with(&new, &[])).open_mail(id, &sealed), Err(MailError::Seal)));
    }
}
