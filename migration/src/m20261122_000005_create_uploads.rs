use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Uploads::Table)
                    .col(ColumnDef::new(Uploads::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Uploads::VideoId).uuid().not_null())
                    .col(ColumnDef::new(Uploads::UserId).uuid().not_null())
                    .col(ColumnDef::new(Uploads::Method).string_len(16).not_null())
                    .col(ColumnDef::new(Uploads::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Uploads::Filename).text().not_null())
                    .col(ColumnDef::new(Uploads::ContentType).string().not_null())
                    .col(ColumnDef::new(Uploads::DeclaredSize).big_integer().not_null())
                    .col(ColumnDef::new(Uploads::ChecksumSha256).string_len(64).null())
                    .col(ColumnDef::new(Uploads::OffsetBytes).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Uploads::ObjectKey).text().not_null())
                    .col(ColumnDef::new(Uploads::S3UploadId).text().null())
                    .col(ColumnDef::new(Uploads::Parts).json_binary().null())
                    .col(ColumnDef::new(Uploads::ExpiresAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Uploads::FailureReason).text().null())
                    .col(ColumnDef::new(Uploads::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Uploads::UpdatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Uploads::CompletedAt).timestamp_with_time_zone().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_uploads_video_id")
                            .from(Uploads::Table, Uploads::VideoId)
                            .to(Videos::Table, Videos::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_uploads_user_id")
                            .from(Uploads::Table, Uploads::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // The expiry sweeper looks for OPEN uploads past their deadline.
        manager
            .create_index(
                Index::create()
                    .name("idx_uploads_status_expires_at")
                    .table(Uploads::Table)
                    .col(Uploads::Status)
                    .col(Uploads::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_uploads_video_id").table(Uploads::Table).col(Uploads::VideoId).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("idx_uploads_user_id").table(Uploads::Table).col(Uploads::UserId).to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Uploads::Table).to_owned()).await
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
enum Uploads {
    Table,
    Id,
    VideoId,
    UserId,
    Method,
    Status,
    Filename,
    ContentType,
    DeclaredSize,
    ChecksumSha256,
    OffsetBytes,
    ObjectKey,
    S3UploadId,
    Parts,
    ExpiresAt,
    FailureReason,
    CreatedAt,
    UpdatedAt,
    CompletedAt,
}
