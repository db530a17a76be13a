//! `videos.event_seq`: the last per-video event sequence number, kept on the video
//! so that pruning old outbox rows never restarts a video's sequence.

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
                    .add_column(ColumnDef::new(Videos::EventSeq).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        // Carry over the sequences written so far.
        manager
            .get_connection()
            .execute_unprepared(
                "UPDATE videos SET event_seq = COALESCE(\
                 (SELECT MAX(seq) FROM events_outbox WHERE events_outbox.video_id = videos.id), 0)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::EventSeq).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    EventSeq,
}
