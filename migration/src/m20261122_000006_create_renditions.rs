use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Renditions::Table)
                    .col(ColumnDef::new(Renditions::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Renditions::VideoId).uuid().not_null())
                    .col(ColumnDef::new(Renditions::Name).string_len(32).not_null())
                    .col(ColumnDef::new(Renditions::Width).integer().not_null())
                    .col(ColumnDef::new(Renditions::Height).integer().not_null())
                    .col(ColumnDef::new(Renditions::Bitrate).big_integer().not_null())
                    .col(ColumnDef::new(Renditions::Codecs).string().not_null())
                    .col(ColumnDef::new(Renditions::PlaylistKey).text().not_null())
                    .col(ColumnDef::new(Renditions::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Renditions::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Renditions::UpdatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_renditions_video_id")
                            .from(Renditions::Table, Renditions::VideoId)
                            .to(Videos::Table, Videos::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("uq_renditions_video_id_name")
                    .table(Renditions::Table)
                    .col(Renditions::VideoId)
                    .col(Renditions::Name)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Renditions::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Renditions {
    Table,
    Id,
    VideoId,
    Name,
    Width,
    Height,
    Bitrate,
    Codecs,
    PlaylistKey,
    Status,
    CreatedAt,
    UpdatedAt,
}
