//! `commentary token`: create, list and revoke the registry's bearer tokens (on the database
//! directly, so it works before the server runs).

use anyhow::Context as _;
use clap::Subcommand;
use schema::api::Scope;
use sea_orm::{ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _};

use super::serve::StorageArgs;
use crate::registry::db::entities::token;
use crate::registry::{auth, db};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print its secret (shown once).
    Create {
        /// What the token may do: read, write (also upload and run) or admin (also delete).
        #[arg(long, value_parser = super::values::scope())]
        scope: Scope,
        /// A name to recognise it by.
        #[arg(long, default_value = "token")]
        name: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List tokens (never their secrets).
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Revoke a token by id.
    Revoke {
        id: String,
        #[command(flatten)]
        storage: StorageArgs,
    },
}

pub fn token(command: TokenCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let open = |s: &StorageArgs| {
            std::fs::create_dir_all(&s.data_dir)
                .with_context(|| format!("cannot create {}", s.data_dir.display()))?;
            anyhow::Ok(db::database_url(s.database_url.as_deref(), &s.data_dir))
        };
        match command {
            TokenCommand::Create {
                scope,
                name,
                storage,
            } => {
                let db = db::connect(&open(&storage)?).await?;
                let created = auth::create_token(&db, &name, scope).await?;
                eprintln!(
                    "created token {} ({name}, {scope}); its secret, shown only now:",
                    created.id
                );
                println!("{}", created.secret);
            }
            TokenCommand::List { storage } => {
                let db = db::connect(&open(&storage)?).await?;
                for t in token::Entity::find()
                    .order_by_asc(token::Column::CreatedAt)
                    .all(&db)
                    .await?
                {
                    let status = match t.revoked_at {
                        Some(at) => format!("revoked {}", at.to_rfc3339()),
                        None => "active".into(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}\t{status}",
                        t.id,
                        t.scope,
                        t.name,
                        t.created_at.to_rfc3339()
                    );
                }
            }
            TokenCommand::Revoke { id, storage } => {
                let db = db::connect(&open(&storage)?).await?;
                let updated = token::Entity::update_many()
                    .col_expr(
                        token::Column::RevokedAt,
                        sea_orm::sea_query::Expr::value(chrono::Utc::now()),
                    )
                    .filter(token::Column::Id.eq(&id))
                    .filter(token::Column::RevokedAt.is_null())
                    .exec(&db)
                    .await?;
                anyhow::ensure!(updated.rows_affected == 1, "no active token {id:?}");
                println!("revoked {id}");
            }
        }
        Ok(())
    })
}
