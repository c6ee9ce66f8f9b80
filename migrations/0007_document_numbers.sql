-- Document numbers. Every completion of a scope (prefix and year) increments the same counter
-- row, and with a synchronous commit each increment held that row until its WAL was flushed:
-- completions queued behind one another (13 ms per number under load, most of the database's
-- time). The increment now commits without waiting for the flush. That is safe: a number is used
-- only by a completion that commits later, and PostgreSQL flushes the WAL in order, so a
-- durable completion implies a durable increment; an increment lost in a crash belonged to no
-- durable document, and its number may be given again.
CREATE FUNCTION next_document_number(p_scope text) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO document_counters (scope, value) VALUES (p_scope, 1)
        ON CONFLICT (scope) DO UPDATE SET value = document_counters.value + 1
        RETURNING value INTO n;
    RETURN n;
END
$$;
