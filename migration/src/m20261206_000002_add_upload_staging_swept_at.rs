//! `uploads.staging_swept_at`: when the upload sweeper last removed what an ended
//! upload may have left in storage (its staging object, its multipart upload, its
//! tus tail) after every URL of that upload had expired. NULL: not swept yet.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Uploads::Table)
                    .add_column(ColumnDef::new(Uploads::StagingSweptAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Uploads::Table).drop_column(Uploads::StagingSweptAt).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Uploads {
    Table,
    StagingSweptAt,
}
