-- Cache purges sent to a gateway's data planes, and which node applied
-- each (and how many stored responses it removed). Ids come from a
-- sequence and are never reused: a node resumes after the last id it
-- applied. Rows are kept for a day. Times are Unix milliseconds.
CREATE TABLE cache_purges (
    id         BIGSERIAL PRIMARY KEY,
    gateway    TEXT NOT NULL REFERENCES gateways (name) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('url', 'prefix', 'tag')),
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX cache_purges_by_gateway ON cache_purges (gateway, id);

CREATE TABLE cache_purge_acks (
    purge_id   BIGINT NOT NULL REFERENCES cache_purges (id) ON DELETE CASCADE,
    node_id    TEXT NOT NULL,
    removed    BIGINT NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (purge_id, node_id)
);
