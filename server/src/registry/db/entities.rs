//! sea-orm entities: the registry's tables. JSON payloads (summaries, configs, manifests) are
//! stored as text so SQLite and PostgreSQL hold them the same way.

/// A stored dataset; the archive itself is in the object store under `archive_key`.
pub mod dataset {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "datasets")]
    pub struct Model {
        /// `sha256:<hex>`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub digest: String,
        #[sea_orm(indexed)]
        pub name: String,
        /// `DatasetSummary` as JSON.
        #[sea_orm(column_type = "Text")]
        pub summary: String,
        pub archive_key: String,
        pub archive_bytes: i64,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A published commentary; its files are in the object store under `commentaries/<id>/`.
pub mod commentary {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "commentaries")]
    pub struct Model {
        /// UUIDv7 (time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(indexed)]
        pub dataset_digest: String,
        pub kind: String,
        pub algorithm: String,
        /// `ArtifactManifest` as JSON.
        #[sea_orm(column_type = "Text")]
        pub manifest: String,
        /// `ApplyReport` as JSON, when the commentary was evaluated.
        #[sea_orm(column_type = "Text", nullable)]
        pub report: Option<String>,
        pub tensors_sha256: String,
        pub tensors_bytes: i64,
        /// The report's test-accuracy gain (what `?sort=improvement` ranks by).
        pub improvement: Option<f64>,
        pub run_id: Option<String>,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// Every commentary is of a stored dataset (a foreign key).
        #[sea_orm(
            belongs_to = "super::dataset::Entity",
            from = "Column::DatasetDigest",
            to = "super::dataset::Column::Digest"
        )]
        Dataset,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A learning run: a queue entry with a lease while a worker holds it.
pub mod run {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(indexed)]
        pub dataset_digest: String,
        pub kind: String,
        pub algorithm: String,
        /// `LearnConfig` as JSON.
        #[sea_orm(column_type = "Text")]
        pub config: String,
        /// `Evaluation` as JSON.
        #[sea_orm(column_type = "Text")]
        pub evaluation: String,
        #[sea_orm(indexed)]
        pub state: String,
        pub attempts: i32,
        pub max_attempts: i32,
        /// The current lease's secret; None while not leased.
        pub lease: Option<String>,
        pub lease_expires_at: Option<ChronoDateTimeUtc>,
        pub worker: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub error: Option<String>,
        /// The last `Progress` as JSON.
        #[sea_orm(column_type = "Text", nullable)]
        pub progress: Option<String>,
        pub commentary_id: Option<String>,
        pub created_at: ChronoDateTimeUtc,
        pub updated_at: ChronoDateTimeUtc,
        /// Who created the run (`token:<id>`, `ip:<address>`, `internal`); None for runs
        /// created before it was recorded.
        pub created_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// Every run learns on a stored dataset (a foreign key).
        #[sea_orm(
            belongs_to = "super::dataset::Entity",
            from = "Column::DatasetDigest",
            to = "super::dataset::Column::Digest"
        )]
        Dataset,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A stored progress event of a run (SSE replays these, so any replica can serve them).
pub mod run_event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "run_events")]
    pub struct Model {
        /// Increasing; the SSE event id.
        #[sea_orm(primary_key)]
        pub seq: i64,
        #[sea_orm(indexed)]
        pub run_id: String,
        /// `EventBody` as JSON.
        #[sea_orm(column_type = "Text")]
        pub body: String,
        pub at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        /// Every event is of a stored run (a foreign key).
        #[sea_orm(
            belongs_to = "super::run::Entity",
            from = "Column::RunId",
            to = "super::run::Column::Id"
        )]
        Run,
    }

    impl ActiveModelBehavior for ActiveModel {}
}

/// A bearer token; only its sha256 is stored.
pub mod token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub name: String,
        #[sea_orm(unique)]
        pub hash: String,
        pub scope: String,
        pub created_at: ChronoDateTimeUtc,
        pub revoked_at: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
