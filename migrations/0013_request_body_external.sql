-- Issue 9: a request's body (the signed message, about 2.2 KB, mostly its base64 certificate
-- chain) does not compress: pglz was tried on every registration and gave up. The body is stored
-- out of line as it is, as it was after the failed attempt; updating the request still copies
-- only the pointer to it.
ALTER TABLE requests ALTER COLUMN body SET STORAGE EXTERNAL;

-- The waiting-requests gauge found waiting requests through `requests_open_deadline`, so every
-- pass visited every open request: with a backlog of a million queued requests, a million index
-- entries per pass in every process. Waiting requests get an index of their own.
CREATE INDEX requests_waiting ON requests (step) WHERE state = 'waiting';
