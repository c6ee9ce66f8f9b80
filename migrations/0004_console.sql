-- The operator console: sessions, the operators' own audit trail, dead letters taken off the
-- broker into rows an operator can search, replay or discard, and the processes' heartbeats.
--
-- The console logs in as a member of qyzmet_console: it reads the pipeline's tables and writes
-- only its own. `qyzmet run` (everything in one process) needs a login role that is a member of
-- both qyzmet_worker and qyzmet_console.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'qyzmet_console') THEN
        BEGIN
            CREATE ROLE qyzmet_console NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL; -- created meanwhile by a migration of another database
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO qyzmet_console', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO qyzmet_console;

-- Signed-in operators. Only a digest of the cookie's token is kept, so a copy of this table
-- signs nobody in.
CREATE TABLE console_sessions (
    token_digest bytea PRIMARY KEY,
    operator     text NOT NULL,
    role         text NOT NULL CHECK (role IN ('viewer', 'operator')),
    csrf         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- Every operator action and every search by IIN/BIN: who, when, what, why. Append-only, for
-- the console and for the table's owner alike.
CREATE TABLE operator_actions (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    operator  text NOT NULL,
    role      text NOT NULL,
    action    text NOT NULL,
    target    text,
    why       text,
    detail    jsonb
);
CREATE INDEX operator_actions_at ON operator_actions (at DESC);

CREATE FUNCTION operator_actions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operator_actions is append-only';
END
$$;
CREATE TRIGGER operator_actions_append_only BEFORE UPDATE OR DELETE ON operator_actions
    FOR EACH ROW EXECUTE FUNCTION operator_actions_append_only();
CREATE TRIGGER operator_actions_no_truncate BEFORE TRUNCATE ON operator_actions
    FOR EACH STATEMENT EXECUTE FUNCTION operator_actions_append_only();

-- Messages from the dead-letter queue. The console moves each one here (and acks it only after
-- the commit), so a dead letter is searchable, groupable and acted on once, by whom and why.
-- `digest` (of headers and body) recognises a redelivery of a message already moved.
CREATE TABLE dead_letters (
    id            bigserial PRIMARY KEY,
    digest        bytea NOT NULL UNIQUE,
    reason        text NOT NULL,
    source_queue  text NOT NULL,
    routing_key   text NOT NULL,
    message_id    text,
    submitter     text,
    headers       jsonb NOT NULL,
    body          bytea NOT NULL,
    dead_at       timestamptz NOT NULL,
    moved_at      timestamptz NOT NULL DEFAULT now(),
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'replayed', 'discarded')),
    acted_by      text,
    acted_at      timestamptz,
    why           text
);
CREATE INDEX dead_letters_open ON dead_letters (reason, source_queue) WHERE state = 'open';

-- Each process's heartbeat, written by its housekeeping pass every few seconds.
CREATE TABLE worker_heartbeats (
    process_id   uuid PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    pools        text NOT NULL,
    concurrency  integer NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen    timestamptz NOT NULL
);

-- Search by applicant (exact IIN or BIN): one B-tree entry per request. The time ranges of the
-- Overview, the Deadlines page and `qyzmet report sla` use BRIN indexes: rows arrive in time
-- order, so a BRIN index is a few pages and costs the hot path almost nothing, where a B-tree
-- on step_history would cost every step of every request an index insert.
CREATE INDEX requests_applicant ON requests ((coalesce(body #>> '{applicant,iin}', body #>> '{applicant,bin}')));
CREATE INDEX requests_received ON requests USING brin (received_at);
CREATE INDEX step_history_at ON step_history USING brin (at);

-- Who signed a decision, masked (the console's timeline).
ALTER TABLE decisions ADD COLUMN signer_masked text;

GRANT SELECT, INSERT, UPDATE ON worker_heartbeats TO qyzmet_worker;

GRANT SELECT ON requests, step_history, outcomes, outbox, payments, decisions, worker_heartbeats
    TO qyzmet_console;
GRANT SELECT, INSERT, UPDATE, DELETE ON console_sessions TO qyzmet_console;
GRANT SELECT, INSERT ON operator_actions TO qyzmet_console;
GRANT SELECT, INSERT, UPDATE ON dead_letters TO qyzmet_console;
GRANT USAGE ON SEQUENCE operator_actions_id_seq, dead_letters_id_seq TO qyzmet_console;
GRANT SELECT ON operator_actions, dead_letters, worker_heartbeats TO qyzmet_reader;
