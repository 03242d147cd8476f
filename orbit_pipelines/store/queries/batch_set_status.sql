UPDATE orbit.batches
SET status = %(status)s, run_id = %(run_id)s, updated_at = now()
WHERE batch_id = %(batch_id)s
