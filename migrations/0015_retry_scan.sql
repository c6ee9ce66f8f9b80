-- Issue 9: the sweeper looks for due retries twice a second in every process. Asked for
-- `state = 'retry'`, PostgreSQL could answer from requests_open_deadline (which holds every open
-- request, and under load their dead versions too) instead of requests_retry_due, whenever its
-- statistics made the two look alike: measured at 250 requests/s, 2.8 ms per scan that found
-- nothing, and with tens of thousands of requests waiting for staff it would read them all.
--
-- `next_attempt_at` is set exactly while a request is in `retry` (every transition out of
-- `retry` clears it), so the scan asks for `next_attempt_at <= now()` alone, which only this
-- index can answer. The constraint keeps that true.
UPDATE requests SET next_attempt_at = NULL WHERE state <> 'retry' AND next_attempt_at IS NOT NULL;
UPDATE requests SET next_attempt_at = now() WHERE state = 'retry' AND next_attempt_at IS NULL;
ALTER TABLE requests ADD CONSTRAINT requests_next_attempt_only_in_retry
    CHECK ((state = 'retry') = (next_attempt_at IS NOT NULL));
DROP INDEX requests_retry_due;
CREATE INDEX requests_retry_due ON requests (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
