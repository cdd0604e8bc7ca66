//! The control plane's store: gateways, the immutable version history (whose
//! newest row is each gateway's current config), data-plane nodes, cache
//! purges, admin tokens and the audit log. One implementation over sqlx's
//! `Any` driver serves Postgres and SQLite with the same parameterized SQL;
//! only migrations and change notification differ per backend. The store
//! knows nothing of HTTP.

mod audit;
mod error;
mod nodes;
mod purges;
mod tokens;

use std::time::Duration;

use chrono::{DateTime, Utc};
use portico_shared::{GatewayConfig, Snapshot};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

use crate::metrics::StoreTimer;
pub use audit::{AuditFilter, AuditRecord, Change};

pub use error::StoreError;
pub use nodes::{NodeDeletion, NodeHello, NodeRecord};
pub use purges::{PURGE_CHANNEL, PurgeAckRecord, PurgeIds, PurgeRecord};
pub use tokens::{Role, TokenRecord};

/// The Postgres channel that carries `gateway:version` on every publish.
pub const NOTIFY_CHANNEL: &str = "portico_config";

/// The gateway that always exists.
pub const DEFAULT_GATEWAY: &str = "default";

/// The author of changes the control plane makes on its own (creating the
/// `default` gateway).
pub const SYSTEM_AUTHOR: &str = "portico";

type Result<T> = std::result::Result<T, StoreError>;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A connection pool to the store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

/// A gateway, with the version it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayRecord {
    pub name: String,
    pub description: String,
    pub current_version: u64,
    pub created_at: DateTime<Utc>,
}

/// One row of a gateway's history, without its snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub gateway: String,
    pub version: u64,
    pub hash: String,
    pub author: String,
    pub message: String,
    pub rollback_of: Option<u64>,
    pub created_at: DateTime<Utc>,
}

/// A gateway's current config.
#[derive(Debug, Clone)]
pub struct Current {
    pub version: u64,
    pub hash: String,
    pub config: GatewayConfig,
}

/// A gateway's current version and its hash, without the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub gateway: String,
    pub version: u64,
    pub hash: String,
}

/// What a publish records beside the snapshot: the change (its author and
/// message go into the version row, all of it into the audit log).
#[derive(Debug, Clone, Copy, Default)]
pub struct Publication<'a> {
    pub change: Change<'a>,
    pub rollback_of: Option<u64>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://path` (the file is created if
    /// missing). Fails fast when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Self> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Config(format!("unsupported database URL '{}': use postgres://… or sqlite://path", redact(url))));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Postgres => 16,
                Backend::Sqlite => 4,
            })
            .acquire_timeout(Duration::from_secs(3))
            .connect(&url)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok(Self { pool, backend, url })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL the store was opened with (Postgres listeners connect to it too).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Postgres => sqlx::migrate!("../migrations/postgres"),
            Backend::Sqlite => sqlx::migrate!("../migrations/sqlite"),
        };
        migrator.run(&self.pool).await.map_err(|e| StoreError::Migration(e.to_string()))
    }

    /// Makes sure the `default` gateway exists, with at least version 1.
    pub async fn ensure_default_gateway(&self) -> Result<()> {
        let change =
            Change { author: SYSTEM_AUTHOR, source: None, action: "gateway.create", target: DEFAULT_GATEWAY, message: "gateway created" };
        match self.create_gateway(DEFAULT_GATEWAY, "The default gateway", &change).await {
            Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Is the database answering?
    pub async fn ping(&self) -> Result<()> {
        let _timer = StoreTimer::start("ping");
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    pub async fn list_gateways(&self) -> Result<Vec<GatewayRecord>> {
        let _timer = StoreTimer::start("list_gateways");
        let rows = sqlx::query("SELECT name, description, current_version, created_at FROM gateways ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter().map(gateway_from_row).collect()
    }

    pub async fn gateway(&self, name: &str) -> Result<Option<GatewayRecord>> {
        let _timer = StoreTimer::start("gateway");
        let row = sqlx::query("SELECT name, description, current_version, created_at FROM gateways WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(gateway_from_row).transpose()
    }

    /// Creates a gateway and publishes its version 1, an empty config,
    /// recording `change`.
    pub async fn create_gateway(&self, name: &str, description: &str, change: &Change<'_>) -> Result<VersionRecord> {
        let _timer = StoreTimer::start("create_gateway");
        let snapshot = Snapshot::compile(GatewayConfig::default()).expect("the empty config is valid");
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("INSERT INTO gateways (name, description, current_version, created_at) VALUES ($1, $2, 0, $3)")
            .bind(name)
            .bind(description)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        let record = self.append_version(&mut tx, name, 0, &snapshot, &Publication { change: *change, rollback_of: None }, now).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(record)
    }

    /// Deletes a gateway with its history, nodes and purges (not its audit
    /// entries), recording `change`. Returns whether it existed.
    pub async fn delete_gateway(&self, name: &str, change: &Change<'_>) -> Result<bool> {
        let _timer = StoreTimer::start("delete_gateway");
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        // SQLite only cascades with foreign keys on; delete children explicitly.
        for sql in [
            "DELETE FROM cache_purge_acks WHERE purge_id IN (SELECT id FROM cache_purges WHERE gateway = $1)",
            "DELETE FROM cache_purges WHERE gateway = $1",
            "DELETE FROM data_plane_nodes WHERE gateway = $1",
            "DELETE FROM config_versions WHERE gateway = $1",
        ] {
            sqlx::query(sql).bind(name).execute(&mut *tx).await.map_err(StoreError::from_sqlx)?;
        }
        let deleted = sqlx::query("DELETE FROM gateways WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        if deleted == 1 {
            self.record_change(&mut tx, change, Some(name), None, Utc::now()).await?;
            self.notify(&mut tx, name, 0).await?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(deleted == 1)
    }

    /// The current config of a gateway, or `None` if it does not exist.
    pub async fn current(&self, gateway: &str) -> Result<Option<Current>> {
        let _timer = StoreTimer::start("current");
        let row = sqlx::query(
            "SELECT v.version, v.hash, v.config FROM gateways g \
             JOIN config_versions v ON v.gateway = g.name AND v.version = g.current_version \
             WHERE g.name = $1",
        )
        .bind(gateway)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let config: String = row.try_get("config").map_err(StoreError::from_sqlx)?;
        Ok(Some(Current {
            version: to_u64(row.try_get("version").map_err(StoreError::from_sqlx)?),
            hash: row.try_get("hash").map_err(StoreError::from_sqlx)?,
            config: serde_json::from_str(&config).map_err(|e| StoreError::Corrupt(format!("{gateway}: {e}")))?,
        }))
    }

    /// Every gateway's current version and hash, by name.
    pub async fn heads(&self) -> Result<Vec<Head>> {
        let _timer = StoreTimer::start("heads");
        let rows = sqlx::query(
            "SELECT g.name, v.version, v.hash FROM gateways g \
             JOIN config_versions v ON v.gateway = g.name AND v.version = g.current_version ORDER BY g.name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(Head {
                    gateway: row.try_get("name").map_err(StoreError::from_sqlx)?,
                    version: to_u64(row.try_get("version").map_err(StoreError::from_sqlx)?),
                    hash: row.try_get("hash").map_err(StoreError::from_sqlx)?,
                })
            })
            .collect()
    }

    /// Appends `snapshot` as the next version of `gateway`, provided the
    /// gateway is still at `expected_version`; otherwise [`StoreError::Stale`]
    /// and nothing is written. The version and its audit entry are written
    /// together. On Postgres the publish is announced on
    /// [`NOTIFY_CHANNEL`] when the transaction commits.
    pub async fn publish(
        &self,
        gateway: &str,
        expected_version: u64,
        snapshot: &Snapshot,
        publication: &Publication<'_>,
    ) -> Result<VersionRecord> {
        let _timer = StoreTimer::start("publish");
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let record = self.append_version(&mut tx, gateway, expected_version, snapshot, publication, Utc::now()).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(record)
    }

    async fn append_version(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        gateway: &str,
        expected_version: u64,
        snapshot: &Snapshot,
        publication: &Publication<'_>,
        now: DateTime<Utc>,
    ) -> Result<VersionRecord> {
        let version = expected_version + 1;
        let moved = sqlx::query("UPDATE gateways SET current_version = $1 WHERE name = $2 AND current_version = $3")
            .bind(to_i64(version))
            .bind(gateway)
            .bind(to_i64(expected_version))
            .execute(&mut **tx)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        if moved != 1 {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM gateways WHERE name = $1")
                .bind(gateway)
                .fetch_optional(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            return Err(if exists.is_some() { StoreError::Stale } else { StoreError::NotFound });
        }
        let config = std::str::from_utf8(&snapshot.bytes).expect("canonical JSON is UTF-8");
        sqlx::query(
            "INSERT INTO config_versions (gateway, version, hash, config, author, message, rollback_of, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(gateway)
        .bind(to_i64(version))
        .bind(&snapshot.hash)
        .bind(config)
        .bind(publication.change.author)
        .bind(publication.change.message)
        .bind(publication.rollback_of.map(to_i64))
        .bind(now.timestamp_millis())
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        self.record_change(tx, &publication.change, Some(gateway), Some(version), now).await?;
        self.notify(tx, gateway, version).await?;
        Ok(VersionRecord {
            gateway: gateway.to_owned(),
            version,
            hash: snapshot.hash.clone(),
            author: publication.change.author.to_owned(),
            message: publication.change.message.to_owned(),
            rollback_of: publication.rollback_of,
            created_at: DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now),
        })
    }

    /// On Postgres, announces `gateway:version` (0: deleted) on
    /// [`NOTIFY_CHANNEL`] when `tx` commits.
    async fn notify(&self, tx: &mut sqlx::Transaction<'static, sqlx::Any>, gateway: &str, version: u64) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS sent FROM pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(format!("{gateway}:{version}"))
                .execute(&mut **tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        Ok(())
    }

    /// A page of a gateway's history, newest first, and the total count.
    pub async fn versions(&self, gateway: &str, limit: u32, offset: u64) -> Result<(Vec<VersionRecord>, u64)> {
        let _timer = StoreTimer::start("versions");
        let rows = sqlx::query(
            "SELECT gateway, version, hash, author, message, rollback_of, created_at FROM config_versions \
             WHERE gateway = $1 ORDER BY version DESC LIMIT $2 OFFSET $3",
        )
        .bind(gateway)
        .bind(i64::from(limit))
        .bind(to_i64(offset))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM config_versions WHERE gateway = $1")
            .bind(gateway)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok((rows.iter().map(version_from_row).collect::<Result<_>>()?, to_u64(total)))
    }

    /// One version with its snapshot bytes.
    pub async fn version(&self, gateway: &str, version: u64) -> Result<Option<(VersionRecord, Vec<u8>)>> {
        let _timer = StoreTimer::start("version");
        let row = sqlx::query(
            "SELECT gateway, version, hash, author, message, rollback_of, created_at, config FROM config_versions \
             WHERE gateway = $1 AND version = $2",
        )
        .bind(gateway)
        .bind(to_i64(version))
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        let Some(row) = row else { return Ok(None) };
        let config: String = row.try_get("config").map_err(StoreError::from_sqlx)?;
        Ok(Some((version_from_row(&row)?, config.into_bytes())))
    }
}

fn gateway_from_row(row: &sqlx::any::AnyRow) -> Result<GatewayRecord> {
    Ok(GatewayRecord {
        name: row.try_get("name").map_err(StoreError::from_sqlx)?,
        description: row.try_get("description").map_err(StoreError::from_sqlx)?,
        current_version: to_u64(row.try_get("current_version").map_err(StoreError::from_sqlx)?),
        created_at: millis(row.try_get("created_at").map_err(StoreError::from_sqlx)?),
    })
}

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<VersionRecord> {
    let rollback_of: Option<i64> = row.try_get("rollback_of").map_err(StoreError::from_sqlx)?;
    Ok(VersionRecord {
        gateway: row.try_get("gateway").map_err(StoreError::from_sqlx)?,
        version: to_u64(row.try_get("version").map_err(StoreError::from_sqlx)?),
        hash: row.try_get("hash").map_err(StoreError::from_sqlx)?,
        author: row.try_get("author").map_err(StoreError::from_sqlx)?,
        message: row.try_get("message").map_err(StoreError::from_sqlx)?,
        rollback_of: rollback_of.map(to_u64),
        created_at: millis(row.try_get("created_at").map_err(StoreError::from_sqlx)?),
    })
}

fn millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Versions are `u64` in the API and `BIGINT` in SQL; both stay far below 2^63.
fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A database URL fit for logs: the password replaced, in the userinfo or
/// in a `password=` query parameter.
pub fn redact(url: &str) -> String {
    let (url, query) = match url.split_once('?') {
        Some((base, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            (base, format!("?{}", query.join("&")))
        }
        None => (url, String::new()),
    };
    let base = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    };
    format!("{base}{query}")
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_passwords_in_userinfo_and_query() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db?sslmode=require&password=secret"), "postgres://u@h/db?sslmode=require&password=***");
        assert_eq!(redact("sqlite://portico.db"), "sqlite://portico.db");
    }
}
