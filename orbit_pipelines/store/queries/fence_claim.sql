-- A new execution of the step takes the next epoch (1 for the first) and records its
-- batch session, so that a still newer one can end it.
INSERT INTO orbit.step_fences AS f (
    root_run_id, step_key, epoch, run_id, host, pid, backend_pid, backend_start
)
SELECT %(root_run_id)s, %(step_key)s, 1, %(run_id)s, %(host)s, %(pid)s, a.pid, a.backend_start
FROM pg_stat_activity a
WHERE a.pid = pg_backend_pid()
ON CONFLICT (root_run_id, step_key) DO UPDATE SET
    epoch = f.epoch + 1,
    run_id = excluded.run_id,
    host = excluded.host,
    pid = excluded.pid,
    backend_pid = excluded.backend_pid,
    backend_start = excluded.backend_start,
    claimed_at = now()
RETURNING epoch
