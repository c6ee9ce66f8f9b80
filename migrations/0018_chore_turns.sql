-- Scaling out (issue 9): every process runs the fleet's chores — the deadline sweep and the
-- outbox relay — so that they go on whichever processes are alive. Each pass used to run in
-- every process: with N processes the fleet scanned the open requests' deadline index 2N times
-- a second and the outbox N times per relay interval, where once would do (the passes lock what
-- they change with SKIP LOCKED, so the extra ones found nothing). The scans are cheap while
-- vacuum and index hints keep up; while something holds an old snapshot (a long report, a
-- pg_dump) every dead entry of the deadline index with a past deadline is visited again by
-- every pass, and a pass was seen taking 70–180 ms in the bench, in each of five processes.
--
-- A process now runs a chore's pass only when it takes the chore's turn: the chore's row below
-- (written by the first process to ask), taken when nobody took it within the chore's
-- interval. Any process can take it, so the chores stop with the last process and not before.
CREATE TABLE chore_turns (
    chore    text PRIMARY KEY,
    taken_at timestamptz NOT NULL,
    -- The process (`worker_heartbeats.process_id`) that took it last, for an operator's eye.
    taken_by uuid NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON chore_turns TO qyzmet_worker;
GRANT SELECT ON chore_turns TO qyzmet_reader, qyzmet_console;
