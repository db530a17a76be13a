//! Remote workers (`reelhouse worker --server URL`): `worker_tokens` (minted by
//! admins, only a SHA-256 of the secret stored, `prefix` is the visible start), and
//! what the admin `workers` list shows of both kinds of worker: `kind` (LOCAL |
//! REMOTE), `name`, `tags`, `state`, `gstreamer_version` and the token a remote
//! worker connected with.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WorkerTokens::Table)
                    .col(ColumnDef::new(WorkerTokens::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(WorkerTokens::Name).string_len(100).not_null())
                    .col(ColumnDef::new(WorkerTokens::Prefix).string_len(32).not_null())
                    .col(ColumnDef::new(WorkerTokens::SecretHash).text().not_null().unique_key())
                    .col(ColumnDef::new(WorkerTokens::Capacity).integer().not_null())
                    .col(ColumnDef::new(WorkerTokens::Tags).text().not_null())
                    .col(ColumnDef::new(WorkerTokens::CreatedBy).uuid().null())
                    .col(ColumnDef::new(WorkerTokens::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WorkerTokens::LastUsedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(WorkerTokens::RevokedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // One column per statement: SQLite alters one thing at a time.
        let columns = [
            ColumnDef::new(Workers::Kind).string_len(16).not_null().default("LOCAL").to_owned(),
            ColumnDef::new(Workers::Name).string_len(100).null().to_owned(),
            ColumnDef::new(Workers::Tags).text().not_null().default("").to_owned(),
            ColumnDef::new(Workers::State).string_len(16).not_null().default("IDLE").to_owned(),
            ColumnDef::new(Workers::GstreamerVersion).string_len(64).null().to_owned(),
            ColumnDef::new(Workers::TokenId).uuid().null().to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(Workers::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in
            [Workers::Kind, Workers::Name, Workers::Tags, Workers::State, Workers::GstreamerVersion, Workers::TokenId]
        {
            manager.alter_table(Table::alter().table(Workers::Table).drop_column(column).to_owned()).await?;
        }
        manager.drop_table(Table::drop().table(WorkerTokens::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum WorkerTokens {
    Table,
    Id,
    Name,
    Prefix,
    SecretHash,
    Capacity,
    Tags,
    CreatedBy,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum Workers {
    Table,
    Kind,
    Name,
    Tags,
    State,
    GstreamerVersion,
    TokenId,
}
