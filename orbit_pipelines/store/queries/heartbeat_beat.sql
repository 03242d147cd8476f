-- The executor's beat; progress_at moves only when rows_done (or the process) changed.
INSERT INTO orbit.heartbeats AS h (
    run_id, step_key, root_run_id, host, pid, rows_done, rows_total
)
VALUES (
    %(run_id)s, %(step_key)s, %(root_run_id)s, %(host)s, %(pid)s, %(rows_done)s, %(rows_total)s
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
