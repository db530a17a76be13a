//! `[mail]`: how account mail leaves the server, and how long its links work.

use serde::{Deserialize, Serialize};

use super::SecretUrl;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// Where mail is sent: `smtp://host:25` (plain), `smtp://host:587?tls=required`
    /// (STARTTLS required), `smtp://host:587?tls=opportunistic` (STARTTLS when the
    /// server offers it), `smtps://host:465` (implicit TLS). Credentials go in the
    /// userinfo (`smtps://user:pass@host`); printing the settings redacts them.
    /// Unset: each mail is written as `{data_dir}/mail/<id>.eml` instead.
    pub smtp_url: Option<SecretUrl>,
    /// The `From:` of every mail, e.g. `reelhouse <noreply@example.com>`.
    pub from: String,
    /// SEND_MAIL jobs one process runs at once, in their own lane beside the media
    /// jobs (so mail never waits behind a long transcode).
    pub concurrency: usize,
    /// Attempts at delivering one mail before its job is DEAD (retried with the
    /// queue's back-off, `jobs.backoff_*`).
    pub max_attempts: i32,
    /// Seconds one SMTP exchange may take.
    pub send_timeout_secs: u64,
    /// How long a verification link (sign-up, resend, new address) works.
    pub verify_token_ttl_secs: u64,
    /// How long a password-reset link works.
    pub reset_token_ttl_secs: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            from: "reelhouse <noreply@localhost>".into(),
            concurrency: 2,
            max_attempts: 12,
            send_timeout_secs: 30,
            verify_token_ttl_secs: 48 * 3600,
            reset_token_ttl_secs: 3600,
        }
    }
}

impl MailSettings {
    /// Checks that serde cannot express: `(key, message)` of the first problem.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        if let Some(url) = &self.smtp_url {
            match url::Url::parse(url.expose()) {
                Ok(parsed) if matches!(parsed.scheme(), "smtp" | "smtps") && parsed.host_str().is_some() => {
                    let tls = parsed.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.into_owned());
                    if let Some(tls) = tls {
                        if parsed.scheme() == "smtps" || !matches!(tls.as_str(), "required" | "opportunistic") {
                            return Some((
                                "mail.smtp_url",
                                "`tls` may only be `required` or `opportunistic`, and only with smtp://".into(),
                            ));
                        }
                    }
                }
                _ => return Some(("mail.smtp_url", "must be an smtp:// or smtps:// URL with a host".into())),
            }
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Some(("mail.from", format!("`{}` is not an address like `name <user@example.com>`", self.from)));
        }
        if self.concurrency == 0 {
            return Some(("mail.concurrency", "must be at least 1".into()));
        }
        if self.max_attempts < 1 {
            return Some(("mail.max_attempts", "must be at least 1".into()));
        }
        if self.send_timeout_secs == 0 {
            return Some(("mail.send_timeout_secs", "must be at least 1".into()));
        }
        if self.verify_token_ttl_secs < 60 || self.verify_token_ttl_secs > 30 * 24 * 3600 {
            return Some(("mail.verify_token_ttl_secs", "must be between 60 and 2592000 (30 days)".into()));
        }
        if self.reset_token_ttl_secs < 60 || self.reset_token_ttl_secs > 7 * 24 * 3600 {
            return Some(("mail.reset_token_ttl_secs", "must be between 60 and 604800 (7 days)".into()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{SecretUrl, Settings};

    fn with_url(url: &str) -> Settings {
        let mut settings = Settings::default();
        settings.mail.smtp_url = Some(SecretUrl::new(url));
        settings
    }

    #[test]
    fn smtp_credentials_never_print() {
        let settings = with_url("smtps://mailer:hunter2@smtp.example.com:465");
        let dump = settings.to_redacted_toml().unwrap();
        assert!(!dump.contains("hunter2"), "{dump}");
        assert!(dump.contains("smtp.example.com"), "{dump}");
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn smtp_urls_and_addresses_are_checked() {
        for good in
            ["smtp://localhost:25", "smtp://h:587?tls=required", "smtp://h:587?tls=opportunistic", "smtps://u:p@h"]
        {
            assert!(with_url(good).validate().is_ok(), "{good}");
        }
        for bad in ["http://h", "smtp://", "smtps://h?tls=required", "smtp://h?tls=maybe", "not a url"] {
            let err = with_url(bad).validate().unwrap_err();
            assert_eq!(err.key, "mail.smtp_url", "{bad}");
        }
        let mut settings = Settings::default();
        settings.mail.from = "not an address".into();
        assert_eq!(settings.validate().unwrap_err().key, "mail.from");
        let mut settings = Settings::default();
        settings.mail.reset_token_ttl_secs = 10;
        assert_eq!(settings.validate().unwrap_err().key, "mail.reset_token_ttl_secs");
        let mut settings = Settings::default();
        settings.mail.concurrency = 0;
        assert_eq!(settings.validate().unwrap_err().key, "mail.concurrency");
    }
}
