//! TOTP two-factor sign-in (RFC 6238): enrolment, confirmation with recovery
//! codes, the second factor of a sign-in, and switching it off.
//!
//! Codes are what authenticator apps expect: HMAC-SHA1, 6 digits, 30-second steps,
//! from a 160-bit random secret. A code is accepted for the current step and one
//! step either side (clock skew), and only for a step after the last one accepted
//! for the account (`users.totp_last_step`), so a code cannot be used twice — the
//! step moves forward with a conditional update, which also settles two concurrent
//! uses of one code on different replicas.
//!
//! The secret is sealed at rest with XChaCha20-Poly1305 under its own key derived
//! from the master secret (`keys::ServerKeys::totp_secrets`), bound to the user id,
//! the same construction as webhook secrets (`keys::sealed::SecretBox`).
//! Recovery codes are 80 random bits each; only their SHA-256 is stored.
//!
//! The callers charge the `mfa` rate-limit policy (per account) for every code
//! presented, before it is checked.

use chrono::Utc;
use entities::user;
use rand::{Rng, RngCore};
use sea_orm::ConnectionTrait;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{AppError, ErrorCode};
use crate::keys::sealed::SecretBox;
use crate::keys::ServerKeys;
use crate::repo::totp as repo;

/// Digits of a code.
pub const DIGITS: usize = 6;
/// Seconds per time step.
pub const STEP_SECS: u64 = 30;
/// Steps accepted either side of the current one.
pub const SKEW_STEPS: u64 = 1;
/// Recovery codes handed out by `confirmTotp`.
pub const RECOVERY_CODES: usize = 10;
/// Bytes of a secret (160 bits, RFC 4226's recommendation).
const SECRET_BYTES: usize = 20;
/// Recovery codes are written in this alphabet (Crockford's base32, lowercase:
/// no i, l, o, u), 16 characters = 80 bits, shown as `xxxx-xxxx-xxxx-xxxx`.
const RECOVERY_ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
const RECOVERY_LEN: usize = 16;

/// The issuer shown by authenticator apps: the host of `server.public_url` when
/// set (so two servers are told apart), else "reelhouse".
pub fn issuer(public_url: Option<&str>) -> String {
    public_url
        .and_then(|url| url::Url::parse(url).ok())
        .and_then(|url| url.host_str().map(str::to_string))
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "reelhouse".to_string())
}

fn totp(secret: &[u8]) -> Result<totp_rs::Totp, AppError> {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(DIGITS as u8)
        .with_step_duration(STEP_SECS)
        .with_skew(0)
        .with_secret(secret.to_vec())
        .build()
        .map_err(|err| AppError::internal(anyhow::anyhow!("building a TOTP: {err:?}")))
}

/// The code of `secret` for time step `step` (as an authenticator shows it).
pub fn code_at_step(secret: &[u8], step: u64) -> Result<String, AppError> {
    Ok(totp(secret)?.generate(step.saturating_mul(STEP_SECS)).to_string())
}

/// The RFC 6238 time step of a Unix time.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

fn now_unix() -> u64 {
    u64::try_from(Utc::now().timestamp()).unwrap_or(0)
}

/// The step `code` belongs to, among the steps within [`SKEW_STEPS`] of the step
/// of `now_unix` that come after `last_step`; `None` when it matches none of them.
/// Comparisons are constant-time (`totp_rs::Totp::check`).
pub fn matching_step(
    secret: &[u8],
    code: &str,
    now_unix: u64,
    last_step: Option<i64>,
) -> Result<Option<u64>, AppError> {
    let totp = totp(secret)?;
    let now = step_of(now_unix);
    let first = now.saturating_sub(SKEW_STEPS);
    let after = last_step.and_then(|step| u64::try_from(step).ok());
    let mut matched = None;
    // Every candidate is checked (no early return), so the time taken does not
    // depend on which step matched.
    for step in first..=now + SKEW_STEPS {
        let fresh = after.is_none_or(|last| step > last);
        if totp.check(code, step * STEP_SECS).is_some() && fresh && matched.is_none() {
            matched = Some(step);
        }
    }
    Ok(matched)
}

/// What `enrollTotp` hands the user: the secret (base32, for typing in) and the
/// `otpauth://` URI (for a QR code).
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub secret: String,
    pub otpauth_url: String,
}

/// The `otpauth://totp/…` URI authenticator apps read (Key URI format), with every
/// parameter spelled out.
pub fn otpauth_url(secret_base32: &str, issuer: &str, account: &str) -> Result<String, AppError> {
    let mut url = url::Url::parse("otpauth://totp/").map_err(AppError::internal)?;
    url.set_path(&format!("{issuer}:{account}"));
    url.query_pairs_mut()
        .append_pair("secret", secret_base32)
        .append_pair("issuer", issuer)
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", &DIGITS.to_string())
        .append_pair("period", &STEP_SECS.to_string());
    Ok(url.into())
}

fn sealer(keys: &ServerKeys) -> Result<SecretBox, AppError> {
    SecretBox::new(&keys.totp_secrets, &keys.previous_totp_secrets).map_err(AppError::internal)
}

fn open_secret(keys: &ServerKeys, user: &user::Model) -> Result<Vec<u8>, AppError> {
    let stored = user.totp_secret.as_deref().ok_or_else(|| AppError::internal(anyhow::anyhow!("no TOTP secret")))?;
    let base32 = sealer(keys)?.open(user.id, stored).map_err(AppError::internal)?;
    let secret = totp_rs::Secret::try_from_base32(&base32)
        .map_err(|err| AppError::internal(anyhow::anyhow!("stored TOTP secret is not base32: {err:?}")))?;
    Ok(secret.as_ref().to_vec())
}

/// Start (or restart) an enrolment: a fresh secret, sealed onto the user, not yet
/// in force. `CONFLICT` when two-factor sign-in is already on.
pub async fn enroll(
    conn: &impl ConnectionTrait,
    keys: &ServerKeys,
    user: &user::Model,
    issuer: &str,
) -> Result<Enrollment, AppError> {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let secret = totp_rs::Secret::from(bytes.to_vec()).to_base32();
    let sealed = sealer(keys)?.seal(user.id, &secret).map_err(AppError::internal)?;
    // Conditional on TOTP being off, so an enrolment cannot replace a secret in force.
    if !repo::set_pending_secret(conn, user.id, sealed).await? {
        return Err(already_on());
    }
    let otpauth_url = otpauth_url(&secret, issuer, &user.email)?;
    Ok(Enrollment { secret, otpauth_url })
}

fn already_on() -> AppError {
    AppError::new(ErrorCode::Conflict, "two-factor sign-in is already on; disable it first")
}

/// Confirm an enrolment with a code from the pending secret: switches two-factor
/// sign-in on and returns [`RECOVERY_CODES`] fresh recovery codes (replacing any
/// earlier ones). `Ok(None)`: the code does not match (the caller answers
/// `BAD_USER_INPUT` and audits it). Run it in a transaction.
pub async fn confirm(
    conn: &impl ConnectionTrait,
    keys: &ServerKeys,
    user: &user::Model,
    code: &str,
) -> Result<Option<Vec<String>>, AppError> {
    if user.totp_enabled_at.is_some() {
        return Err(already_on());
    }
    let Some(stored) = user.totp_secret.as_deref() else {
        return Err(AppError::bad_input("no two-factor enrolment to confirm: call enrollTotp first"));
    };
    let secret = open_secret(keys, user)?;
    let Some(step) = matching_step(&secret, &normalize_totp_code(code), now_unix(), None)? else {
        return Ok(None);
    };
    let now = Utc::now();
    // Conditional on the secret the code was checked against still being the
    // pending one (not replaced by a concurrent enrolment, not confirmed twice).
    if !repo::switch_on(conn, user.id, stored, step_value(step), now).await? {
        return Err(AppError::new(ErrorCode::Conflict, "the enrolment changed meanwhile; enrol again"));
    }
    let codes = replace_recovery_codes(conn, user.id).await?;
    Ok(Some(codes))
}

fn step_value(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

async fn replace_recovery_codes(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<Vec<String>, AppError> {
    let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
    repo::replace_recovery_codes(conn, user_id, codes.iter().map(|code| hash_recovery_code(code)).collect()).await?;
    Ok(codes)
}

fn new_recovery_code() -> String {
    let mut rng = rand::rngs::OsRng;
    let chars: String =
        (0..RECOVERY_LEN).map(|_| char::from(RECOVERY_ALPHABET[rng.gen_range(0..RECOVERY_ALPHABET.len())])).collect();
    chars.as_bytes().chunks(4).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect::<Vec<_>>().join("-")
}

/// Recovery codes compare without case, dashes or spaces.
fn normalize_recovery_code(code: &str) -> String {
    code.chars().filter(|c| !matches!(c, '-' | ' ')).flat_map(char::to_lowercase).collect()
}

/// TOTP codes may be typed with spaces (`123 456`).
fn normalize_totp_code(code: &str) -> String {
    code.chars().filter(|c| !c.is_whitespace()).collect()
}

fn hash_recovery_code(code: &str) -> String {
    hex::encode(Sha256::digest(normalize_recovery_code(code).as_bytes()))
}

fn looks_like_totp_code(code: &str) -> bool {
    code.len() == DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// Which kind of second factor was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery code",
        }
    }
}

/// Check a second factor for `user` (who has TOTP on): a TOTP code for a step not
/// yet used, or an unused recovery code, which this spends. `Ok(None)`: wrong,
/// replayed or already spent.
pub async fn verify_second_factor(
    conn: &impl ConnectionTrait,
    keys: &ServerKeys,
    user: &user::Model,
    code: &str,
) -> Result<Option<SecondFactor>, AppError> {
    let totp_code = normalize_totp_code(code);
    if looks_like_totp_code(&totp_code) {
        let secret = open_secret(keys, user)?;
        let Some(step) = matching_step(&secret, &totp_code, now_unix(), user.totp_last_step)? else {
            return Ok(None);
        };
        // A secret sealed under a retired master key moves to the current one.
        let sealer = sealer(keys)?;
        let mut reseal = None;
        if let Some(stored) = user.totp_secret.as_deref().filter(|stored| !sealer.is_current(stored)) {
            let base32 = totp_rs::Secret::from(secret).to_base32();
            let resealed = sealer.seal(user.id, &base32).map_err(AppError::internal)?;
            reseal = Some((stored, resealed));
        }
        // Not accepted: another request took this step (or a later one) first.
        let accepted = repo::advance_step(conn, user.id, step_value(step), reseal).await?;
        return Ok(accepted.then_some(SecondFactor::Totp));
    }
    let normalized = normalize_recovery_code(code);
    if normalized.len() != RECOVERY_LEN {
        return Ok(None);
    }
    let spent = repo::spend_recovery_code(conn, user.id, &hash_recovery_code(&normalized)).await?;
    Ok(spent.then_some(SecondFactor::RecoveryCode))
}

/// Switch two-factor sign-in off: the secret, the last step and every recovery
/// code go. The caller has checked a second factor in the same transaction.
pub async fn disable(conn: &impl ConnectionTrait, user_id: Uuid) -> Result<(), AppError> {
    repo::clear(conn, user_id).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 (the 8-digit values' last 6 digits: the same
    /// truncation with a smaller modulus).
    #[test]
    fn rfc_6238_test_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59u64, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
            (20_000_000_000, "353130"),
        ] {
            assert_eq!(code_at_step(secret, step_of(time)).unwrap(), code, "T = {time}");
        }
    }

    #[test]
    fn codes_match_within_one_step_and_only_after_the_last_accepted() {
        let secret = b"12345678901234567890";
        let now = 1_111_111_111; // step 37037037
        let step = step_of(now);
        for candidate in [step - 1, step, step + 1] {
            let code = code_at_step(secret, candidate).unwrap();
            assert_eq!(matching_step(secret, &code, now, None).unwrap(), Some(candidate));
        }
        for far in [step - 2, step + 2] {
            let code = code_at_step(secret, far).unwrap();
            assert_eq!(matching_step(secret, &code, now, None).unwrap(), None, "step {far} is out of the window");
        }
        let code = code_at_step(secret, step).unwrap();
        assert_eq!(matching_step(secret, &code, now, Some(step as i64)).unwrap(), None, "replayed");
        assert_eq!(matching_step(secret, &code, now, Some(step as i64 - 1)).unwrap(), Some(step));
        let next = code_at_step(secret, step + 1).unwrap();
        assert_eq!(matching_step(secret, &next, now, Some(step as i64)).unwrap(), Some(step + 1));
        assert_eq!(matching_step(secret, "12345", now, None).unwrap(), None);
        assert_eq!(matching_step(secret, "abcdef", now, None).unwrap(), None);
    }

    #[test]
    fn otpauth_url_names_issuer_account_and_parameters() {
        let url = otpauth_url("JBSWY3DPEHPK3PXP", "media.example.com", "ada+tv@example.com").unwrap();
        let parsed = url::Url::parse(&url).unwrap();
        assert_eq!(parsed.scheme(), "otpauth");
        assert_eq!(parsed.host_str(), Some("totp"));
        let pairs: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
        assert_eq!(pairs["secret"], "JBSWY3DPEHPK3PXP");
        assert_eq!(pairs["issuer"], "media.example.com");
        assert_eq!(
            (pairs["algorithm"].as_str(), pairs["digits"].as_str(), pairs["period"].as_str()),
            ("SHA1", "6", "30")
        );
        assert!(parsed.path().starts_with("/media.example.com:ada"), "{url}");
        assert_eq!(issuer(Some("https://media.example.com:8443/")), "media.example.com");
        assert_eq!(issuer(None), "reelhouse");
    }

    #[test]
    fn recovery_codes_are_random_and_compare_loosely() {
        let a = new_recovery_code();
        let b = new_recovery_code();
        assert_ne!(a, b);
        assert_eq!(a.len(), RECOVERY_LEN + 3, "{a}");
        assert_eq!(normalize_recovery_code(&a).len(), RECOVERY_LEN);
        assert_eq!(hash_recovery_code(&a), hash_recovery_code(&a.to_uppercase().replace('-', " ")));
        assert_ne!(hash_recovery_code(&a), hash_recovery_code(&b));
        assert!(!looks_like_totp_code(&normalize_totp_code(&a)));
        assert!(looks_like_totp_code(&normalize_totp_code("123 456")));
    }
}
