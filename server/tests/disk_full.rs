//! Finding 1 of the hardening review (issue 15): a full disk poisoned the database pool. With
//! the data dir on a small tmpfs filled to the last byte, `POST /v1/runs` answered 500, then
//! 202 for runs that no other connection, and no restart, ever saw (SQLite left the failed
//! transaction open on the pooled connection). Now every write either commits or answers 507,
//! and once space is freed the same server takes writes again, durably.
//!
//! The same on PostgreSQL: its database lives in a tablespace on the test's tmpfs, so relation
//! files cannot grow (`disk_full`, SQLSTATE 53100) while its WAL still can.
//!
//! The tests mount their own tmpfs, so they need root (CI runs as root); they fail, never skip,
//! when they cannot.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Backend, Registry};
use schema::api::ErrorBody;
use tests::MNIST_FIXTURE_DIGEST;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u32) -> Self {
        let dir = tempfile::TempDir::new().expect("tmp");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (this test needs root)",
            dir.path().display()
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `path` until the disk is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk: byte by byte until nothing more fits.
    while file.write_all(&[0]).is_ok() {}
    let _ = file.sync_all();
}

fn start(data_dir: &Path) -> Registry {
    start_on(&Backend::sqlite_local(), data_dir)
}

fn start_on(backend: &Backend, data_dir: &Path) -> Registry {
    Registry::start_in(
        backend,
        data_dir.to_path_buf(),
        &[
            "--workers",
            "0",
            "--min-free-space",
            "0",
            "--write-rate-limit",
            "0",
            "--max-queued-runs",
            "1000",
        ],
    )
}

const RUN: &str = r#"{"dataset": "DIGEST", "kind": "label-blending", "config": {"meta_steps": 1}}"#;

/// POSTs a run; the id when it was accepted, None when refused with 507.
async fn post_run(http: &reqwest::Client, registry: &Registry) -> Option<String> {
    let response = http
        .post(format!("{}/v1/runs", registry.url))
        .header("content-type", "application/json")
        .body(RUN.replace("DIGEST", MNIST_FIXTURE_DIGEST))
        .send()
        .await
        .expect("POST /v1/runs");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    match status {
        202 => {
            let created: serde_json::Value = serde_json::from_str(&text).expect("json");
            Some(created["id"].as_str().expect("id").to_string())
        }
        507 => {
            let body: ErrorBody = serde_json::from_str(&text).expect("the error shape");
            assert_eq!(body.error.code, "insufficient_storage");
            assert!(body.error.message.contains("disk is full"), "{text}");
            None
        }
        other => panic!("a write on a full disk answered {other}: {text}"),
    }
}

/// Every id answers 200 on every read (reads went to different pooled connections and
/// disagreed) and the list holds them all.
async fn assert_durable(http: &reqwest::Client, registry: &Registry, ids: &[String]) {
    for id in ids {
        for _ in 0..4 {
            let status = http
                .get(format!("{}/v1/runs/{id}", registry.url))
                .send()
                .await
                .expect("GET")
                .status();
            assert_eq!(status, 200, "acknowledged run {id} is not there");
        }
    }
    let listed: serde_json::Value = http
        .get(format!("{}/v1/runs?limit=500", registry.url))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let listed: Vec<&str> = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    for id in ids {
        assert!(listed.contains(&id.as_str()), "{id} missing from the list");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_never_acknowledges_a_lost_write_and_the_pool_recovers() {
    let tmpfs = Tmpfs::mount(48);
    let data_dir: PathBuf = tmpfs.path().join("data");
    let registry = start(&data_dir);
    registry.client().upload_fixture().await;
    fill_then_free(&tmpfs, registry, start, &data_dir).await;
}

/// A PostgreSQL database whose files live in a tablespace on `tmpfs`; dropped (with the
/// tablespace) when done.
struct TablespaceDatabase {
    admin: sea_orm::DatabaseConnection,
    name: String,
    url: String,
}

impl TablespaceDatabase {
    async fn create(admin_url: &str, tmpfs: &Path) -> Self {
        use sea_orm::ConnectionTrait as _;
        let admin = sea_orm::Database::connect(admin_url)
            .await
            .expect("connect to COMMENTARY_TEST_DATABASE_URL");
        // The tablespace folder belongs to the user PostgreSQL runs as (the owner of its data
        // directory; the server is on this machine, 127.0.0.1).
        let row = admin
            .query_one(sea_orm::Statement::from_string(
                admin.get_database_backend(),
                "SELECT current_setting('data_directory') AS dir",
            ))
            .await
            .expect("data_directory")
            .expect("a row");
        let data_directory: String = row.try_get("", "dir").expect("dir");
        let owner = std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(&data_directory).expect("PostgreSQL's data directory"),
        );
        let folder = tmpfs.join("pg");
        std::fs::create_dir(&folder).expect("mkdir");
        std::os::unix::fs::chown(&folder, Some(owner), Some(owner)).expect("chown");
        let name = format!("commentary_full_{}", uuid::Uuid::new_v4().simple());
        for statement in [
            format!("CREATE TABLESPACE {name} LOCATION '{}'", folder.display()),
            format!("CREATE DATABASE {name} TABLESPACE {name}"),
        ] {
            admin
                .execute_unprepared(&statement)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        let base = admin_url.rsplit_once('/').map_or(admin_url, |(b, _)| b);
        let url = format!("{base}/{name}");
        Self { admin, name, url }
    }

    async fn drop_all(self) {
        use sea_orm::ConnectionTrait as _;
        for statement in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP TABLESPACE IF EXISTS {}", self.name),
        ] {
            if let Err(e) = self.admin.execute_unprepared(&statement).await {
                eprintln!("{statement}: {e}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_postgres_answers_507_and_recovers() {
    let Some(admin_url) = tests::service_env("COMMENTARY_TEST_DATABASE_URL") else {
        return;
    };
    let tmpfs = Tmpfs::mount(48);
    let database = TablespaceDatabase::create(&admin_url, tmpfs.path()).await;
    let backend = Backend {
        label: "postgres on a full tablespace",
        env: vec![("COMMENTARY_DATABASE_URL".into(), database.url.clone())],
    };
    // The blobs and staging on an ordinary disk: only the database's files are short of room.
    let elsewhere = tempfile::TempDir::new().expect("tmp");
    let data_dir = elsewhere.path().join("data");
    let registry = start_on(&backend, &data_dir);
    registry.client().upload_fixture().await;
    fill_then_free(&tmpfs, registry, |dir| start_on(&backend, dir), &data_dir).await;
    database.drop_all().await;
}

/// Fills `tmpfs`, posts runs (each acknowledged or refused with 507, and every acknowledged one
/// readable), frees the space and posts more on the same server, then restarts it and reads
/// every acknowledged run again.
async fn fill_then_free(
    tmpfs: &Tmpfs,
    mut registry: Registry,
    restart: impl Fn(&Path) -> Registry,
    data_dir: &Path,
) {
    let http = reqwest::Client::new();
    let filler = tmpfs.path().join("filler");
    fill(&filler);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for _ in 0..30 {
        match post_run(&http, &registry).await {
            Some(id) => acknowledged.push(id),
            None => refused += 1,
        }
    }
    eprintln!(
        "full disk: {} runs acknowledged, {refused} refused",
        acknowledged.len()
    );
    assert!(
        refused > 0,
        "the disk was full, yet every write was accepted"
    );
    assert_durable(&http, &registry, &acknowledged).await;

    // Space is freed: the same server (no restart) takes writes again.
    std::fs::remove_file(&filler).expect("free the disk");
    for _ in 0..5 {
        let id = post_run(&http, &registry)
            .await
            .expect("a write once space is free");
        acknowledged.push(id);
    }
    assert_durable(&http, &registry, &acknowledged).await;

    // And what was acknowledged survives a restart.
    drop(registry);
    registry = restart(data_dir);
    assert_durable(&http, &registry, &acknowledged).await;
    drop(registry);
}
