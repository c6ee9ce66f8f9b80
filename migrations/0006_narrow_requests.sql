-- A request's row is rewritten on every hop; its signed body (2-3 KB with the certificate
-- chain) is written once. Stored out of line, the body is not copied by those updates (only its
-- TOAST pointer is), and the applicant's identifier, which the console searches by, is a column
-- of its own instead of an expression index that every update had to recompute from the body.
ALTER TABLE requests ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE requests ADD COLUMN applicant_id text;
UPDATE requests SET applicant_id = coalesce(body #>> '{applicant,iin}', body #>> '{applicant,bin}');
DROP INDEX requests_applicant;
CREATE INDEX requests_applicant ON requests (applicant_id);
