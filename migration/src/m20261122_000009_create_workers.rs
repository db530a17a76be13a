use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workers::Table)
                    .col(ColumnDef::new(Workers::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Workers::Host).string().not_null())
                    .col(ColumnDef::new(Workers::Pid).integer().not_null())
                    .col(ColumnDef::new(Workers::Capacity).integer().not_null())
                    .col(ColumnDef::new(Workers::CurrentJobs).integer().not_null().default(0))
                    .col(ColumnDef::new(Workers::Version).string_len(64).not_null())
                    .col(ColumnDef::new(Workers::StartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Workers::LastSeenAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        // Finding workers whose heartbeat stopped.
        manager
            .create_index(
                Index::create()
                    .name("idx_workers_last_seen_at")
                    .table(Workers::Table)
                    .col(Workers::LastSeenAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Workers::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Workers {
    Table,
    Id,
    Host,
    Pid,
    Capacity,
    CurrentJobs,
    Version,
    StartedAt,
    LastSeenAt,
}
