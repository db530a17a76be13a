//! Keyset pages over a UUID primary key (UUIDv7 ids are time-ordered and unique,
//! so the id alone is a stable keyset), for the listings built by the aggregates'
//! `listing` functions. `graphql::paging` turns a page into a Relay connection.

use sea_orm::{ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select};
use uuid::Uuid;

/// Up to `limit` rows of `query` ordered by `id_column` (descending when
/// `newest_first`), after the row with id `after`; and whether more rows follow.
pub async fn by_uuid<E, C>(
    conn: &C,
    query: Select<E>,
    id_column: E::Column,
    after: Option<Uuid>,
    limit: usize,
    newest_first: bool,
) -> Result<(Vec<E::Model>, bool), DbErr>
where
    E: EntityTrait,
    C: ConnectionTrait,
{
    let mut query = if newest_first { query.order_by_desc(id_column) } else { query.order_by_asc(id_column) };
    if let Some(after) = after {
        query = query.filter(if newest_first { id_column.lt(after) } else { id_column.gt(after) });
    }
    let mut rows = query.limit(u64::try_from(limit + 1).unwrap_or(u64::MAX)).all(conn).await?;
    let has_next = rows.len() > limit;
    rows.truncate(limit);
    Ok((rows, has_next))
}
