use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoints::Table)
                    .col(ColumnDef::new(WebhookEndpoints::Id).uuid().not_null().primary_key())
                    // NULL: a global endpoint (admins), which hears of every video.
                    .col(ColumnDef::new(WebhookEndpoints::OwnerId).uuid().null())
                    .col(ColumnDef::new(WebhookEndpoints::Url).string_len(2048).not_null())
                    // Kept as issued: the server signs with it, so it cannot be hashed.
                    .col(ColumnDef::new(WebhookEndpoints::Secret).string_len(128).not_null())
                    .col(ColumnDef::new(WebhookEndpoints::EventKinds).json_binary().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::Enabled).boolean().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::DisabledReason).string_len(512).null())
                    .col(ColumnDef::new(WebhookEndpoints::ConsecutiveFailures).integer().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WebhookEndpoints::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_endpoints_owner_id")
                            .from(WebhookEndpoints::Table, WebhookEndpoints::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Fan-in looks endpoints up by owner for every stored event.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_endpoints_owner_id")
                    .table(WebhookEndpoints::Table)
                    .col(WebhookEndpoints::OwnerId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDeliveries::Table)
                    // The idempotency id receivers dedupe on; kept across retries and redeliveries.
                    .col(ColumnDef::new(WebhookDeliveries::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(WebhookDeliveries::EndpointId).uuid().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::EventCursor).big_integer().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::EventKind).string_len(32).not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Payload).json_binary().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Status).string_len(16).not_null())
                    .col(ColumnDef::new(WebhookDeliveries::Attempts).integer().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::NextAttemptAt).timestamp_with_time_zone().not_null())
                    // Retries run for `webhooks.retry_for_secs` from here (the event, or the last redelivery).
                    .col(ColumnDef::new(WebhookDeliveries::WindowStartedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::LastStatusCode).integer().null())
                    .col(ColumnDef::new(WebhookDeliveries::LastError).string_len(1024).null())
                    .col(ColumnDef::new(WebhookDeliveries::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WebhookDeliveries::DeliveredAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_deliveries_endpoint_id")
                            .from(WebhookDeliveries::Table, WebhookDeliveries::EndpointId)
                            .to(WebhookEndpoints::Table, WebhookEndpoints::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // One delivery per (endpoint, event), whatever races.
        manager
            .create_index(
                Index::create()
                    .name("uq_webhook_deliveries_endpoint_id_event_cursor")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::EndpointId)
                    .col(WebhookDeliveries::EventCursor)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The delivery loop: due PENDING rows.
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_deliveries_status_next_attempt_at")
                    .table(WebhookDeliveries::Table)
                    .col(WebhookDeliveries::Status)
                    .col(WebhookDeliveries::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempts::Table)
                    .col(ColumnDef::new(WebhookAttempts::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(WebhookAttempts::DeliveryId).uuid().not_null())
                    .col(ColumnDef::new(WebhookAttempts::At).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(WebhookAttempts::StatusCode).integer().null())
                    .col(ColumnDef::new(WebhookAttempts::LatencyMs).big_integer().not_null())
                    .col(ColumnDef::new(WebhookAttempts::Error).string_len(1024).null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_webhook_attempts_delivery_id")
                            .from(WebhookAttempts::Table, WebhookAttempts::DeliveryId)
                            .to(WebhookDeliveries::Table, WebhookDeliveries::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_webhook_attempts_delivery_id")
                    .table(WebhookAttempts::Table)
                    .col(WebhookAttempts::DeliveryId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(WebhookAttempts::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(WebhookDeliveries::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(WebhookEndpoints::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum WebhookEndpoints {
    Table,
    Id,
    OwnerId,
    Url,
    Secret,
    EventKinds,
    Enabled,
    DisabledReason,
    ConsecutiveFailures,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookDeliveries {
    Table,
    Id,
    EndpointId,
    EventCursor,
    EventKind,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    WindowStartedAt,
    LastStatusCode,
    LastError,
    CreatedAt,
    DeliveredAt,
}

#[derive(DeriveIden)]
enum WebhookAttempts {
    Table,
    Id,
    DeliveryId,
    At,
    StatusCode,
    LatencyMs,
    Error,
}
