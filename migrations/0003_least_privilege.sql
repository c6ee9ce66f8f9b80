-- Least privilege and a tamper-evident audit trail (P-49).
--
-- Migrations run as the database's owner; the processes that handle requests log in as a role
-- that is a member of qyzmet_worker, which has only the DML the pipeline needs. The audit trail
-- (step_history) and the final outcomes are insert-only for it: no worker can rewrite history.
-- Group roles are cluster-wide; they are created here when missing (the owner then needs
-- CREATEROLE, or a DBA creates them beforehand — README «PostgreSQL roles»).

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['qyzmet_worker', 'qyzmet_registry_import', 'qyzmet_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a migration of another database
            END;
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO qyzmet_worker, qyzmet_registry_import, qyzmet_reader',
                   current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO qyzmet_worker, qyzmet_registry_import, qyzmet_reader;

-- The pipeline: request state, outbox, payments, decisions, document numbers.
GRANT SELECT, INSERT, UPDATE ON requests, outbox, payments, decisions, document_counters TO qyzmet_worker;
-- Append-only for the pipeline: the audit trail and the one final outcome per request.
GRANT SELECT, INSERT ON step_history, outcomes TO qyzmet_worker;
GRANT SELECT ON registry_persons, registry_legal_entities, registry_powers_of_attorney, registry_attachments
    TO qyzmet_worker;
GRANT USAGE ON SEQUENCE request_number_seq, step_history_id_seq, outbox_id_seq TO qyzmet_worker;

-- `qyzmet registry import`: the registry tables only.
GRANT SELECT, INSERT, UPDATE ON registry_persons, registry_legal_entities, registry_powers_of_attorney,
    registry_attachments TO qyzmet_registry_import;

-- Operators' screens and reports: read only.
GRANT SELECT ON requests, step_history, outcomes, outbox, payments, decisions, document_counters,
    registry_persons, registry_legal_entities, registry_powers_of_attorney, registry_attachments
    TO qyzmet_reader;

-- The hash chain: every audit row carries the SHA-256 of its own content and of the hash of the
-- request's previous row, so changing or removing a row breaks the chain from there on
-- (`qyzmet audit verify`). One definition of the digest serves the trigger and the check.
ALTER TABLE step_history ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

CREATE FUNCTION step_history_digest(prev bytea, request_id uuid, step_index integer, step text, event text,
                                    at timestamptz, deadline timestamptz, detail jsonb) RETURNS bytea
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN sha256(convert_to(concat_ws('|',
        encode(coalesce(prev, ''::bytea), 'hex'),
        request_id::text,
        step_index::text,
        step,
        event,
        (extract(epoch FROM at) * 1000000)::bigint::text,
        coalesce((extract(epoch FROM deadline) * 1000000)::bigint::text, ''),
        coalesce(detail::text, '')), 'UTF8'));

-- Rows of one request are written under that request's row lock, so "the latest row" is stable
-- while a row is added; rows added earlier in the same statement are visible here.
CREATE FUNCTION step_history_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    SELECT h.hash INTO NEW.prev_hash FROM step_history h
        WHERE h.request_id = NEW.request_id ORDER BY h.id DESC LIMIT 1;
    NEW.hash := step_history_digest(NEW.prev_hash, NEW.request_id, NEW.step_index, NEW.step, NEW.event,
                                    NEW.at, NEW.deadline, NEW.detail);
    RETURN NEW;
END
$$;

-- Chain what an earlier version wrote, in order.
DO $$
DECLARE
    r record;
    prev bytea;
    current_request uuid;
BEGIN
    FOR r IN SELECT * FROM step_history ORDER BY request_id, id LOOP
        IF current_request IS DISTINCT FROM r.request_id THEN
            prev := NULL;
            current_request := r.request_id;
        END IF;
        UPDATE step_history
            SET prev_hash = prev,
                hash = step_history_digest(prev, r.request_id, r.step_index, r.step, r.event, r.at, r.deadline, r.detail)
            WHERE id = r.id
            RETURNING hash INTO prev;
    END LOOP;
END
$$;

ALTER TABLE step_history ALTER COLUMN hash SET NOT NULL;
CREATE TRIGGER step_history_chain BEFORE INSERT ON step_history
    FOR EACH ROW EXECUTE FUNCTION step_history_chain();
