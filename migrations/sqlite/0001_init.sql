-- Portico control plane schema (SQLite). Times are Unix milliseconds.

CREATE TABLE gateways (
    name            TEXT PRIMARY KEY,
    description     TEXT NOT NULL DEFAULT '',
    current_version BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL
);

-- Immutable history: one row per published version. `config` is the
-- canonical JSON snapshot; `hash` its sha256. The newest row of a gateway
-- (gateways.current_version) is its current config.
CREATE TABLE config_versions (
    gateway     TEXT NOT NULL REFERENCES gateways (name) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    hash        TEXT NOT NULL,
    config      TEXT NOT NULL,
    author      TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    rollback_of BIGINT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (gateway, version)
);

CREATE TABLE data_plane_nodes (
    gateway          TEXT NOT NULL REFERENCES gateways (name) ON DELETE CASCADE,
    node_id          TEXT NOT NULL,
    labels           TEXT NOT NULL DEFAULT '{}',
    software_version TEXT NOT NULL DEFAULT '',
    connected        BIGINT NOT NULL DEFAULT 0,
    -- The stream that last said hello; only it may mark the node disconnected.
    session_id       TEXT NOT NULL DEFAULT '',
    acked_version    BIGINT,
    acked_hash       TEXT,
    nacked_version   BIGINT,
    nack_reason      TEXT,
    connected_at     BIGINT NOT NULL,
    last_seen        BIGINT NOT NULL,
    PRIMARY KEY (gateway, node_id)
);

-- Admin API tokens; only the sha256 of a token is kept.
CREATE TABLE admin_tokens (
    name       TEXT PRIMARY KEY,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'read-only')),
    token_hash TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
