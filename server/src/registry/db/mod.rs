//! The registry's database: SQLite at `<data-dir>/commentary.db` by default, PostgreSQL by URL.
//! Migrations run at start-up.

pub mod entities;
mod migration;

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use sea_orm::sqlx::sqlite::SqliteJournalMode;
use sea_orm::{
    ConnectOptions, ConnectionTrait as _, Database, DatabaseBackend, DatabaseConnection, DbErr,
    EntityTrait, QuerySelect as _, Select,
};
use sea_orm_migration::MigratorTrait as _;

pub use migration::Migrator;

/// The database URL: `COMMENTARY_DATABASE_URL` when given, else the SQLite file in `data_dir`.
pub fn database_url(explicit: Option<&str>, data_dir: &Path) -> String {
    match explicit {
        Some(url) => url.to_string(),
        None => format!(
            "sqlite://{}?mode=rwc",
            data_dir.join("commentary.db").display()
        ),
    }
}

/// Connections in the pool (SQLite and PostgreSQL).
const MAX_CONNECTIONS: u32 = 16;
/// How long a request waits for a free connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects and brings the schema up to date.
pub async fn connect(url: &str) -> anyhow::Result<DatabaseConnection> {
    let db = if url.starts_with("sqlite:") {
        sqlite_pool(url).await?
    } else {
        let mut options = ConnectOptions::new(url.to_string());
        options
            .sqlx_logging(false)
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT);
        Database::connect(options)
            .await
            .with_context(|| format!("cannot connect to the database at {}", redact(url)))?
    };
    if db.get_database_backend() == DatabaseBackend::Postgres {
        migrate_under_lock(url).await?;
    } else {
        Migrator::up(&db, None)
            .await
            .context("cannot migrate the database schema")?;
    }
    Ok(db)
}

/// The SQLite pool: WAL (readers do not block the writer), writers wait for the lock instead of
/// failing, and every connection returned to the pool is rolled back. SQLite may leave a
/// transaction open after an error such as SQLITE_FULL (a full disk) and recommends an explicit
/// ROLLBACK: without it, the pooled connection kept running later statements inside the
/// failed transaction, answering 2xx for writes no other connection (or restart) ever saw.
async fn sqlite_pool(url: &str) -> anyhow::Result<DatabaseConnection> {
    use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    use sea_orm::sqlx::{ConnectOptions as _, Executor as _};

    let options = url
        .parse::<SqliteConnectOptions>()
        .with_context(|| format!("bad SQLite URL {}", redact(url)))?
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(30))
        .create_if_missing(true)
        .disable_statement_logging();
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .after_release(|connection, _| {
            Box::pin(async move {
                // Fails ("no transaction is active") in the normal case, which is harmless.
                let _ = connection.execute("ROLLBACK").await;
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact(url)))?;
    Ok(sea_orm::SqlxSqliteConnector::from_sqlx_sqlite_pool(pool))
}

/// The advisory lock replicas take to migrate one at a time (any fixed number will do).
const MIGRATION_LOCK: i64 = 0x636f_6d6d_656e_7461;

/// Migrates PostgreSQL holding an advisory lock, so replicas starting together migrate one at
/// a time (the later ones find nothing left to do). The lock belongs to a session, so the lock,
/// the migrations and the unlock run on one connection of their own.
async fn migrate_under_lock(url: &str) -> anyhow::Result<()> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .sqlx_logging(false)
        .max_connections(1)
        .min_connections(1);
    let session = Database::connect(options)
        .await
        .with_context(|| format!("cannot connect to the database at {}", redact(url)))?;
    session
        .execute_unprepared(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
        .await
        .context("cannot take the migration lock")?;
    let migrated = Migrator::up(&session, None)
        .await
        .context("cannot migrate the database schema");
    let _ = session
        .execute_unprepared(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
        .await;
    let _ = session.close().await;
    migrated
}

/// One page of `query`: at most `limit` rows after `offset`, and whether more follow.
pub async fn page<E: EntityTrait>(
    db: &DatabaseConnection,
    query: Select<E>,
    offset: u64,
    limit: u64,
) -> Result<(Vec<E::Model>, bool), DbErr> {
    let mut models = query.offset(offset).limit(limit + 1).all(db).await?;
    let more = models.len() as u64 > limit;
    models.truncate(limit as usize);
    Ok((models, more))
}

/// The URL without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://a.db?mode=rwc"), "sqlite://a.db?mode=rwc");
    }
}
