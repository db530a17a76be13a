//! Password policy and hashing (argon2id with the argon2 crate's defaults:
//! 19 MiB memory, 2 iterations, 1 lane — the OWASP minimum).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::AppError;

pub const MIN_PASSWORD_LEN: usize = 10;
pub const MAX_PASSWORD_LEN: usize = 1024;

/// Why a password was refused; the message is shown to the person choosing it.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    #[error("password must be at least {MIN_PASSWORD_LEN} characters long")]
    TooShort,
    #[error("password must be at most {MAX_PASSWORD_LEN} characters long")]
    TooLong,
    #[error("password must mix at least two kinds of characters (letters, digits, symbols)")]
    OneClass,
    #[error("password must not be your email address")]
    IsEmail,
}

impl From<PasswordPolicyError> for AppError {
    fn from(err: PasswordPolicyError) -> Self {
        AppError::bad_input(err.to_string())
    }
}

/// Minimum length, not all one class of character, and not the email itself.
pub fn check_policy(password: &str, email: &str) -> Result<(), PasswordPolicyError> {
    let len = password.chars().count();
    if len < MIN_PASSWORD_LEN {
        return Err(PasswordPolicyError::TooShort);
    }
    if len > MAX_PASSWORD_LEN {
        return Err(PasswordPolicyError::TooLong);
    }
    let class = |c: char| {
        if c.is_alphabetic() {
            0
        } else if c.is_numeric() {
            1
        } else {
            2
        }
    };
    let mut chars = password.chars().map(class);
    let first = chars.next();
    if chars.all(|c| Some(c) == first) {
        return Err(PasswordPolicyError::OneClass);
    }
    let email = email.trim();
    let local_part = email.split('@').next().unwrap_or("");
    if password.eq_ignore_ascii_case(email) || (!local_part.is_empty() && password.eq_ignore_ascii_case(local_part)) {
        return Err(PasswordPolicyError::IsEmail);
    }
    Ok(())
}

/// Hash with argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("hashing password: {e}")))
}

/// Constant-time verification against a stored PHC string.
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok())
}

/// Bounds how many argon2 computations run at once: each holds ~19 MiB and a core
/// for tens of milliseconds, so hundreds of concurrent sign-ins would exhaust
/// memory and the blocking pool. When every slot is taken the caller is answered
/// `UNAVAILABLE` with `Retry-After` at once rather than queued.
#[derive(Clone, Debug)]
pub struct HashingPool {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Seconds a refused caller is asked to wait.
const HASHING_RETRY_AFTER_SECS: u64 = 1;

impl HashingPool {
    /// `size` slots; `None` means twice the CPU cores.
    pub fn new(size: Option<usize>) -> Self {
        let size = size.unwrap_or_else(|| 2 * std::thread::available_parallelism().map_or(1, usize::from)).max(1);
        Self { slots: std::sync::Arc::new(tokio::sync::Semaphore::new(size)) }
    }

    /// Take a slot if one is free (the tests hold one to fill the pool).
    pub fn try_reserve(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.slots.clone().try_acquire_owned().ok()
    }

    /// Run `work` (hashing or verifying) on the blocking pool in a free slot, or
    /// answer `UNAVAILABLE` when there is none.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, AppError> {
        let Some(slot) = self.try_reserve() else {
            metrics::counter!("reelhouse_password_hashing_refused_total").increment(1);
            return Err(AppError::new(
                crate::error::ErrorCode::Unavailable,
                "the server is busy checking passwords, try again shortly",
            )
            .with_retry_after(HASHING_RETRY_AFTER_SECS));
        };
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            work()
        })
        .await
        .map_err(AppError::internal)
    }
}

/// True when a stored hash is not argon2id or uses weaker parameters than the
/// current defaults, so it should be replaced at the next successful sign-in.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else { return true };
    if hash.algorithm != argon2::Algorithm::Argon2id.ident() {
        return true;
    }
    let Ok(params) = argon2::Params::try_from(&hash) else { return true };
    let current = argon2::Params::default();
    params.m_cost() < current.m_cost() || params.t_cost() < current.t_cost() || params.p_cost() < current.p_cost()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_weak_passwords_with_reasons() {
        let email = "ada@example.com";
        assert_eq!(check_policy("short1!", email), Err(PasswordPolicyError::TooShort));
        assert_eq!(check_policy("abcdefghijkl", email), Err(PasswordPolicyError::OneClass));
        assert_eq!(check_policy("123456789012", email), Err(PasswordPolicyError::OneClass));
        assert_eq!(check_policy("ADA@example.com", email), Err(PasswordPolicyError::IsEmail));
        assert_eq!(check_policy("correct horse 7", email), Ok(()));
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse 7").unwrap();
        let b = hash_password("correct horse 7").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salts must differ");
        assert!(verify_password("correct horse 7", &a));
        assert!(!verify_password("correct horse 8", &a));
        assert!(!verify_password("anything", "not a phc string"));
        assert!(!needs_rehash(&a));
        let weak = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse 7", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        assert!(needs_rehash(&weak));
    }
}
