//! Creating accounts.

use entities::{user, Role};
use sea_orm::{ConnectionTrait, DatabaseConnection};

use crate::auth::password::{check_policy, hash_password, needs_rehash, verify_password, HashingPool};
use crate::error::{AppError, ErrorCode};
use crate::repo::users;

/// Lowercased and trimmed; the unique key of an account.
pub fn normalize_email(email: &str) -> Result<String, AppError> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !email.chars().any(char::is_whitespace);
    if !valid {
        return Err(AppError::bad_input("email address is not valid"));
    }
    Ok(email)
}

/// Create an account after checking the email and the password policy (for the
/// CLI and tests: one at a time, so its hashing needs no shared bound). The address
/// counts as verified: whoever runs the CLI vouches for it.
pub async fn create_user(
    db: &DatabaseConnection,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> Result<user::Model, AppError> {
    let account = prepare_account(db, &HashingPool::new(Some(1)), email, password, display_name, role).await?;
    insert_account(db, account, true).await
}

/// [`create_user`], hashing in one of `hashing`'s slots (`UNAVAILABLE` when full);
/// the address is not verified.
pub async fn create_user_in(
    db: &DatabaseConnection,
    hashing: &HashingPool,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> Result<user::Model, AppError> {
    let account = prepare_account(db, hashing, email, password, display_name, role).await?;
    insert_account(db, account, false).await
}

/// A checked account, its password hashed, ready to insert.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub email: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
}

/// Check the email, the password policy and the display name, and hash the
/// password (outside any transaction: argon2 is slow on purpose).
pub async fn prepare_account(
    db: &DatabaseConnection,
    hashing: &HashingPool,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> Result<NewAccount, AppError> {
    let email = normalize_email(email)?;
    check_policy(password, &email)?;
    let display_name = display_name.trim();
    if display_name.is_empty() || display_name.chars().count() > 100 {
        return Err(AppError::bad_input("display name must be 1 to 100 characters"));
    }
    let exists = users::find_by_email(db, &email).await?.is_some();
    if exists {
        return Err(AppError::new(ErrorCode::Conflict, "an account with this email already exists"));
    }
    // argon2 is deliberately slow: keep it off the async workers, and bounded.
    let candidate = password.to_string();
    let password_hash = hashing.run(move || hash_password(&candidate)).await??;
    Ok(NewAccount { email, display_name: display_name.to_string(), password_hash, role })
}

/// Insert a prepared account on `conn` (a transaction when more must commit with it).
pub async fn insert_account<C: ConnectionTrait>(
    conn: &C,
    account: NewAccount,
    verified: bool,
) -> Result<user::Model, AppError> {
    let new_user = users::NewUser {
        email: account.email,
        display_name: account.display_name,
        password_hash: account.password_hash,
        role: account.role,
        verified,
    };
    // Two concurrent sign-ups with one email: the unique index decides, and the
    // loser gets the same CONFLICT as a sequential duplicate.
    users::insert(conn, new_user).await.map_err(|err| match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            AppError::new(ErrorCode::Conflict, "an account with this email already exists")
        }
        _ => AppError::from(err),
    })
}

/// The same answer for an unknown email and a wrong password.
const BAD_CREDENTIALS: &str = "invalid email or password";

/// A hash with the current parameters, verified against when the email is unknown so
/// that answer takes as long as a wrong password.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("reelhouse dummy password 0").unwrap_or_default())
}

/// Compute the dummy hash now (at startup) rather than on the first failed sign-in.
pub fn warm_up() {
    let _ = dummy_hash();
}

/// Check an email and password. Argon2 runs on the blocking pool in one of
/// `hashing`'s slots (`UNAVAILABLE` when they are all taken); a hash with weaker
/// parameters than the current defaults is replaced by a fresh one.
/// Failures are client errors, logged once where they become a response.
#[tracing::instrument(skip_all)]
pub async fn verify_credentials(
    db: &DatabaseConnection,
    hashing: &HashingPool,
    email: &str,
    password: &str,
) -> Result<user::Model, AppError> {
    let found = match normalize_email(email) {
        Ok(email) => users::find_by_email(db, &email).await?,
        Err(_) => None,
    };
    let stored = found.as_ref().map_or_else(|| dummy_hash().to_string(), |u| u.password_hash.clone());
    let candidate = password.to_string();
    let (matches, candidate) = hashing.run(move || (verify_password(&candidate, &stored), candidate)).await?;
    let Some(user) = found.filter(|_| matches) else {
        return Err(AppError::unauthenticated(BAD_CREDENTIALS));
    };
    if user.disabled {
        return Err(AppError::forbidden("this account is disabled"));
    }
    if needs_rehash(&user.password_hash) {
        let fresh = hashing.run(move || hash_password(&candidate)).await??;
        return Ok(users::set_password_hash(db, user, fresh).await?);
    }
    Ok(user)
}
