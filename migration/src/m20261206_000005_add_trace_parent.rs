//! `jobs.trace_parent` and `webhook_deliveries.trace_parent`: the W3C `traceparent`
//! of the span that enqueued the job or recorded the event, so the worker's attempt
//! and the webhook delivery continue the trace of the request that caused them.
//! NULL when nothing was being traced.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(ColumnDef::new(Jobs::TraceParent).string_len(64).null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookDeliveries::Table)
                    .add_column(ColumnDef::new(WebhookDeliveries::TraceParent).string_len(64).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(WebhookDeliveries::Table).drop_column(WebhookDeliveries::TraceParent).to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table(Jobs::Table).drop_column(Jobs::TraceParent).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Jobs {
    Table,
    TraceParent,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    TraceParent,
}
