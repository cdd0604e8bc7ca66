//! Cache purges of a gateway and which data plane applied each. A purge is
//! recorded once, with an id that grows and is never reused (so a node can
//! resume after the last id it applied); each node's stream sends it and
//! records the node's answer. Ids of one gateway are assigned in commit
//! order (the gateway's row is locked while one is recorded), so a stream
//! that has read every purge up to some id has missed none below it. Rows
//! older than a day are removed ([`Store::forget_purges_before`]); a
//! gateway's purges go with it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use portico_shared::model::policy::cache::CachePurge;
use sqlx::Row;

use super::{Backend, Change, Result, Store, StoreError, millis, to_i64, to_u64};
use crate::metrics::StoreTimer;

/// The Postgres channel that carries `gateway:id` for every recorded purge.
pub const PURGE_CHANNEL: &str = "portico_purge";

/// At most this many purges are read at once.
const PURGES_PER_READ: i64 = 500;

/// A recorded purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeRecord {
    pub id: u64,
    pub purge: CachePurge,
}

/// A node's answer to a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeAckRecord {
    pub node_id: String,
    /// How many stored responses the purge removed on that node.
    pub removed: u64,
    pub applied_at: DateTime<Utc>,
}

/// Where a node that says hello stands among a gateway's purges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeIds {
    /// The gateway's newest purge, 0 when it has none.
    pub gateway_latest: u64,
    /// The newest purge of any gateway, 0 when there is none.
    pub newest: u64,
}

impl Store {
    /// Records `purge` for `gateway`, and `change` in the audit log, and
    /// returns its id; on Postgres it is announced on [`PURGE_CHANNEL`]
    /// when the transaction commits. [`StoreError::NotFound`] when the
    /// gateway does not exist.
    pub async fn record_purge(&self, gateway: &str, purge: &CachePurge, change: &Change<'_>) -> Result<u64> {
        let _timer = StoreTimer::start("record_purge");
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        if self.backend == Backend::Postgres {
            // Concurrent purges of one gateway take turns, so their ids follow commit order.
            sqlx::query("SELECT 1 AS locked FROM gateways WHERE name = $1 FOR UPDATE")
                .bind(gateway)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?
                .ok_or(StoreError::NotFound)?;
        }
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO cache_purges (gateway, kind, value, created_at) \
             SELECT name, $2, $3, $4 FROM gateways WHERE name = $1 RETURNING id",
        )
        .bind(gateway)
        .bind(purge.field())
        .bind(purge.value())
        .bind(now.timestamp_millis())
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        let id = to_u64(id.ok_or(StoreError::NotFound)?);
        self.record_change(&mut tx, change, Some(gateway), None, now).await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT 1 AS sent FROM pg_notify($1, $2)")
                .bind(PURGE_CHANNEL)
                .bind(format!("{gateway}:{id}"))
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(id)
    }

    /// The purges of `gateway` after id `after`, oldest first (at most a
    /// few hundred: read again after the last one for more).
    pub async fn purges_after(&self, gateway: &str, after: u64) -> Result<Vec<PurgeRecord>> {
        let _timer = StoreTimer::start("purges_after");
        let rows = sqlx::query("SELECT id, kind, value FROM cache_purges WHERE gateway = $1 AND id > $2 ORDER BY id LIMIT $3")
            .bind(gateway)
            .bind(to_i64(after))
            .bind(PURGES_PER_READ)
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                let id = to_u64(row.try_get("id").map_err(StoreError::from_sqlx)?);
                let kind: String = row.try_get("kind").map_err(StoreError::from_sqlx)?;
                let value: String = row.try_get("value").map_err(StoreError::from_sqlx)?;
                let purge = match kind.as_str() {
                    "url" => CachePurge::Url(value),
                    "prefix" => CachePurge::Prefix(value),
                    "tag" => CachePurge::Tag(value),
                    other => return Err(StoreError::Corrupt(format!("purge {id} has an unknown kind '{other}'"))),
                };
                Ok(PurgeRecord { id, purge })
            })
            .collect()
    }

    /// The newest purge of `gateway` and of all gateways.
    pub async fn purge_ids(&self, gateway: &str) -> Result<PurgeIds> {
        let _timer = StoreTimer::start("purge_ids");
        let row = sqlx::query("SELECT MAX(CASE WHEN gateway = $1 THEN id END) AS latest, MAX(id) AS newest FROM cache_purges")
            .bind(gateway)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let get = |column: &str| row.try_get::<Option<i64>, _>(column).map(|id| id.map_or(0, to_u64)).map_err(StoreError::from_sqlx);
        Ok(PurgeIds { gateway_latest: get("latest")?, newest: get("newest")? })
    }

    /// The newest purge of every gateway that has one.
    pub async fn latest_purges(&self) -> Result<BTreeMap<String, u64>> {
        let _timer = StoreTimer::start("latest_purges");
        let rows = sqlx::query("SELECT gateway, MAX(id) AS latest FROM cache_purges GROUP BY gateway")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                let gateway: String = row.try_get("gateway").map_err(StoreError::from_sqlx)?;
                let latest: i64 = row.try_get("latest").map_err(StoreError::from_sqlx)?;
                Ok((gateway, to_u64(latest)))
            })
            .collect()
    }

    /// Node `node_id` of `gateway` applied purge `id`, removing `removed`
    /// stored responses. An id that is not a purge of that gateway (one
    /// removed meanwhile) is ignored.
    pub async fn record_purge_ack(&self, gateway: &str, node_id: &str, id: u64, removed: u64) -> Result<()> {
        let _timer = StoreTimer::start("record_purge_ack");
        sqlx::query(
            "INSERT INTO cache_purge_acks (purge_id, node_id, removed, applied_at) \
             SELECT id, $3, $4, $5 FROM cache_purges WHERE id = $1 AND gateway = $2 \
             ON CONFLICT (purge_id, node_id) DO UPDATE SET removed = $4, applied_at = $5",
        )
        .bind(to_i64(id))
        .bind(gateway)
        .bind(node_id)
        .bind(to_i64(removed))
        .bind(Utc::now().timestamp_millis())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// The nodes that applied purge `id`, by node id.
    pub async fn purge_acks(&self, id: u64) -> Result<Vec<PurgeAckRecord>> {
        let _timer = StoreTimer::start("purge_acks");
        let rows = sqlx::query("SELECT node_id, removed, applied_at FROM cache_purge_acks WHERE purge_id = $1 ORDER BY node_id")
            .bind(to_i64(id))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter()
            .map(|row| {
                Ok(PurgeAckRecord {
                    node_id: row.try_get("node_id").map_err(StoreError::from_sqlx)?,
                    removed: to_u64(row.try_get("removed").map_err(StoreError::from_sqlx)?),
                    applied_at: millis(row.try_get("applied_at").map_err(StoreError::from_sqlx)?),
                })
            })
            .collect()
    }

    /// Removes the purges, of any gateway, recorded before `cutoff`, with
    /// their answers; returns how many purges.
    pub async fn forget_purges_before(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let _timer = StoreTimer::start("forget_purges_before");
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let deleted = sqlx::query("DELETE FROM cache_purges WHERE created_at < $1")
            .bind(cutoff.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        // SQLite does not cascade (foreign keys are off): remove the answers explicitly.
        sqlx::query("DELETE FROM cache_purge_acks WHERE NOT EXISTS (SELECT 1 FROM cache_purges p WHERE p.id = purge_id)")
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(deleted)
    }
}
