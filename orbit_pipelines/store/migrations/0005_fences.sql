-- Fencing tokens: which execution owns a step of a run group. Each new execution of the
-- step (a recovery, a retry) takes epoch + 1; every commit of the step checks its epoch in
-- the same transaction, so a worker that wakes after being declared dead commits nothing.
-- backend_pid/backend_start name the owner's batch session: a newer owner terminates it,
-- because a paused owner's open transaction holds row locks the newer one would wait on.
CREATE TABLE orbit.step_fences (
    root_run_id  text        NOT NULL,
    step_key     text        NOT NULL,
    epoch        bigint      NOT NULL,
    run_id       text        NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    backend_pid  integer,
    backend_start timestamptz,
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (root_run_id, step_key)
);

-- An effect key belongs to the row that first used it; the digest tells rows apart even
-- when two keys print alike (int 1 and str "1").
ALTER TABLE orbit.effects ADD COLUMN row_hash uuid;
