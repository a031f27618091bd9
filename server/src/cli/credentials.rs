//! Tokens stored by `commentary login` for the CLI and the Python client:
//! `$XDG_CONFIG_HOME/commentary/credentials` (default `~/.config/commentary/credentials`), mode
//! 0600, TOML with one table per registry URL (without a trailing `/`):
//!
//! ```toml
//! [servers."http://127.0.0.1:8080"]
//! token = "..."
//! ```
//!
//! The Python client reads the same file (`python/src/commentary/credentials.py`): keep the
//! shape. Every write replaces the file atomically (a temporary file in the same folder, then
//! a rename) and keeps whatever else it holds (other servers, other keys).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The file's top-level table of servers.
const SERVERS: &str = "servers";

/// The credentials file of this user.
pub(super) fn path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|home| PathBuf::from(home).join(".config"))
            .context("cannot find the credentials file: neither XDG_CONFIG_HOME nor HOME is set")?,
    };
    Ok(base.join("commentary").join("credentials"))
}

/// How a server is keyed in the file: its URL without trailing `/`.
pub(super) fn server_key(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// The credentials at `path` (empty when the file does not exist).
fn read(path: &Path) -> anyhow::Result<toml::Table> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(toml::Table::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    text.parse::<toml::Table>()
        .with_context(|| format!("{} is not valid TOML", path.display()))
}

/// The token stored for `server` in the file at `path`, if any.
pub(super) fn stored_token_in(path: &Path, server: &str) -> anyhow::Result<Option<String>> {
    let table = read(path)?;
    Ok(table
        .get(SERVERS)
        .and_then(|servers| servers.get(server_key(server)))
        .and_then(|entry| entry.get("token"))
        .and_then(toml::Value::as_str)
        .filter(|token| !token.is_empty())
        .map(str::to_string))
}

/// The token stored for `server`, if any. A file that cannot be read is reported on stderr and
/// treated as empty: a command that needs no token must not fail on it.
pub(super) fn stored_token(server: &str) -> Option<String> {
    let found = path().and_then(|path| {
        warn_if_readable_by_others(&path);
        stored_token_in(&path, server)
    });
    match found {
        Ok(token) => token,
        Err(e) => {
            eprintln!("warning: ignoring the stored credentials: {e:#}");
            None
        }
    }
}

/// Stores `token` for `server` in the file at `path`, keeping every other entry.
pub(super) fn store_in(path: &Path, server: &str, token: &str) -> anyhow::Result<()> {
    let mut table = read(path)?;
    let servers = table
        .entry(SERVERS)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(servers) = servers else {
        anyhow::bail!("{}: `{SERVERS}` is not a table", path.display());
    };
    let entry = servers
        .entry(server_key(server))
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(entry) = entry else {
        anyhow::bail!(
            "{}: the entry of {} is not a table",
            path.display(),
            server_key(server)
        );
    };
    entry.insert("token".into(), toml::Value::String(token.to_string()));
    write(path, &table)
}

/// Removes the entry of `server` from the file at `path`; false when there was none.
pub(super) fn remove_in(path: &Path, server: &str) -> anyhow::Result<bool> {
    let mut table = read(path)?;
    let removed = match table.get_mut(SERVERS) {
        Some(toml::Value::Table(servers)) => servers.remove(server_key(server)).is_some(),
        _ => false,
    };
    if removed {
        write(path, &table)?;
    }
    Ok(removed)
}

/// Replaces the file at `path` with `table`: a temporary file (mode 0600) in the same folder,
/// synced, then renamed over it.
fn write(path: &Path, table: &toml::Table) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent folder", path.display()))?;
    create_private_dir(dir)?;
    let text = toml::to_string(table).context("cannot write the credentials as TOML")?;
    let mut file = tempfile::Builder::new()
        .prefix(".credentials.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    set_private(file.path(), 0o600)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("cannot write {}", file.path().display()))?;
    file.persist(path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// Creates `dir` (and its parents) when missing; a new one is readable by its owner only.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_private(dir, 0o700)
}

#[cfg(unix)]
fn set_private(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict the permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn set_private(_path: &Path, _mode: u32) -> anyhow::Result<()> {
    Ok(())
}

/// A credentials file others can read holds tokens they can use: say so.
#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!(
            "warning: {} is readable by other users (chmod 600 it)",
            path.display()
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_keyed_by_the_url_without_its_slash_and_others_are_kept() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("commentary").join("credentials");
        assert_eq!(stored_token_in(&path, "http://a:1").expect("read"), None);
        store_in(&path, "http://a:1/", "cmt_a").expect("store a");
        store_in(&path, "https://b.example", "cmt_b").expect("store b");
        assert_eq!(
            std::fs::read_to_string(&path).expect("file"),
            "[servers.\"http://a:1\"]\ntoken = \"cmt_a\"\n\n[servers.\"https://b.example\"]\ntoken = \"cmt_b\"\n"
        );
        assert_eq!(
            stored_token_in(&path, "http://a:1")
                .expect("read")
                .as_deref(),
            Some("cmt_a")
        );
        store_in(&path, "http://a:1", "cmt_a2").expect("replace a");
        assert!(remove_in(&path, "https://b.example/").expect("remove b"));
        assert!(!remove_in(&path, "https://b.example").expect("b is gone"));
        assert_eq!(
            std::fs::read_to_string(&path).expect("file"),
            "[servers.\"http://a:1\"]\ntoken = \"cmt_a2\"\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn other_keys_in_the_file_survive_a_login() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[servers.\"http://a:1\"]\ntoken = \"old\"\nnote = \"mine\"\n",
        )
        .expect("write");
        store_in(&path, "http://a:1", "new").expect("store");
        let table = read(&path).expect("read");
        assert_eq!(
            table["servers"]["http://a:1"]["note"].as_str(),
            Some("mine")
        );
        assert_eq!(
            table["servers"]["http://a:1"]["token"].as_str(),
            Some("new")
        );
    }
}
