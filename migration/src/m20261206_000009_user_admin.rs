//! User administration: `users.processing_budget_secs_per_day`, a per-user override
//! of `jobs.processing_budget_secs_per_day` (NULL: the server default; 0: no budget),
//! and `users.deleted_at`, set when an admin deletes the account: from then on it
//! cannot sign in, and a DELETE_USER job removes its videos, objects and finally the
//! row itself.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::ProcessingBudgetSecsPerDay).big_integer().null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::DeletedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Users::Table).drop_column(Users::DeletedAt).to_owned()).await?;
        manager
            .alter_table(Table::alter().table(Users::Table).drop_column(Users::ProcessingBudgetSecsPerDay).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    ProcessingBudgetSecsPerDay,
    DeletedAt,
}
