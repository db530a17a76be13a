use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .col(ColumnDef::new(Jobs::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Jobs::VideoId).uuid().null())
                    .col(ColumnDef::new(Jobs::OwnerId).uuid().null())
                    .col(ColumnDef::new(Jobs::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Jobs::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Jobs::Priority).integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::Payload).json_binary().not_null())
                    .col(ColumnDef::new(Jobs::Attempts).integer().not_null().default(0))
                    .col(ColumnDef::new(Jobs::MaxAttempts).integer().not_null())
                    .col(ColumnDef::new(Jobs::RunAfter).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::LeaseOwner).string().null())
                    .col(ColumnDef::new(Jobs::LeaseToken).uuid().null())
                    .col(ColumnDef::new(Jobs::LeaseExpiresAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Jobs::LastError).text().null())
                    .col(ColumnDef::new(Jobs::Progress).json_binary().null())
                    .col(ColumnDef::new(Jobs::CancelRequested).boolean().not_null().default(false))
                    .col(ColumnDef::new(Jobs::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Jobs::FinishedAt).timestamp_with_time_zone().null())
                    // Jobs outlive their video (cleanup jobs run after it is gone) and
                    // their owner (history stays visible to admins).
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_jobs_video_id")
                            .from(Jobs::Table, Jobs::VideoId)
                            .to(Videos::Table, Videos::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_jobs_owner_id")
                            .from(Jobs::Table, Jobs::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        // Leasing: status = QUEUED and run_after <= now, by priority.
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_status_run_after_priority")
                    .table(Jobs::Table)
                    .col(Jobs::Status)
                    .col(Jobs::RunAfter)
                    .col(Jobs::Priority)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_jobs_video_id").table(Jobs::Table).col(Jobs::VideoId).to_owned())
            .await?;
        // Fair scheduling counts each owner's running jobs.
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_owner_id_status")
                    .table(Jobs::Table)
                    .col(Jobs::OwnerId)
                    .col(Jobs::Status)
                    .to_owned(),
            )
            .await?;
        // The sweeper re-queues expired leases.
        manager
            .create_index(
                Index::create()
                    .name("idx_jobs_lease_expires_at")
                    .table(Jobs::Table)
                    .col(Jobs::LeaseExpiresAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(JobLogs::Table)
                    .col(ColumnDef::new(JobLogs::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(JobLogs::JobId).uuid().not_null())
                    .col(ColumnDef::new(JobLogs::At).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(JobLogs::Level).string_len(16).not_null())
                    .col(ColumnDef::new(JobLogs::Message).text().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_job_logs_job_id")
                            .from(JobLogs::Table, JobLogs::JobId)
                            .to(Jobs::Table, Jobs::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_job_logs_job_id_id")
                    .table(JobLogs::Table)
                    .col(JobLogs::JobId)
                    .col(JobLogs::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(JobLogs::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Jobs::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    Id,
    VideoId,
    OwnerId,
    Kind,
    Status,
    Priority,
    Payload,
    Attempts,
    MaxAttempts,
    RunAfter,
    LeaseOwner,
    LeaseToken,
    LeaseExpiresAt,
    LastError,
    Progress,
    CancelRequested,
    CreatedAt,
    UpdatedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum JobLogs {
    Table,
    Id,
    JobId,
    At,
    Level,
    Message,
}
