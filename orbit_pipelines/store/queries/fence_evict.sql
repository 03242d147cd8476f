-- End the previous owner's batch session (matched by pid and start time, so a reused pid
-- is never hit): its open transaction rolls back and releases the locks it holds.
SELECT pg_terminate_backend(a.pid)
FROM orbit.step_fences f
JOIN pg_stat_activity a ON a.pid = f.backend_pid AND a.backend_start = f.backend_start
WHERE f.root_run_id = %(root_run_id)s AND f.step_key = %(step_key)s
  AND a.pid <> pg_backend_pid()
