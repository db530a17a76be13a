//! Quotas count what is stored: `videos.output_bytes` (renditions, download,
//! thumbnails, storyboard of the current transcode) next to the source size; and
//! `processing_usage`, the seconds of media processing each user spent per UTC day,
//! for the daily processing budget.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Videos::Table)
                    .add_column(ColumnDef::new(Videos::OutputBytes).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ProcessingUsage::Table)
                    .col(ColumnDef::new(ProcessingUsage::UserId).uuid().not_null())
                    .col(ColumnDef::new(ProcessingUsage::Day).date().not_null())
                    .col(ColumnDef::new(ProcessingUsage::Seconds).double().not_null().default(0.0))
                    .col(ColumnDef::new(ProcessingUsage::UpdatedAt).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(ProcessingUsage::UserId).col(ProcessingUsage::Day))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ProcessingUsage::Table, ProcessingUsage::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ProcessingUsage::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::OutputBytes).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    OutputBytes,
}

#[derive(DeriveIden)]
enum ProcessingUsage {
    Table,
    UserId,
    Day,
    Seconds,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}
