-- Document numbers a block at a time (issue 9): a process takes the next p_count numbers of a
-- scope in one increment and hands them out itself, so a completion costs no statement and no
-- commit of its own for its number. The increment commits without waiting for its WAL flush,
-- for the reason migration 0007 gives: a durable document implies a durable increment. Numbers
-- stay unique; with several result processes they are not in order of issue across processes,
-- and a process that stops leaves the rest of its block unused.
CREATE FUNCTION next_document_numbers(p_scope text, p_count integer) RETURNS bigint
    LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO document_counters (scope, value) VALUES (p_scope, p_count)
        ON CONFLICT (scope) DO UPDATE SET value = document_counters.value + p_count
        RETURNING value INTO n;
    RETURN n;
END
$$;

-- next_document_number (0007) stays for processes of the previous version during a rolling
-- upgrade; both increment the same counter, so their numbers never collide.
