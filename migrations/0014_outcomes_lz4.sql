-- Issue 9: a final Outcome is stored once, in `outcomes` (its body about 3 KB of the regulation's
-- texts in three languages, its signed document about 2.6 KB). pglz compressed them on every
-- completion and refusal and was a few per cent of PostgreSQL's CPU on the hot path; lz4 does the
-- same job several times faster at a similar ratio. Only new values change (no rewrite). A server
-- built without lz4 keeps pglz, so this migration runs everywhere.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE outcomes ALTER COLUMN body SET COMPRESSION lz4;
        ALTER TABLE outcomes ALTER COLUMN document SET COMPRESSION lz4;
    END IF;
END
$$;
