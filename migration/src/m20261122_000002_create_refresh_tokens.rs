use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokenFamilies::Table)
                    .col(ColumnDef::new(RefreshTokenFamilies::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(RefreshTokenFamilies::UserId).uuid().not_null())
                    .col(ColumnDef::new(RefreshTokenFamilies::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(RefreshTokenFamilies::LastUsedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(RefreshTokenFamilies::RevokedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(RefreshTokenFamilies::RevokedReason).string().null())
                    .col(ColumnDef::new(RefreshTokenFamilies::UserAgent).text().null())
                    .col(ColumnDef::new(RefreshTokenFamilies::Ip).string_len(64).null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_token_families_user_id")
                            .from(RefreshTokenFamilies::Table, RefreshTokenFamilies::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_refresh_token_families_user_id")
                    .table(RefreshTokenFamilies::Table)
                    .col(RefreshTokenFamilies::UserId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(ColumnDef::new(RefreshTokens::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(RefreshTokens::FamilyId).uuid().not_null())
                    .col(ColumnDef::new(RefreshTokens::TokenHash).text().not_null().unique_key())
                    .col(ColumnDef::new(RefreshTokens::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(RefreshTokens::ExpiresAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(RefreshTokens::RotatedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(RefreshTokens::ReplacedBy).uuid().null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_tokens_family_id")
                            .from(RefreshTokens::Table, RefreshTokens::FamilyId)
                            .to(RefreshTokenFamilies::Table, RefreshTokenFamilies::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_refresh_tokens_replaced_by")
                            .from(RefreshTokens::Table, RefreshTokens::ReplacedBy)
                            .to(RefreshTokens::Table, RefreshTokens::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_refresh_tokens_family_id")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::FamilyId)
                    .to_owned(),
            )
            .await?;
        // Purging expired tokens scans by expiry.
        manager
            .create_index(
                Index::create()
                    .name("idx_refresh_tokens_expires_at")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(RefreshTokens::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(RefreshTokenFamilies::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum RefreshTokenFamilies {
    Table,
    Id,
    UserId,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
    RevokedReason,
    UserAgent,
    Ip,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    FamilyId,
    TokenHash,
    CreatedAt,
    ExpiresAt,
    RotatedAt,
    ReplacedBy,
}
