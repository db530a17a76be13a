//! Server secrets: one master secret, from settings or generated into the data dir,
//! from which the JWT key, the URL-signing key and the keys sealing webhook secrets,
//! TOTP secrets and queued mail at rest are derived (so rotating the master rotates
//! them all, and no key is reused for another purpose).

pub mod sealed;

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::config::Settings;

pub const GENERATED_KEY_FILE: &str = "secret.key";

#[derive(Clone)]
pub struct ServerKeys {
    pub jwt: Vec<u8>,
    pub url_signing: Vec<u8>,
    /// Seals webhook signing secrets at rest (`webhooks::secrets`).
    pub webhook_secrets: Vec<u8>,
    /// The same key derived from each of `auth.previous_jwt_secrets`: still opens
    /// what it sealed, until the startup pass re-seals it under the current key.
    pub previous_webhook_secrets: Vec<Vec<u8>>,
    /// Seals the payloads of SEND_MAIL jobs (they carry one-use links) at rest (`mail`).
    pub mail_payloads: Vec<u8>,
    /// The mail key of each of `auth.previous_jwt_secrets`: SEND_MAIL jobs queued
    /// before a rotation still open (and are delivered) after it.
    pub previous_mail_payloads: Vec<Vec<u8>>,
    /// Seals users' TOTP secrets at rest (`auth::totp`).
    pub totp_secrets: Vec<u8>,
    /// The TOTP key of each of `auth.previous_jwt_secrets`: still opens what it
    /// sealed (a secret is re-sealed under the current key when next used).
    pub previous_totp_secrets: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerKeys([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("auth.jwt_secret must be set (REELHOUSE__AUTH__JWT_SECRET) when the database is shared: replicas must sign with the same key")]
    MissingForSharedDatabase,
    #[error("reading or writing the generated key file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the generated key file {0} is corrupt; delete it to generate a new one (this signs everyone out)")]
    Corrupt(PathBuf),
}

impl ServerKeys {
    /// Keys from `auth.jwt_secret`, or — with SQLite only — from a key generated on
    /// first start into `{data_dir}/secret.key` (mode 0600) and reused afterwards.
    pub fn load_or_generate(settings: &Settings) -> Result<Self, KeyError> {
        let previous = |label: &[u8]| -> Vec<Vec<u8>> {
            settings
                .auth
                .previous_jwt_secrets
                .iter()
                .map(|secret| derive_key(secret.expose().as_bytes(), label))
                .collect()
        };
        let with_previous = |keys: Self| Self {
            previous_webhook_secrets: previous(WEBHOOK_SECRETS_LABEL),
            previous_totp_secrets: previous(TOTP_SECRETS_LABEL),
            previous_mail_payloads: previous(MAIL_PAYLOADS_LABEL),
            ..keys
        };
        if let Some(secret) = &settings.auth.jwt_secret {
            return Ok(with_previous(Self::derive(secret.expose().as_bytes())));
        }
        if !settings.uses_sqlite() {
            return Err(KeyError::MissingForSharedDatabase);
        }
        let path = settings.server.data_dir.join(GENERATED_KEY_FILE);
        let master = read_or_create_key_file(&path)?;
        tracing::warn!(
            path = %path.display(),
            "using a signing key generated into the data dir; set auth.jwt_secret (REELHOUSE__AUTH__JWT_SECRET) in production"
        );
        Ok(with_previous(Self::derive(&master)))
    }

    fn derive(master: &[u8]) -> Self {
        Self {
            jwt: derive_jwt_key(master),
            url_signing: derive_key(master, b"reelhouse/url-signing/v1"),
            webhook_secrets: derive_key(master, WEBHOOK_SECRETS_LABEL),
            previous_webhook_secrets: Vec::new(),
            mail_payloads: derive_key(master, MAIL_PAYLOADS_LABEL),
            previous_mail_payloads: Vec::new(),
            totp_secrets: derive_key(master, TOTP_SECRETS_LABEL),
            previous_totp_secrets: Vec::new(),
        }
    }
}

/// The HS256 key of a master secret; `auth::tokens` derives retired secrets' keys
/// with the same function, so a retired secret verifies what it signed.
pub fn derive_jwt_key(master: &[u8]) -> Vec<u8> {
    derive_key(master, JWT_LABEL)
}

const JWT_LABEL: &[u8] = b"reelhouse/jwt/v1";
const WEBHOOK_SECRETS_LABEL: &[u8] = b"reelhouse/webhook-secrets/v1";
const TOTP_SECRETS_LABEL: &[u8] = b"reelhouse/totp-secrets/v1";
const MAIL_PAYLOADS_LABEL: &[u8] = b"reelhouse/mail-payloads/v1";

fn derive_key(master: &[u8], label: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; fall back defensively anyway.
    match Hmac::<Sha256>::new_from_slice(master) {
        Ok(mut mac) => {
            mac.update(label);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => master.to_vec(),
    }
}

fn read_or_create_key_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::Corrupt(path.to_path_buf()))?;
            if key.len() < 32 {
                return Err(KeyError::Corrupt(path.to_path_buf()));
            }
            Ok(key)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut key = vec![0u8; 64];
            rand::rngs::OsRng.fill_bytes(&mut key);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(base64::engine::general_purpose::STANDARD.encode(&key).as_bytes()).map_err(io)?;
                    file.sync_all().map_err(io)?;
                    tracing::info!(path = %path.display(), "generated a new signing key");
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read_or_create_key_file(path),
                Err(err) => Err(io(err)),
            }
        }
        Err(err) => Err(io(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.server.data_dir = dir.path().to_path_buf();
        let first = ServerKeys::load_or_generate(&settings).unwrap();
        let second = ServerKeys::load_or_generate(&settings).unwrap();
        assert_eq!(first.jwt, second.jwt);
        assert_ne!(first.jwt, first.url_signing);
        assert_eq!(first.webhook_secrets, second.webhook_secrets);
        assert!(first.webhook_secrets != first.jwt && first.webhook_secrets != first.url_signing);
        assert_eq!(first.totp_secrets, second.totp_secrets);
        assert!(first.totp_secrets != first.webhook_secrets && first.totp_secrets != first.jwt);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(GENERATED_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn shared_database_requires_a_configured_secret() {
        let mut settings = Settings::default();
        settings.database.url = Some(crate::config::SecretUrl::new("postgres://db/app"));
        assert!(matches!(ServerKeys::load_or_generate(&settings), Err(KeyError::MissingForSharedDatabase)));
    }
}
