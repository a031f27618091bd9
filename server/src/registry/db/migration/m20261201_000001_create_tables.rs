//! The first schema: datasets, commentaries, runs, run events and tokens, with their indexes.
//!
//! Frozen as sea-orm generated it from the entities before migrations were written by hand.

use sea_orm_migration::prelude::*;

/// Creates the five tables and their indexes.
pub struct Migration;

impl MigrationName for Migration {
    /// The name databases already record for this migration: it was once generated from the
    /// entities in a file called `migration.rs`, and sea-orm named it after that file.
    fn name(&self) -> &str {
        "migration"
    }
}

#[derive(DeriveIden)]
enum Datasets {
    Table,
    Digest,
    Name,
    Summary,
    ArchiveKey,
    ArchiveBytes,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Commentaries {
    Table,
    Id,
    DatasetDigest,
    Kind,
    Algorithm,
    Manifest,
    Report,
    TensorsSha256,
    TensorsBytes,
    Improvement,
    RunId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    Id,
    DatasetDigest,
    Kind,
    Algorithm,
    Config,
    Evaluation,
    State,
    Attempts,
    MaxAttempts,
    Lease,
    LeaseExpiresAt,
    Worker,
    Error,
    Progress,
    CommentaryId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RunEvents {
    Table,
    Seq,
    RunId,
    Body,
    At,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    Name,
    Hash,
    Scope,
    CreatedAt,
    RevokedAt,
}

/// A required column.
fn required(column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    def.not_null();
    def
}

/// A text primary key (ids and digests are made by the registry, not the database).
fn key(column: impl IntoIden) -> ColumnDef {
    let mut def = required(column);
    def.string().primary_key();
    def
}

/// `idx-<table>-<column>`, the names the first, entity-generated schema gave its indexes.
fn index(table: impl IntoIden, column: impl IntoIden) -> IndexCreateStatement {
    let (t, c) = (table.into_iden(), column.into_iden());
    Index::create()
        .name(format!("idx-{}-{}", t.to_string(), c.to_string()))
        .table(t)
        .col(c)
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Datasets::Table)
                    .col(key(Datasets::Digest))
                    .col(required(Datasets::Name).string())
                    .col(required(Datasets::Summary).text())
                    .col(required(Datasets::ArchiveKey).string())
                    .col(required(Datasets::ArchiveBytes).big_integer())
                    .col(required(Datasets::CreatedAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(Datasets::Table, Datasets::Name))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Commentaries::Table)
                    .col(key(Commentaries::Id))
                    .col(required(Commentaries::DatasetDigest).string())
                    .col(required(Commentaries::Kind).string())
                    .col(required(Commentaries::Algorithm).string())
                    .col(required(Commentaries::Manifest).text())
                    .col(ColumnDef::new(Commentaries::Report).text())
                    .col(required(Commentaries::TensorsSha256).string())
                    .col(required(Commentaries::TensorsBytes).big_integer())
                    .col(ColumnDef::new(Commentaries::Improvement).double())
                    .col(ColumnDef::new(Commentaries::RunId).string())
                    .col(required(Commentaries::CreatedAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(Commentaries::Table, Commentaries::DatasetDigest))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Runs::Table)
                    .col(key(Runs::Id))
                    .col(required(Runs::DatasetDigest).string())
                    .col(required(Runs::Kind).string())
                    .col(required(Runs::Algorithm).string())
                    .col(required(Runs::Config).text())
                    .col(required(Runs::Evaluation).text())
                    .col(required(Runs::State).string())
                    .col(required(Runs::Attempts).integer())
                    .col(required(Runs::MaxAttempts).integer())
                    .col(ColumnDef::new(Runs::Lease).string())
                    .col(ColumnDef::new(Runs::LeaseExpiresAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(Runs::Worker).string())
                    .col(ColumnDef::new(Runs::Error).text())
                    .col(ColumnDef::new(Runs::Progress).text())
                    .col(ColumnDef::new(Runs::CommentaryId).string())
                    .col(required(Runs::CreatedAt).timestamp_with_time_zone())
                    .col(required(Runs::UpdatedAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(Runs::Table, Runs::DatasetDigest))
            .await?;
        manager
            .create_index(index(Runs::Table, Runs::State))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RunEvents::Table)
                    .col(
                        required(RunEvents::Seq)
                            .big_integer()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(required(RunEvents::RunId).string())
                    .col(required(RunEvents::Body).text())
                    .col(required(RunEvents::At).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(RunEvents::Table, RunEvents::RunId))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .col(key(Tokens::Id))
                    .col(required(Tokens::Name).string())
                    .col(required(Tokens::Hash).string().unique_key())
                    .col(required(Tokens::Scope).string())
                    .col(required(Tokens::CreatedAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(Tokens::RevokedAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Tokens::Table.into_iden(),
            RunEvents::Table.into_iden(),
            Runs::Table.into_iden(),
            Commentaries::Table.into_iden(),
            Datasets::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
