//! Schema migrations (sea-orm-migration), applied in order at start-up. Tables are created from
//! the entities so the two cannot disagree; later changes get their own migration.

use sea_orm::{EntityTrait, Schema};
use sea_orm_migration::prelude::*;

use super::entities::{commentary, dataset, run, run_event, token};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables)]
    }
}

/// The first schema: datasets, commentaries, runs, run events, tokens.
#[derive(DeriveMigrationName)]
struct CreateTables;

async fn create<E: EntityTrait>(manager: &SchemaManager<'_>, entity: E) -> Result<(), DbErr> {
    let schema = Schema::new(manager.get_database_backend());
    manager
        .create_table(schema.create_table_from_entity(entity))
        .await?;
    for index in schema.create_index_from_entity(entity) {
        manager.create_index(index).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        create(manager, dataset::Entity).await?;
        create(manager, commentary::Entity).await?;
        create(manager, run::Entity).await?;
        create(manager, run_event::Entity).await?;
        create(manager, token::Entity).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["tokens", "run_events", "runs", "commentaries", "datasets"] {
            manager
                .drop_table(Table::drop().table(Alias::new(table)).to_owned())
                .await?;
        }
        Ok(())
    }
}
