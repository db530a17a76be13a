//! Roles mapped to named permissions, and the async-graphql guards that enforce them.
//!
//! | role      | permissions |
//! | --------- | ----------- |
//! | VIEWER    | ReadOwnVideos |
//! | USER      | + WriteOwnVideos, ManageApiKeys |
//! | MODERATOR | + ModerateVideos |
//! | ADMIN     | + ManageUsers, SeeAllJobs |

use async_graphql::{Context, ErrorExtensions, Guard};

use crate::auth::principal::{Principal, RequestAuth};
use crate::error::AppError;
use crate::error::GqlResultExt;
pub use crate::identity::{has_permission, rank, Permission};

/// The authenticated caller, or `UNAUTHENTICATED` (missing or invalid credentials).
pub fn require_principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, AppError> {
    match ctx.data_opt::<RequestAuth>() {
        Some(RequestAuth::Authenticated(principal)) => Ok(principal),
        Some(RequestAuth::Invalid(reason)) => Err(AppError::unauthenticated(*reason)),
        Some(RequestAuth::Unavailable) => Err(crate::auth::principal::auth_unavailable()),
        Some(RequestAuth::Anonymous) | None => Err(AppError::unauthenticated("authentication required")),
    }
}

/// Lets the field run only for an authenticated caller.
pub struct AuthenticatedGuard;

impl Guard for AuthenticatedGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        require_principal(ctx).map(|_| ()).gql()
    }
}

/// Lets the field run only for a caller whose role grants the permission.
pub struct PermissionGuard(pub Permission);

impl Guard for PermissionGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let principal = require_principal(ctx).gql()?;
        if has_permission(principal.role, self.0) {
            Ok(())
        } else {
            Err(AppError::forbidden("your role does not allow this").extend())
        }
    }
}

#[cfg(test)]
mod tests {
    use entities::Role;

    use super::*;

    #[test]
    fn permissions_grow_with_rank() {
        let roles = [Role::Viewer, Role::User, Role::Moderator, Role::Admin];
        for permission in Permission::ALL {
            for pair in roles.windows(2) {
                assert!(!has_permission(pair[0], permission) || has_permission(pair[1], permission), "{permission:?}");
            }
        }
        assert!(has_permission(Role::Admin, Permission::ManageUsers));
        assert!(!has_permission(Role::Moderator, Permission::ManageUsers));
        assert!(!has_permission(Role::Viewer, Permission::WriteOwnVideos));
    }
}
