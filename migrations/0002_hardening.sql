-- The outbox relay claims rows in a statement of its own and publishes with no transaction
-- open, so a blocked broker holds no row lock; a claim older than the relay age lapses (the
-- relay that made it died) and the row is claimed again.
ALTER TABLE outbox ADD COLUMN relay_claimed_at timestamptz;

-- Request numbers end in a serial padded to seven digits. `lpad` also truncates, so past
-- 9,999,999 numbers would repeat; padding only (never cutting) keeps every number unique.
CREATE FUNCTION request_serial(n bigint) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN lpad(n::text, greatest(7, length(n::text)), '0');

-- The broker-validated user_id of the system that sent each PaymentNotice (the systems file
-- allows only the payment gateway).
ALTER TABLE payments ADD COLUMN submitter text;
