//! `videos.output_version`: the transcode run whose outputs are current. Every run
//! writes its outputs under `users/{user}/videos/{video}/out/{version}/`, so a
//! re-transcode never overwrites a file a player or a cache may hold; playback URLs
//! name the version. NULL: the outputs (if any) sit in the unversioned layout of
//! earlier releases (`.../hls/`, `.../mp4/`, `.../thumbs/`).

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
                    .add_column(ColumnDef::new(Videos::OutputVersion).string_len(32).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Videos::Table).drop_column(Videos::OutputVersion).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Videos {
    Table,
    OutputVersion,
}
