//! Schema migrations (sea-orm-migration), applied in order at start-up. Each is written by hand
//! in its own file (`mYYYYMMDD_NNNNNN_verb_noun.rs`) and never generated from the live entities,
//! so a change to an entity cannot silently change what an old migration does; the test in
//! `db::tests` checks that the migrated schema is the one the entities describe.

mod m20261201_000001_create_tables;
mod m20261202_000001_add_run_creator;
mod m20261203_000001_add_foreign_keys;

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261201_000001_create_tables::Migration),
            Box::new(m20261202_000001_add_run_creator::Migration),
            Box::new(m20261203_000001_add_foreign_keys::Migration),
        ]
    }
}

#[cfg(test)]
mod tests;
