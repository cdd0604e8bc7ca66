//! The audit log: who changed what, when and from where. An entry is
//! written by the store method that makes the change, in the same
//! transaction ([`Store::publish`], [`Store::create_gateway`],
//! [`Store::delete_gateway`], [`Store::create_token`],
//! [`Store::revoke_token`], [`Store::record_purge`]), so a change never
//! lands without its entry, and a change that fails or is rolled back
//! leaves none. Entries are read newest first, filtered and paged in SQL,
//! and removed only by age ([`Store::forget_audit_before`]). The store
//! records what it is given; keeping secrets out of it is the caller's part
//! (no entry field ever carries a token, key or body).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;

use super::{Result, Store, StoreError, millis, to_i64, to_u64};
use crate::metrics::StoreTimer;

/// Who made a change, from where, and what it was: the part of an audit
/// entry the caller knows (the store adds id, time, gateway and version).
#[derive(Debug, Clone, Copy, Default)]
pub struct Change<'a> {
    /// The token name (also a published version's author).
    pub author: &'a str,
    /// The client address as the admin server saw it; `None` for changes the
    /// control plane makes on its own.
    pub source: Option<&'a str>,
    /// `subject.verb`, such as `service.create` or `token.revoke`.
    pub action: &'a str,
    /// What the action was about: a token, gateway or entity name, a version.
    pub target: &'a str,
    /// The change message (`Portico-Change-Message`), possibly empty.
    pub message: &'a str,
}

/// One audit entry, as stored and as `GET /api/v1/audit` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(as = AuditEntry)]
pub struct AuditRecord {
    /// Grows with every entry; pass it as `before` to page from there.
    pub id: u64,
    pub time: DateTime<Utc>,
    /// The token name that made the change (`bootstrap` for the
    /// `--admin-token`, `portico` for the control plane itself).
    pub author: String,
    /// The client address (`ip:port`) as the admin server saw it; `null`
    /// for changes the control plane made on its own.
    pub source: Option<String>,
    /// `subject.verb`, such as `service.create`, `config.replace` or `token.revoke`.
    pub action: String,
    /// The gateway changed; `null` for token actions.
    pub gateway: Option<String>,
    /// What the action was about: the token, the gateway, the entity's name
    /// (a credential as `consumer/credential`), the version rolled back to,
    /// or the purge (`prefix /users`); empty for a whole-config or settings
    /// write.
    pub target: String,
    /// The config version the change published; `null` when it published none.
    pub version: Option<u64>,
    /// The `Portico-Change-Message` of the write (or a default such as `role: admin`).
    pub message: String,
}

/// Which entries to read; `None` matches any.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditFilter<'a> {
    pub gateway: Option<&'a str>,
    pub author: Option<&'a str>,
    /// An action (`service.create`), or a subject (`service`) for all of its
    /// actions. Must not contain the `LIKE` wildcards `%` and `_`.
    pub action: Option<&'a str>,
    /// Only entries older than this id (a stable cursor for paging while
    /// entries are being added).
    pub before: Option<u64>,
}

/// The filter of [`Store::audit_log`]: an empty string (or 0) bound for a
/// condition switches it off, so one static statement serves every filter.
const AUDIT_WHERE: &str = "WHERE ($1 = '' OR gateway = $1) AND ($2 = '' OR author = $2) \
     AND ($3 = '' OR action = $3 OR action LIKE $4) AND ($5 = 0 OR id < $5)";

impl Store {
    /// Writes the audit entry of `change` within `tx`, the transaction of
    /// the change itself.
    pub(super) async fn record_change(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        change: &Change<'_>,
        gateway: Option<&str>,
        version: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (created_at, author, source, action, gateway, target, version, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(now.timestamp_millis())
        .bind(change.author)
        .bind(change.source)
        .bind(change.action)
        .bind(gateway)
        .bind(change.target)
        .bind(version.map(to_i64))
        .bind(change.message)
        .execute(&mut **tx)
        .await
        .map_err(StoreError::from_sqlx)?;
        Ok(())
    }

    /// A page of the audit log, newest first, and how many entries match.
    pub async fn audit_log(&self, filter: &AuditFilter<'_>, limit: u32, offset: u64) -> Result<(Vec<AuditRecord>, u64)> {
        let _timer = StoreTimer::start("audit_log");
        let action = filter.action.unwrap_or_default();
        let family = if action.is_empty() { String::new() } else { format!("{action}.%") };
        let select = format!(
            "SELECT id, created_at, author, source, action, gateway, target, version, message FROM audit_log {AUDIT_WHERE} \
             ORDER BY id DESC LIMIT $6 OFFSET $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(filter.gateway.unwrap_or_default())
            .bind(filter.author.unwrap_or_default())
            .bind(action)
            .bind(&family)
            .bind(filter.before.map_or(0, to_i64))
            .bind(i64::from(limit))
            .bind(to_i64(offset))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log {AUDIT_WHERE}")))
            .bind(filter.gateway.unwrap_or_default())
            .bind(filter.author.unwrap_or_default())
            .bind(action)
            .bind(&family)
            .bind(filter.before.map_or(0, to_i64))
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        Ok((rows.iter().map(audit_from_row).collect::<Result<_>>()?, to_u64(total)))
    }

    /// Removes the entries written before `cutoff`; returns how many.
    pub async fn forget_audit_before(&self, cutoff: DateTime<Utc>) -> Result<u64> {
        let _timer = StoreTimer::start("forget_audit_before");
        let deleted = sqlx::query("DELETE FROM audit_log WHERE created_at < $1")
            .bind(cutoff.timestamp_millis())
            .execute(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        Ok(deleted)
    }
}

fn audit_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord> {
    let version: Option<i64> = row.try_get("version").map_err(StoreError::from_sqlx)?;
    Ok(AuditRecord {
        id: to_u64(row.try_get("id").map_err(StoreError::from_sqlx)?),
        time: millis(row.try_get("created_at").map_err(StoreError::from_sqlx)?),
        author: row.try_get("author").map_err(StoreError::from_sqlx)?,
        source: row.try_get("source").map_err(StoreError::from_sqlx)?,
        action: row.try_get("action").map_err(StoreError::from_sqlx)?,
        gateway: row.try_get("gateway").map_err(StoreError::from_sqlx)?,
        target: row.try_get("target").map_err(StoreError::from_sqlx)?,
        version: version.map(to_u64),
        message: row.try_get("message").map_err(StoreError::from_sqlx)?,
    })
}
