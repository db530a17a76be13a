use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Videos::Table)
                    .col(ColumnDef::new(Videos::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Videos::OwnerId).uuid().not_null())
                    .col(ColumnDef::new(Videos::Title).string().not_null())
                    .col(ColumnDef::new(Videos::Description).text().not_null())
                    .col(ColumnDef::new(Videos::Tags).json_binary().not_null())
                    .col(ColumnDef::new(Videos::Visibility).string_len(16).not_null())
                    .col(ColumnDef::new(Videos::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Videos::Error).text().null())
                    .col(ColumnDef::new(Videos::DurationMs).big_integer().null())
                    .col(ColumnDef::new(Videos::Width).integer().null())
                    .col(ColumnDef::new(Videos::Height).integer().null())
                    .col(ColumnDef::new(Videos::FrameRate).double().null())
                    .col(ColumnDef::new(Videos::Rotation).integer().null())
                    .col(ColumnDef::new(Videos::HasAudio).boolean().null())
                    .col(ColumnDef::new(Videos::Container).string().null())
                    .col(ColumnDef::new(Videos::VideoCodec).string().null())
                    .col(ColumnDef::new(Videos::AudioCodec).string().null())
                    .col(ColumnDef::new(Videos::SourceKey).text().null())
                    .col(ColumnDef::new(Videos::SourceSizeBytes).big_integer().null())
                    .col(ColumnDef::new(Videos::HiddenAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(Videos::HiddenReason).text().null())
                    .col(ColumnDef::new(Videos::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Videos::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Videos::DeletedAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_videos_owner_id")
                            .from(Videos::Table, Videos::OwnerId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A user's own list, newest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_videos_owner_id_created_at")
                    .table(Videos::Table)
                    .col(Videos::OwnerId)
                    .col(Videos::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_videos_status").table(Videos::Table).col(Videos::Status).to_owned())
            .await?;
        // The public catalogue, newest first.
        manager
            .create_index(
                Index::create()
                    .name("idx_videos_visibility_created_at")
                    .table(Videos::Table)
                    .col(Videos::Visibility)
                    .col(Videos::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Videos::Table).to_owned()).await
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
    OwnerId,
    Title,
    Description,
    Tags,
    Visibility,
    Status,
    Error,
    DurationMs,
    Width,
    Height,
    FrameRate,
    Rotation,
    HasAudio,
    Container,
    VideoCodec,
    AudioCodec,
    SourceKey,
    SourceSizeBytes,
    HiddenAt,
    HiddenReason,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}
