-- Issue 9: an outbox row lives for well under a second (it is deleted once published), so
-- compressing its body (an Outcome of 3-6 KB with the signed document) on every hop was work
-- thrown away. The body is stored as it is, inline unless the row passes 8 KB.
ALTER TABLE outbox ALTER COLUMN body SET STORAGE EXTERNAL;
ALTER TABLE outbox SET (toast_tuple_target = 8160);
