//! Admin API tokens. Only a token's sha256 is stored: a token is high-entropy
//! random, so a plain hash suffices, and lookup by hash never compares the
//! secret itself. Creating and revoking one writes its audit entry in the
//! same transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::{Change, Result, Store, StoreError, millis};
use crate::metrics::StoreTimer;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Only reads.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ReadOnly => "read-only",
        }
    }

    fn parse(value: &str) -> Result<Self> {
        match value {
            "admin" => Ok(Self::Admin),
            "read-only" => Ok(Self::ReadOnly),
            other => Err(StoreError::Corrupt(format!("unknown token role '{other}'"))),
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub name: String,
    pub role: Role,
    pub token_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Stores a token created by `change.author`, recording `change`.
    pub async fn create_token(&self, name: &str, role: Role, token_hash: &str, change: &Change<'_>) -> Result<TokenRecord> {
        let _timer = StoreTimer::start("create_token");
        let now = Utc::now();
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        sqlx::query("INSERT INTO admin_tokens (name, role, token_hash, created_by, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(name)
            .bind(role.as_str())
            .bind(token_hash)
            .bind(change.author)
            .bind(now.timestamp_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        self.record_change(&mut tx, change, None, None, now).await?;
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(TokenRecord {
            name: name.to_owned(),
            role,
            token_hash: token_hash.to_owned(),
            created_by: change.author.to_owned(),
            created_at: millis(now.timestamp_millis()),
        })
    }

    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<TokenRecord>> {
        let _timer = StoreTimer::start("token_by_hash");
        let row = sqlx::query("SELECT name, role, token_hash, created_by, created_at FROM admin_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(token_from_row).transpose()
    }

    pub async fn token(&self, name: &str) -> Result<Option<TokenRecord>> {
        let _timer = StoreTimer::start("token");
        let row = sqlx::query("SELECT name, role, token_hash, created_by, created_at FROM admin_tokens WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        row.as_ref().map(token_from_row).transpose()
    }

    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let _timer = StoreTimer::start("tokens");
        let rows = sqlx::query("SELECT name, role, token_hash, created_by, created_at FROM admin_tokens ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token, recording `change`. Returns whether it existed.
    pub async fn revoke_token(&self, name: &str, change: &Change<'_>) -> Result<bool> {
        let _timer = StoreTimer::start("revoke_token");
        let mut tx = self.pool.begin().await.map_err(StoreError::from_sqlx)?;
        let deleted = sqlx::query("DELETE FROM admin_tokens WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        if deleted == 1 {
            self.record_change(&mut tx, change, None, None, Utc::now()).await?;
        }
        tx.commit().await.map_err(StoreError::from_sqlx)?;
        Ok(deleted == 1)
    }
}

fn token_from_row(row: &sqlx::any::AnyRow) -> Result<TokenRecord> {
    let role: String = row.try_get("role").map_err(StoreError::from_sqlx)?;
    Ok(TokenRecord {
        name: row.try_get("name").map_err(StoreError::from_sqlx)?,
        role: Role::parse(&role)?,
        token_hash: row.try_get("token_hash").map_err(StoreError::from_sqlx)?,
        created_by: row.try_get("created_by").map_err(StoreError::from_sqlx)?,
        created_at: millis(row.try_get("created_at").map_err(StoreError::from_sqlx)?),
    })
}
