//! `webhook_endpoints.secret` holds the sealed secret (`enc1:{kid}:{base64url}`,
//! about 170 characters) instead of the 70-character secret itself: widen it.
//! SQLite does not enforce `varchar` lengths (and cannot alter a column), so only
//! PostgreSQL changes. Existing plain-text rows stay readable; the server seals them
//! at startup (`webhooks::secrets::seal_stored_secrets`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        resize(manager, 512).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        resize(manager, 128).await
    }
}

async fn resize(manager: &SchemaManager<'_>, len: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(WebhookEndpoints::Table)
                .modify_column(ColumnDef::new(WebhookEndpoints::Secret).string_len(len).not_null())
                .to_owned(),
        )
        .await
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Secret,
}
