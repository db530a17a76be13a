//! Live job logs: `job_logs.seq`, each job's own line sequence (1, 2, 3, ... in commit
//! order, assigned under the job row's lock), the cursor `jobLog(after:)` resumes
//! from. The global `id` cannot be that cursor: on PostgreSQL two writers may commit
//! ids out of order, and a reader past the higher one would skip the lower for ever.
//! Existing lines are numbered per job in id order.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(JobLogs::Table)
                    .add_column(ColumnDef::new(JobLogs::Seq).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        // Portable (PostgreSQL and SQLite): the rank of each line within its job.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE job_logs SET seq = (SELECT COUNT(*) FROM job_logs AS earlier \
                 WHERE earlier.job_id = job_logs.job_id AND earlier.id <= job_logs.id)",
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_job_logs_job_id_seq")
                    .table(JobLogs::Table)
                    .col(JobLogs::JobId)
                    .col(JobLogs::Seq)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("idx_job_logs_job_id_seq").table(JobLogs::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(JobLogs::Table).drop_column(JobLogs::Seq).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum JobLogs {
    Table,
    JobId,
    Seq,
}
