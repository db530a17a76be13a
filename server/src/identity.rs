//! Who is asking, and what they may do: the caller ([`Principal`]), where the
//! request came from ([`ClientInfo`]), and the one table from role to permissions.
//! Plain types every layer shares; how credentials become a `Principal` is `auth`'s.

use entities::Role;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    AccessToken,
    ApiKey,
}

/// An authenticated caller. `role` is the effective role: the user's current role,
/// or for an API key the key's role capped at its owner's current role.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: Uuid,
    pub role: Role,
    pub method: AuthMethod,
    /// The session (refresh-token family) of an access token.
    pub family_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
}

/// Where a request came from, recorded on sessions and in the audit log.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// The request id (`x-request-id`, from tracing-actix-web).
    pub request_id: Option<String>,
}

/// What a caller may do. Resolvers check permissions, never roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadOwnVideos,
    WriteOwnVideos,
    ModerateVideos,
    ManageUsers,
    SeeAllJobs,
    ManageApiKeys,
}

impl Permission {
    pub const ALL: [Permission; 6] = [
        Permission::ReadOwnVideos,
        Permission::WriteOwnVideos,
        Permission::ModerateVideos,
        Permission::ManageUsers,
        Permission::SeeAllJobs,
        Permission::ManageApiKeys,
    ];
}

/// Higher is more powerful; a key or a granted role may never outrank its grantor.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::Viewer => 0,
        Role::User => 1,
        Role::Moderator => 2,
        Role::Admin => 3,
    }
}

/// The one table from role to permissions.
pub fn has_permission(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match permission {
        ReadOwnVideos => true,
        WriteOwnVideos | ManageApiKeys => rank(role) >= rank(Role::User),
        ModerateVideos => rank(role) >= rank(Role::Moderator),
        ManageUsers | SeeAllJobs => role == Role::Admin,
    }
}

/// The less powerful of two roles.
pub fn lower_role(a: Role, b: Role) -> Role {
    if rank(a) <= rank(b) {
        a
    } else {
        b
    }
}
