//! Outputs on request and batches (issue 20).
//!
//! `videos.downloads`: the single-file downloads (MP4 and/or WebM) of the current
//! output version, a JSON array of `{format, key, width, height, bytes}` set when a
//! transcode succeeds. NULL: a video transcoded by an earlier release (its one MP4,
//! if any, is found where it always was).
//!
//! `batches`: one `transcodeBatch` request (who asked, what for, how many videos it
//! matched, when it was cancelled); `batch_jobs`: the TRANSCODE jobs it enqueued,
//! from which its progress is counted (the jobs table stays as it was).

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
                    .add_column(ColumnDef::new(Videos::Downloads).json_binary().null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Batches::Table)
                    .col(ColumnDef::new(Batches::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Batches::CreatedBy).uuid().not_null())
                    .col(ColumnDef::new(Batches::Preset).string_len(16).not_null())
                    .col(ColumnDef::new(Batches::Formats).json_binary().not_null())
                    .col(ColumnDef::new(Batches::Total).integer().not_null())
                    .col(ColumnDef::new(Batches::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Batches::CancelledAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_batches_created_by")
                            .from(Batches::Table, Batches::CreatedBy)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_batches_created_by")
                    .table(Batches::Table)
                    .col(Batches::CreatedBy)
                    .col(Batches::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(BatchJobs::Table)
                    .col(ColumnDef::new(BatchJobs::BatchId).uuid().not_null())
                    .col(ColumnDef::new(BatchJobs::JobId).uuid().not_null())
                    .primary_key(Index::create().col(BatchJobs::BatchId).col(BatchJobs::JobId))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_batch_jobs_batch")
                            .from(BatchJobs::Table, BatchJobs::BatchId)
                            .to(Batches::Table, Batches::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_batch_jobs_job")
                            .from(BatchJobs::Table, BatchJobs::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(BatchJobs::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Batches::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::Downloads).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    Downloads,
}

#[derive(DeriveIden)]
enum Batches {
    Table,
    Id,
    CreatedBy,
    Preset,
    Formats,
    Total,
    CreatedAt,
    CancelledAt,
}

#[derive(DeriveIden)]
enum BatchJobs {
    Table,
    BatchId,
    JobId,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
}
