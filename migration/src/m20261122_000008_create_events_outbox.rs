use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // No foreign keys: events (DELETED above all) must outlive their video.
        manager
            .create_table(
                Table::create()
                    .table(EventsOutbox::Table)
                    .col(ColumnDef::new(EventsOutbox::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(EventsOutbox::VideoId).uuid().not_null())
                    .col(ColumnDef::new(EventsOutbox::OwnerId).uuid().not_null())
                    .col(ColumnDef::new(EventsOutbox::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(EventsOutbox::Seq).big_integer().not_null())
                    .col(ColumnDef::new(EventsOutbox::Visibility).string_len(16).not_null())
                    .col(ColumnDef::new(EventsOutbox::Payload).json_binary().not_null())
                    .col(ColumnDef::new(EventsOutbox::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(EventsOutbox::PublishedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // Two writers racing for the same per-video sequence number: one loses.
        manager
            .create_index(
                Index::create()
                    .name("uq_events_outbox_video_id_seq")
                    .table(EventsOutbox::Table)
                    .col(EventsOutbox::VideoId)
                    .col(EventsOutbox::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Retention pruning.
        manager
            .create_index(
                Index::create()
                    .name("idx_events_outbox_created_at")
                    .table(EventsOutbox::Table)
                    .col(EventsOutbox::CreatedAt)
                    .to_owned(),
            )
            .await?;
        // Replay of one owner's events after a cursor.
        manager
            .create_index(
                Index::create()
                    .name("idx_events_outbox_owner_id_id")
                    .table(EventsOutbox::Table)
                    .col(EventsOutbox::OwnerId)
                    .col(EventsOutbox::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(EventsOutbox::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum EventsOutbox {
    Table,
    Id,
    VideoId,
    OwnerId,
    Kind,
    Seq,
    Visibility,
    Payload,
    CreatedAt,
    PublishedAt,
}
