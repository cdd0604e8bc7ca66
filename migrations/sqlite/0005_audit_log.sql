-- The audit log: every admin token created or revoked, every config write
-- (each published version) and every cache purge, with who did it, when
-- and from where. Written in the transaction of the change it records.
-- Rows outlive their gateway (no foreign key) and are removed only by age
-- (--audit-retention-days). AUTOINCREMENT ids are never reused: newest is highest.
-- Times are Unix milliseconds. Never holds a secret.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at BIGINT NOT NULL,
    -- The token name that made the change (`bootstrap` for --admin-token,
    -- `portico` for the control plane itself).
    author     TEXT NOT NULL,
    -- The client address (ip:port) as the admin server saw it; NULL for
    -- changes the control plane made on its own.
    source     TEXT,
    -- `subject.verb`: `token.create`, `service.update`, `config.replace`, ...
    action     TEXT NOT NULL,
    gateway    TEXT,
    -- What the action was about: a token, gateway or entity name, a version.
    target     TEXT NOT NULL DEFAULT '',
    -- The config version the change published, if it published one.
    version    BIGINT,
    message    TEXT NOT NULL DEFAULT ''
);

CREATE INDEX audit_log_by_gateway ON audit_log (gateway, id);
CREATE INDEX audit_log_by_author ON audit_log (author, id);
CREATE INDEX audit_log_by_time ON audit_log (created_at);
