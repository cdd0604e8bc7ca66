-- The purge cursor a node's new cache was last started at: it needs no
-- purge up to that id, so a purge's answer does not wait for it. NULL for a
-- node that only ever resumed after a purge it applied.
ALTER TABLE data_plane_nodes ADD COLUMN purge_cursor BIGINT;
