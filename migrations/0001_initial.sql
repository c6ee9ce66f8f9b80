-- qyzmet's store. PostgreSQL is the source of truth for every request's state; RabbitMQ only
-- carries work. Long waits (payment, staff decisions, retry back-off) are rows here, never
-- unacknowledged deliveries.

-- One row per request ever received with a usable request_id. The primary key is the inbox for
-- Requests: a republished request finds its row and produces nothing new.
CREATE TABLE requests (
    request_id        uuid PRIMARY KEY,
    request_number    text UNIQUE,
    service           text NOT NULL,
    region            text NOT NULL,
    channel           text NOT NULL,
    -- Masked applicant identifier, for screens and logs (P-41).
    applicant_masked  text NOT NULL,
    -- queued: a task for step_index is on its way to a pool; waiting: for a payment or a staff
    -- decision; retry: a transient failure, next attempt at next_attempt_at; completed/refused: final.
    state             text NOT NULL CHECK (state IN ('queued', 'waiting', 'retry', 'completed', 'refused')),
    step_index        integer NOT NULL DEFAULT 0,
    step              text,
    step_deadline     timestamptz,
    service_deadline  timestamptz,
    deadlines         jsonb NOT NULL DEFAULT '[]',
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    -- Facts gathered by earlier steps (registry findings), read by later ones.
    facts             jsonb NOT NULL DEFAULT '{}',
    body              jsonb NOT NULL,
    submitter         text,
    traceparent       text,
    submitted_at      timestamptz,
    received_at       timestamptz NOT NULL,
    registered_at     timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- The sweeper's two questions: which open requests are past their step deadline, and which
-- retries are due. Partial indexes keep them small as finished requests pile up.
CREATE INDEX requests_open_deadline ON requests (step_deadline) WHERE state IN ('queued', 'waiting', 'retry');
CREATE INDEX requests_retry_due ON requests (next_attempt_at) WHERE state = 'retry';

CREATE SEQUENCE request_number_seq;

-- Append-only audit trail: every step event with its time and deadline.
CREATE TABLE step_history (
    id          bigserial PRIMARY KEY,
    request_id  uuid NOT NULL REFERENCES requests (request_id),
    step_index  integer NOT NULL,
    step        text NOT NULL,
    event       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    deadline    timestamptz,
    detail      jsonb
);
CREATE INDEX step_history_request ON step_history (request_id, id);

-- Exactly one final outcome per request: the primary key makes a second one impossible.
CREATE TABLE outcomes (
    request_id  uuid PRIMARY KEY REFERENCES requests (request_id),
    status      text NOT NULL CHECK (status IN ('completed', 'refused')),
    step        text,
    code        text,
    kind        text,
    document    jsonb,
    body        jsonb NOT NULL,
    at          timestamptz NOT NULL
);

-- Transactional outbox: messages written in the same transaction as the state change that
-- causes them, published after commit, re-published by the relay if a process died between.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    message_id    text NOT NULL,
    body          bytea NOT NULL,
    traceparent   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;

-- PaymentNotices. The primary key is the inbox: the same payment_id twice counts once.
CREATE TABLE payments (
    payment_id   text PRIMARY KEY,
    request_id   uuid NOT NULL,
    amount       numeric(14, 2) NOT NULL,
    currency     text NOT NULL,
    paid_at      timestamptz NOT NULL,
    payer_masked text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_request ON payments (request_id);

-- Staff decisions, applied or not (late and unexpected ones are recorded with the reason).
CREATE TABLE decisions (
    decision_id  text PRIMARY KEY,
    request_id   uuid NOT NULL,
    verdict      text NOT NULL,
    reason       jsonb,
    decided_at   timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    applied      boolean NOT NULL,
    rejection    text,
    submitter    text
);
CREATE INDEX decisions_request ON decisions (request_id);

-- Document numbers (licence numbers and the like), per prefix and year.
CREATE TABLE document_counters (
    scope  text PRIMARY KEY,
    value  bigint NOT NULL
);

-- State registries, loaded with `qyzmet registry import` (a gateway adapter can replace them).
-- ГБД ФЛ: individuals.
CREATE TABLE registry_persons (
    iin         text PRIMARY KEY,
    full_name   text NOT NULL,
    birth_date  date,
    imported_at timestamptz NOT NULL DEFAULT now()
);
-- ГБД ЮЛ: legal entities.
CREATE TABLE registry_legal_entities (
    bin         text PRIMARY KEY,
    name        text NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);
-- ЕНИС: notarised powers of attorney.
CREATE TABLE registry_powers_of_attorney (
    number              text PRIMARY KEY,
    principal           text NOT NULL,
    representative_iin  text NOT NULL,
    valid_until         date,
    revoked             boolean NOT NULL DEFAULT false,
    imported_at         timestamptz NOT NULL DEFAULT now()
);
-- Register of the attached population: which PHC organisation a person is attached to.
CREATE TABLE registry_attachments (
    iin          text PRIMARY KEY,
    provider_bin text NOT NULL,
    since        date,
    imported_at  timestamptz NOT NULL DEFAULT now()
);
