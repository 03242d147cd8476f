SELECT coalesce(max(batch_no), 0) + 1 AS next_no
FROM orbit.batches
WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s
