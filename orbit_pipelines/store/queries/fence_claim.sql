-- A new execution of the step takes the next epoch (1 for the first). The row lock this
-- takes waits for a commit of the previous owner in flight, never for its whole batch.
INSERT INTO orbit.step_fences AS f (root_run_id, step_key, epoch, run_id, host, pid)
VALUES (%(root_run_id)s, %(step_key)s, 1, %(run_id)s, %(host)s, %(pid)s)
ON CONFLICT (root_run_id, step_key) DO UPDATE SET
    epoch = f.epoch + 1,
    run_id = excluded.run_id,
    host = excluded.host,
    pid = excluded.pid,
    claimed_at = now()
RETURNING epoch
