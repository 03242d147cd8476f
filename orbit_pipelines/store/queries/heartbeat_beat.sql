-- The executor's beat, written only while this execution still owns the step (its epoch
-- is the fence's): a worker that wakes after a newer execution took over refreshes
-- nothing. progress_at moves only when rows_done (or the process) changed.
INSERT INTO orbit.heartbeats AS h (
    run_id, step_key, root_run_id, host, pid, rows_done, rows_total
)
SELECT %(run_id)s, %(step_key)s, %(root_run_id)s, %(host)s, %(pid)s, %(rows_done)s, %(rows_total)s
WHERE EXISTS (
    SELECT 1 FROM orbit.step_fences
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND epoch = %(epoch)s
)
ON CONFLICT (run_id, step_key) DO UPDATE SET
    host = excluded.host,
    pid = excluded.pid,
    rows_done = excluded.rows_done,
    rows_total = excluded.rows_total,
    progress_at = CASE
        WHEN h.rows_done <> excluded.rows_done OR h.pid <> excluded.pid THEN now()
        ELSE h.progress_at
    END,
    beat_at = now()
