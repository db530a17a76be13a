//! Creating accounts.

use chrono::Utc;
use entities::{user, Role};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::auth::password::{check_policy, hash_password};
use crate::error::{AppError, ErrorCode};

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

/// Create an account after checking the email and the password policy.
pub async fn create_user(
    db: &DatabaseConnection,
    email: &str,
    password: &str,
    display_name: &str,
    role: Role,
) -> Result<user::Model, AppError> {
    let email = normalize_email(email)?;
    check_policy(password, &email)?;
    let display_name = display_name.trim();
    if display_name.is_empty() || display_name.chars().count() > 100 {
        return Err(AppError::bad_input("display name must be 1 to 100 characters"));
    }
    let exists = user::Entity::find().filter(user::Column::Email.eq(&email)).one(db).await?.is_some();
    if exists {
        return Err(AppError::new(ErrorCode::Conflict, "an account with this email already exists"));
    }
    let now = Utc::now();
    let model = user::ActiveModel {
        id: Set(Uuid::now_v7()),
        email: Set(email),
        display_name: Set(display_name.to_string()),
        password_hash: Set(hash_password(password)?),
        role: Set(role),
        disabled: Set(false),
        storage_quota_bytes: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    Ok(model.insert(db).await?)
}
