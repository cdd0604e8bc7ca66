-- When a node last refused a version (Unix milliseconds), so the fleet view
-- can show an old rejection as history, with its time.
ALTER TABLE data_plane_nodes ADD COLUMN nacked_at BIGINT;
