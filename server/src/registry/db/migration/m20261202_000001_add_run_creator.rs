//! Runs record who created them (`created_by`: the rate-limit key of the caller, `token:<id>`
//! or `ip:<address>`), so the queue can cap the runs one caller has waiting.

use sea_orm_migration::prelude::*;

/// Adds the nullable `runs.created_by` (runs created before it have none).
pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261202_000001_add_run_creator"
    }
}

#[derive(DeriveIden)]
enum Runs {
    Table,
    CreatedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .add_column(ColumnDef::new(Runs::CreatedBy).string())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Runs::Table)
                    .drop_column(Runs::CreatedBy)
                    .to_owned(),
            )
            .await
    }
}
