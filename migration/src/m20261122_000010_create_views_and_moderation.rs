use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per viewer per dedupe window: the unique key is what makes a view
        // count once however many concurrent calls race to insert it.
        manager
            .create_table(
                Table::create()
                    .table(VideoViews::Table)
                    .col(ColumnDef::new(VideoViews::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(VideoViews::VideoId).uuid().not_null())
                    .col(ColumnDef::new(VideoViews::ViewerKey).string_len(80).not_null())
                    .col(ColumnDef::new(VideoViews::WindowStart).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(VideoViews::WatchSeconds).double().not_null().default(0.0))
                    .col(ColumnDef::new(VideoViews::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(VideoViews::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_video_views_video_id")
                            .from(VideoViews::Table, VideoViews::VideoId)
                            .to(Videos::Table, Videos::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_video_views_video_viewer_window")
                    .table(VideoViews::Table)
                    .col(VideoViews::VideoId)
                    .col(VideoViews::ViewerKey)
                    .col(VideoViews::WindowStart)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VideoDailyStats::Table)
                    .col(ColumnDef::new(VideoDailyStats::VideoId).uuid().not_null())
                    .col(ColumnDef::new(VideoDailyStats::Day).date().not_null())
                    .col(ColumnDef::new(VideoDailyStats::Views).big_integer().not_null().default(0))
                    .col(ColumnDef::new(VideoDailyStats::WatchSeconds).double().not_null().default(0.0))
                    .primary_key(Index::create().col(VideoDailyStats::VideoId).col(VideoDailyStats::Day))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_video_daily_stats_video_id")
                            .from(VideoDailyStats::Table, VideoDailyStats::VideoId)
                            .to(Videos::Table, Videos::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ModerationActions::Table)
                    .col(ColumnDef::new(ModerationActions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ModerationActions::VideoId).uuid().not_null())
                    .col(ColumnDef::new(ModerationActions::ModeratorId).uuid().not_null())
                    .col(ColumnDef::new(ModerationActions::Action).string_len(16).not_null())
                    .col(ColumnDef::new(ModerationActions::Reason).text())
                    .col(ColumnDef::new(ModerationActions::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_moderation_actions_video_id")
                            .from(ModerationActions::Table, ModerationActions::VideoId)
                            .to(Videos::Table, Videos::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_moderation_actions_moderator_id")
                            .from(ModerationActions::Table, ModerationActions::ModeratorId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // A video's moderation log, oldest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_moderation_actions_video_id_created_at")
                    .table(ModerationActions::Table)
                    .col(ModerationActions::VideoId)
                    .col(ModerationActions::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ModerationActions::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(VideoDailyStats::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(VideoViews::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum VideoViews {
    Table,
    Id,
    VideoId,
    ViewerKey,
    WindowStart,
    WatchSeconds,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum VideoDailyStats {
    Table,
    VideoId,
    Day,
    Views,
    WatchSeconds,
}

#[derive(DeriveIden)]
enum ModerationActions {
    Table,
    Id,
    VideoId,
    ModeratorId,
    Action,
    Reason,
    CreatedAt,
}
