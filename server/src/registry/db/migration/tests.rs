//! The hand-written migrations checked against the entities, on SQLite and PostgreSQL.
//!
//! An empty database, migrated, has the schema (tables, columns, types, nullability, keys,
//! indexes) that sea-orm generates from the entities: on SQLite always, and on PostgreSQL when
//! `COMMENTARY_TEST_DATABASE_URL` names a server (each run makes, and drops, its own databases).

use sea_orm::{
    ConnectionTrait as _, Database, DatabaseBackend, DatabaseConnection, EntityTrait, Schema,
    Statement,
};
use sea_orm_migration::{MigrationName as _, MigratorTrait as _};

use super::Migrator;
use crate::registry::db::entities::{commentary, dataset, run, run_event, token};

/// What the entities describe: their tables and indexes as sea-orm generates them (which is
/// what the first migration did before it was written by hand).
async fn create_from_entities(db: &DatabaseConnection) {
    async fn create<E: EntityTrait>(db: &DatabaseConnection, entity: E) {
        let backend = db.get_database_backend();
        let schema = Schema::new(backend);
        db.execute(backend.build(&schema.create_table_from_entity(entity)))
            .await
            .expect("create a table from its entity");
        for index in schema.create_index_from_entity(entity) {
            db.execute(backend.build(&index))
                .await
                .expect("create an index from its entity");
        }
    }
    create(db, dataset::Entity).await;
    create(db, commentary::Entity).await;
    create(db, run::Entity).await;
    create(db, run_event::Entity).await;
    create(db, token::Entity).await;
}

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn text(row: &sea_orm::QueryResult, column: &str) -> String {
    row.try_get::<Option<String>>("", column)
        .unwrap_or_else(|e| panic!("{column}: {e}"))
        .unwrap_or_default()
}

fn number(row: &sea_orm::QueryResult, column: &str) -> i64 {
    row.try_get::<i64>("", column)
        .or_else(|_| row.try_get::<i32>("", column).map(i64::from))
        .unwrap_or_else(|e| panic!("{column}: {e}"))
}

/// The schema, one line per column and index, ignoring the migrations' own bookkeeping table.
async fn introspect(db: &DatabaseConnection) -> Vec<String> {
    let mut lines = Vec::new();
    match db.get_database_backend() {
        DatabaseBackend::Sqlite => {
            let tables = rows(
                db,
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
                 AND name != 'seaql_migrations' ORDER BY name",
            )
            .await;
            for table in tables.iter().map(|r| text(r, "name")) {
                for c in rows(db, &format!("PRAGMA table_info(\"{table}\")")).await {
                    lines.push(format!(
                        "{table}.{} {} not_null={} pk={} default={}",
                        text(&c, "name"),
                        text(&c, "type"),
                        number(&c, "notnull"),
                        number(&c, "pk"),
                        text(&c, "dflt_value"),
                    ));
                }
                for i in rows(db, &format!("PRAGMA index_list(\"{table}\")")).await {
                    let name = text(&i, "name");
                    let columns: Vec<String> = rows(db, &format!("PRAGMA index_info(\"{name}\")"))
                        .await
                        .iter()
                        .map(|c| text(c, "name"))
                        .collect();
                    lines.push(format!(
                        "{table} index {name} on ({}) unique={} origin={}",
                        columns.join(", "),
                        number(&i, "unique"),
                        text(&i, "origin"),
                    ));
                }
                for k in rows(db, &format!("PRAGMA foreign_key_list(\"{table}\")")).await {
                    lines.push(format!(
                        "{table}.{} references {}.{} on_delete={} on_update={}",
                        text(&k, "from"),
                        text(&k, "table"),
                        text(&k, "to"),
                        text(&k, "on_delete"),
                        text(&k, "on_update"),
                    ));
                }
            }
            // AUTOINCREMENT shows only in the table's SQL.
            for t in rows(
                db,
                "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE '%AUTOINCREMENT%' \
                 ORDER BY name",
            )
            .await
            {
                lines.push(format!("{} autoincrement", text(&t, "name")));
            }
        }
        DatabaseBackend::Postgres => {
            for c in rows(
                db,
                "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS ty, \
                 is_nullable::text AS n, column_default::text AS d \
                 FROM information_schema.columns WHERE table_schema = 'public' \
                 AND table_name != 'seaql_migrations' ORDER BY table_name, ordinal_position",
            )
            .await
            {
                lines.push(format!(
                    "{}.{} {} nullable={} default={}",
                    text(&c, "t"),
                    text(&c, "c"),
                    text(&c, "ty"),
                    text(&c, "n"),
                    text(&c, "d"),
                ));
            }
            for i in rows(
                db,
                "SELECT tablename::text AS t, indexdef::text AS d FROM pg_indexes \
                 WHERE schemaname = 'public' AND tablename != 'seaql_migrations' \
                 ORDER BY tablename, indexname",
            )
            .await
            {
                lines.push(format!("{} {}", text(&i, "t"), text(&i, "d")));
            }
            for k in rows(
                db,
                "SELECT kcu.table_name::text AS t, kcu.column_name::text AS c, \
                 ccu.table_name::text AS pt, ccu.column_name::text AS pc, \
                 rc.delete_rule::text AS del, rc.update_rule::text AS upd \
                 FROM information_schema.referential_constraints rc \
                 JOIN information_schema.key_column_usage kcu \
                   ON kcu.constraint_name = rc.constraint_name \
                  AND kcu.constraint_schema = rc.constraint_schema \
                 JOIN information_schema.constraint_column_usage ccu \
                   ON ccu.constraint_name = rc.constraint_name \
                  AND ccu.constraint_schema = rc.constraint_schema \
                 WHERE rc.constraint_schema = 'public' ORDER BY 1, 2",
            )
            .await
            {
                lines.push(format!(
                    "{}.{} references {}.{} on_delete={} on_update={}",
                    text(&k, "t"),
                    text(&k, "c"),
                    text(&k, "pt"),
                    text(&k, "pc"),
                    text(&k, "del"),
                    text(&k, "upd"),
                ));
            }
        }
        other => panic!("no introspection for {other:?}"),
    }
    lines
}

/// Migrates `migrated` (empty) and builds `reference` from the entities, and compares them.
async fn migrated_schema_is_the_entities(migrated: &str, reference: &str) {
    let db = crate::registry::db::connect(migrated)
        .await
        .expect("migrate an empty database");
    let applied: Vec<String> = rows(&db, "SELECT version FROM seaql_migrations ORDER BY version")
        .await
        .iter()
        .map(|r| text(r, "version"))
        .collect();
    assert_eq!(
        applied,
        [
            "m20261202_000001_add_run_creator",
            "m20261203_000001_add_foreign_keys",
            "migration"
        ],
        "the names existing databases record (sorted)"
    );
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .expect("pending")
            .is_empty()
    );
    let from_entities = Database::connect(reference).await.expect("connect");
    create_from_entities(&from_entities).await;

    let (got, want) = (introspect(&db).await, introspect(&from_entities).await);
    assert!(got.len() > 30, "introspection found too little: {got:#?}");
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "the migrated schema differs from the entities\nmissing: {missing:#?}\nextra: {extra:#?}"
    );
    // Running the migrations again (every start-up does) changes nothing.
    Migrator::up(&db, None).await.expect("migrate again");
    assert_eq!(introspect(&db).await, got);
    db.close().await.expect("close");
    from_entities.close().await.expect("close");
}

#[test]
fn the_first_migration_keeps_the_name_databases_recorded() {
    assert_eq!(
        super::m20261201_000001_create_tables::Migration.name(),
        "migration"
    );
}

#[tokio::test]
async fn an_empty_sqlite_database_migrates_to_the_entities_schema() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
    migrated_schema_is_the_entities(&url("migrated.db"), &url("entities.db")).await;
}

#[tokio::test]
async fn a_database_made_before_migrations_were_hand_written_still_starts() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    // What the generated migration left: its tables (the first migration is written to be
    // exactly them), and its name recorded.
    let old = Database::connect(&url).await.expect("connect");
    Migrator::up(&old, Some(1)).await.expect("the first schema");
    let recorded: Vec<String> = rows(&old, "SELECT version FROM seaql_migrations")
        .await
        .iter()
        .map(|r| text(r, "version"))
        .collect();
    assert_eq!(recorded, ["migration"]);
    old.close().await.expect("close");
    let db = crate::registry::db::connect(&url)
        .await
        .expect("an old database starts");
    assert!(
        Migrator::get_pending_migrations(&db)
            .await
            .expect("pending")
            .is_empty()
    );
}

/// Rows of an older schema that point at nothing: a run and a commentary of a deleted dataset,
/// events of a deleted run.
const ORPHANS: &str = "
    INSERT INTO datasets (digest, name, summary, archive_key, archive_bytes, created_at)
        VALUES ('sha256:kept', 'kept', '{}', 'k', 1, '2026-12-01T00:00:00Z');
    INSERT INTO runs (id, dataset_digest, kind, algorithm, config, evaluation, state, attempts,
                      max_attempts, created_at, updated_at)
        VALUES ('kept-run', 'sha256:kept', 'k', 'a', '{}', '{}', 'queued', 0, 3,
                '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z'),
               ('orphan-run', 'sha256:gone', 'k', 'a', '{}', '{}', 'queued', 0, 3,
                '2026-12-01T00:00:00Z', '2026-12-01T00:00:00Z');
    INSERT INTO run_events (run_id, body, at)
        VALUES ('kept-run', '{}', '2026-12-01T00:00:00Z'),
               ('orphan-run', '{}', '2026-12-01T00:00:00Z'),
               ('no-run', '{}', '2026-12-01T00:00:00Z');
    INSERT INTO commentaries (id, dataset_digest, kind, algorithm, manifest, tensors_sha256,
                              tensors_bytes, created_at)
        VALUES ('kept-c', 'sha256:kept', 'k', 'a', '{}', 'h', 1, '2026-12-01T00:00:00Z'),
               ('orphan-c', 'sha256:gone', 'k', 'a', '{}', 'h', 1, '2026-12-01T00:00:00Z');
";

/// The foreign-key migration on a database with orphans: they go, the rest stays, and from
/// then on the database refuses a row that points at nothing.
async fn orphans_are_removed_and_refused_from_then_on(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    Migrator::up(&db, Some(2))
        .await
        .expect("the schema before foreign keys");
    for statement in ORPHANS.split(';').filter(|s| !s.trim().is_empty()) {
        db.execute_unprepared(statement).await.expect(statement);
    }
    Migrator::up(&db, None).await.expect("add the foreign keys");
    let ids = |sql: &'static str| {
        let db = &db;
        async move {
            rows(db, sql)
                .await
                .iter()
                .map(|r| text(r, "id"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("SELECT id FROM runs").await, ["kept-run"]);
    assert_eq!(
        ids("SELECT run_id AS id FROM run_events").await,
        ["kept-run"]
    );
    assert_eq!(ids("SELECT id FROM commentaries").await, ["kept-c"]);
    assert_eq!(
        ids("SELECT \"name\" AS id FROM datasets").await,
        ["kept"],
        "the rebuilt tables keep their rows"
    );
    for orphan in [
        "INSERT INTO run_events (run_id, body, at) VALUES ('no-run', '{}', '2026-12-01T00:00:00Z')",
        "UPDATE runs SET dataset_digest = 'sha256:gone'",
        "DELETE FROM datasets",
    ] {
        assert!(
            db.execute_unprepared(orphan).await.is_err(),
            "the database refuses: {orphan}"
        );
    }
    db.close().await.expect("close");
}

#[tokio::test]
async fn the_foreign_key_migration_removes_orphans_on_sqlite() {
    let dir = tempfile::tempdir().expect("tmp");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("orphans.db").display()
    );
    orphans_are_removed_and_refused_from_then_on(&url).await;
}

/// Fresh PostgreSQL databases for one test, dropped by `drop_all`; None without a server (a
/// failure instead when `COMMENTARY_TEST_REQUIRE_SERVICES` is set).
struct PostgresScratch {
    admin: DatabaseConnection,
    base: String,
    names: Vec<String>,
}

impl PostgresScratch {
    async fn connect() -> Option<Self> {
        let admin_url = tests::service_env("COMMENTARY_TEST_DATABASE_URL")?;
        let admin = Database::connect(&admin_url)
            .await
            .expect("connect to COMMENTARY_TEST_DATABASE_URL");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b)
            .to_string();
        Some(Self {
            admin,
            base,
            names: Vec::new(),
        })
    }

    /// Creates a database and returns its URL.
    async fn create(&mut self, suffix: &str) -> String {
        let name = format!("commentary_test_{}_{suffix}", uuid::Uuid::new_v4().simple());
        self.admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        self.names.push(name.clone());
        format!("{}/{name}", self.base)
    }

    async fn drop_all(self) {
        for name in &self.names {
            let _ = self
                .admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
                .await;
        }
    }
}

#[tokio::test]
async fn the_foreign_key_migration_removes_orphans_on_postgres() {
    let Some(mut scratch) = PostgresScratch::connect().await else {
        return;
    };
    let url = scratch.create("orphans").await;
    orphans_are_removed_and_refused_from_then_on(&url).await;
    scratch.drop_all().await;
}

#[tokio::test]
async fn an_empty_postgres_database_migrates_to_the_entities_schema() {
    let Some(mut scratch) = PostgresScratch::connect().await else {
        return;
    };
    let migrated = scratch.create("migrated").await;
    let entities = scratch.create("entities").await;
    migrated_schema_is_the_entities(&migrated, &entities).await;
    scratch.drop_all().await;
}
