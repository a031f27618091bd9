//! Foreign keys: a run and a commentary belong to a stored dataset, and a run event to a
//! stored run, so no row can point at something deleted (a dataset delete racing a new run, a
//! crash between two statements). Rows that already point at nothing were invisible orphans
//! and are removed first.
//!
//! PostgreSQL adds the constraints in place. SQLite cannot add a constraint to a table, so each
//! table is rebuilt as SQLite's documentation describes: its own `CREATE TABLE` statement with
//! the key added, the rows copied, the old table dropped and the new one renamed, its indexes
//! made again; all in one transaction.

use sea_orm::{ConnectionTrait as _, DatabaseBackend, Statement, TransactionTrait as _};
use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_add_foreign_keys"
    }
}

/// One foreign key: `table.column` references `parent.key`.
struct Key {
    table: &'static str,
    column: &'static str,
    parent: &'static str,
    key: &'static str,
}

/// Parents before children: run events reference the rebuilt runs.
const KEYS: [Key; 3] = [
    Key {
        table: "runs",
        column: "dataset_digest",
        parent: "datasets",
        key: "digest",
    },
    Key {
        table: "commentaries",
        column: "dataset_digest",
        parent: "datasets",
        key: "digest",
    },
    Key {
        table: "run_events",
        column: "run_id",
        parent: "runs",
        key: "id",
    },
];

/// Orphans, children first: events of runs that go, runs and commentaries of no dataset.
const ORPHANS: [&str; 3] = [
    "DELETE FROM run_events WHERE run_id NOT IN \
     (SELECT id FROM runs WHERE dataset_digest IN (SELECT digest FROM datasets))",
    "DELETE FROM runs WHERE dataset_digest NOT IN (SELECT digest FROM datasets)",
    "DELETE FROM commentaries WHERE dataset_digest NOT IN (SELECT digest FROM datasets)",
];

impl Key {
    fn name(&self) -> String {
        format!("fk-{}-{}", self.table, self.column)
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match db.get_database_backend() {
            DatabaseBackend::Sqlite => {
                let txn = db.begin().await?;
                for orphans in ORPHANS {
                    txn.execute_unprepared(orphans).await?;
                }
                for key in &KEYS {
                    rebuild_with_key(&txn, key).await?;
                }
                txn.commit().await
            }
            _ => {
                for orphans in ORPHANS {
                    db.execute_unprepared(orphans).await?;
                }
                for key in &KEYS {
                    manager
                        .create_foreign_key(
                            ForeignKey::create()
                                .name(key.name())
                                .from(Alias::new(key.table), Alias::new(key.column))
                                .to(Alias::new(key.parent), Alias::new(key.key))
                                .to_owned(),
                        )
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if db.get_database_backend() == DatabaseBackend::Sqlite {
            // The keys stay: they hold for every row the older schema can store.
            return Ok(());
        }
        for key in KEYS.iter().rev() {
            manager
                .drop_foreign_key(
                    ForeignKey::drop()
                        .name(key.name())
                        .table(Alias::new(key.table))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// Rebuilds `key.table` on SQLite with the foreign key added to its own `CREATE TABLE`.
async fn rebuild_with_key(txn: &sea_orm::DatabaseTransaction, key: &Key) -> Result<(), DbErr> {
    let table = key.table;
    let schema = |kind: &str| {
        Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            "SELECT sql FROM sqlite_master WHERE type = ? AND tbl_name = ? AND sql IS NOT NULL",
            [kind.into(), table.into()],
        )
    };
    let created: String = txn
        .query_one(schema("table"))
        .await?
        .ok_or_else(|| DbErr::Migration(format!("no table {table}")))?
        .try_get("", "sql")?;
    let indexes: Vec<String> = txn
        .query_all(schema("index"))
        .await?
        .iter()
        .map(|row| row.try_get("", "sql"))
        .collect::<Result<_, _>>()?;
    let rebuilt = format!("{table}_rebuilt");
    let body = created
        .split_once('(')
        .map(|(_, body)| body)
        .and_then(|body| body.trim_end().strip_suffix(')'))
        .ok_or_else(|| DbErr::Migration(format!("cannot read the schema of {table}: {created}")))?;
    let create = format!(
        "CREATE TABLE \"{rebuilt}\" ({body}, FOREIGN KEY (\"{}\") REFERENCES \"{}\" (\"{}\"))",
        key.column, key.parent, key.key
    );
    txn.execute_unprepared(&create).await?;
    txn.execute_unprepared(&format!(
        "INSERT INTO \"{rebuilt}\" SELECT * FROM \"{table}\""
    ))
    .await?;
    txn.execute_unprepared(&format!("DROP TABLE \"{table}\""))
        .await?;
    txn.execute_unprepared(&format!("ALTER TABLE \"{rebuilt}\" RENAME TO \"{table}\""))
        .await?;
    for index in indexes {
        txn.execute_unprepared(&index).await?;
    }
    Ok(())
}
