-- Issue 9: a final Outcome (its body about 3 KB, its signed document about 2.6 KB) compresses to
-- about 4 KB, which PostgreSQL still moved out of line: with the default storage a value goes to
-- the TOAST table as soon as the compressed row passes 2 KB. Each completion and refusal then
-- wrote two or three TOAST chunks and their index entries and looked up a fresh chunk id, for a
-- row that is written once and read rarely (the console and the status API). With storage MAIN
-- the compressed values stay in the row unless it passes a page. Only new rows change.
ALTER TABLE outcomes ALTER COLUMN body SET STORAGE MAIN, ALTER COLUMN document SET STORAGE MAIN;
