//! Relay pages keyed by a UUID primary key (UUIDv7 ids are time-ordered and
//! unique, so the id alone is a stable keyset): one implementation for `users`,
//! `jobs`, `auditLog` and `webhookDeliveries`. The query is `repo::paging::by_uuid`'s
//! (which `batches`, whose nodes need loading, calls itself).

use async_graphql::connection::{Connection, Edge};
use async_graphql::OutputType;
use sea_orm::{ConnectionTrait, EntityTrait, Select};
use uuid::Uuid;

use crate::error::AppError;

/// What the client asked for: `first` and `after` of a Relay connection field.
pub struct Page {
    pub first: Option<i32>,
    pub after: Option<String>,
}

/// Default and largest page size.
pub const DEFAULT_PAGE: usize = 20;
pub const MAX_PAGE: usize = 100;

impl Page {
    /// Rows per page: `first`, at most [`MAX_PAGE`], [`DEFAULT_PAGE`] when not given.
    pub fn limit(&self) -> usize {
        self.first.map_or(DEFAULT_PAGE, |n| usize::try_from(n).unwrap_or(0)).min(MAX_PAGE)
    }

    /// The id the `after` cursor names; `BAD_USER_INPUT` for a malformed one.
    pub fn after_id(&self) -> Result<Option<Uuid>, AppError> {
        self.after
            .as_deref()
            .map(|after| Uuid::parse_str(after).map_err(|_| AppError::bad_input("invalid cursor")))
            .transpose()
    }
}

/// One page of `query` ordered by `id_column` (descending when `newest_first`),
/// after the opaque cursor `after`; each row becomes a node with `node`.
pub async fn by_uuid<E, C, N>(
    db: &C,
    query: Select<E>,
    id_column: E::Column,
    id_of: impl Fn(&E::Model) -> Uuid,
    node: impl Fn(E::Model) -> N,
    page: Page,
    newest_first: bool,
) -> Result<Connection<String, N>, AppError>
where
    E: EntityTrait,
    C: ConnectionTrait,
    N: OutputType,
{
    let (limit, after_id) = (page.limit(), page.after_id()?);
    let (rows, has_next) = crate::repo::paging::by_uuid(db, query, id_column, after_id, limit, newest_first).await?;
    let mut connection = Connection::new(page.after.is_some(), has_next);
    connection.edges.extend(rows.into_iter().map(|row| Edge::new(id_of(&row).to_string(), node(row))));
    Ok(connection)
}
