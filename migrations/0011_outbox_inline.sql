-- Issue 9: values PostgreSQL tried to compress on every hop for nothing.
-- - An outbox row lives for well under a second (it is deleted once published), so compressing
--   its body (an Outcome of 3-6 KB with the signed document) is work thrown away: the body is
--   stored as it is, and inline unless the row passes 8 KB.
-- - A result document is mostly signature and certificate (base64) and does not compress
--   (2.6 KB stays 2.6 KB); it is stored out of line without the attempt.
ALTER TABLE outbox ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE outbox SET (toast_tuple_target = 8160);
ALTER TABLE outcomes ALTER COLUMN document SET STORAGE EXTERNAL;
