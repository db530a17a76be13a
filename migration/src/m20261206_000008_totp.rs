//! TOTP two-factor sign-in (RFC 6238).
//!
//! `users` gains the TOTP secret, sealed at rest (`enc1:{kid}:{base64url}`, like
//! webhook secrets; never the secret itself), the moment TOTP was switched on (NULL:
//! off, and a secret beside a NULL is an enrolment not yet confirmed), and the last
//! time step a code was accepted for, so a code cannot be used twice.
//! `totp_recovery_codes` holds the single-use recovery codes as SHA-256 hashes.
//!
//! SQLite alters one column per statement, so each column is its own change.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ColumnDef::new(Users::TotpSecret).string_len(512).null().to_owned(),
            ColumnDef::new(Users::TotpEnabledAt).timestamp_with_time_zone().null().to_owned(),
            ColumnDef::new(Users::TotpLastStep).big_integer().null().to_owned(),
        ] {
            manager.alter_table(Table::alter().table(Users::Table).add_column(column).to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(TotpRecoveryCodes::Table)
                    .col(ColumnDef::new(TotpRecoveryCodes::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(TotpRecoveryCodes::UserId).uuid().not_null())
                    .col(ColumnDef::new(TotpRecoveryCodes::CodeHash).string_len(64).not_null().unique_key())
                    .col(ColumnDef::new(TotpRecoveryCodes::UsedAt).timestamp_with_time_zone().null())
                    .col(ColumnDef::new(TotpRecoveryCodes::CreatedAt).timestamp_with_time_zone().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_totp_recovery_codes_user_id")
                            .from(TotpRecoveryCodes::Table, TotpRecoveryCodes::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_totp_recovery_codes_user_id")
                    .table(TotpRecoveryCodes::Table)
                    .col(TotpRecoveryCodes::UserId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(TotpRecoveryCodes::Table).to_owned()).await?;
        for column in [Users::TotpLastStep, Users::TotpEnabledAt, Users::TotpSecret] {
            manager.alter_table(Table::alter().table(Users::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    TotpSecret,
    TotpEnabledAt,
    TotpLastStep,
}

#[derive(DeriveIden)]
enum TotpRecoveryCodes {
    Table,
    Id,
    UserId,
    CodeHash,
    UsedAt,
    CreatedAt,
}
