//! Account mail: `users.email_verified_at` (NULL: the address is not proven yet;
//! accounts that existed before this migration are taken as verified), and
//! `account_tokens`, the one-use tokens that mail links carry (verify an address,
//! reset a password, confirm a new address). Only a SHA-256 of each token's secret
//! is stored.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(ColumnDef::new(Users::EmailVerifiedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        // Existing accounts were made before addresses were checked: grandfathered in.
        manager
            .exec_stmt(
                Query::update()
                    .table(Users::Table)
                    .value(Users::EmailVerifiedAt, Expr::col(Users::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AccountTokens::Table)
                    .col(ColumnDef::new(AccountTokens::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AccountTokens::UserId).uuid().not_null())
                    .col(ColumnDef::new(AccountTokens::Purpose).string_len(32).not_null())
                    .col(ColumnDef::new(AccountTokens::TokenHash).string_len(64).not_null())
                    .col(ColumnDef::new(AccountTokens::NewEmail).string_len(254).null())
                    .col(ColumnDef::new(AccountTokens::ExpiresAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(AccountTokens::UsedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(AccountTokens::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_account_tokens_user")
                            .from(AccountTokens::Table, AccountTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_account_tokens_token_hash")
                    .table(AccountTokens::Table)
                    .col(AccountTokens::TokenHash)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_account_tokens_user_purpose")
                    .table(AccountTokens::Table)
                    .col(AccountTokens::UserId)
                    .col(AccountTokens::Purpose)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(AccountTokens::Table).to_owned()).await?;
        manager.alter_table(Table::alter().table(Users::Table).drop_column(Users::EmailVerifiedAt).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    CreatedAt,
    EmailVerifiedAt,
}

#[derive(DeriveIden)]
enum AccountTokens {
    Table,
    Id,
    UserId,
    Purpose,
    TokenHash,
    NewEmail,
    ExpiresAt,
    UsedAt,
    CreatedAt,
}
