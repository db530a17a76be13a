//! Relay pages keyed by a UUID primary key (UUIDv7 ids are time-ordered and
//! unique, so the id alone is a stable keyset): one implementation for `users`,
//! `jobs` and `webhookDeliveries`.

use async_graphql::connection::{Connection, Edge};
use async_graphql::OutputType;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
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
    let Page { first, after } = page;
    let limit = first.map_or(DEFAULT_PAGE, |n| usize::try_from(n).unwrap_or(0)).min(MAX_PAGE);
    let mut query = if newest_first { query.order_by_desc(id_column) } else { query.order_by_asc(id_column) };
    if let Some(after) = &after {
        let after = Uuid::parse_str(after).map_err(|_| AppError::bad_input("invalid cursor"))?;
        query = query.filter(if newest_first { id_column.lt(after) } else { id_column.gt(after) });
    }
    let mut rows = query.limit(u64::try_from(limit + 1).unwrap_or(u64::MAX)).all(db).await?;
    let has_next = rows.len() > limit;
    rows.truncate(limit);
    let mut connection = Connection::new(after.is_some(), has_next);
    connection.edges.extend(rows.into_iter().map(|row| Edge::new(id_of(&row).to_string(), node(row))));
    Ok(connection)
}
