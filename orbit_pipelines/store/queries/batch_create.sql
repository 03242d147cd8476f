INSERT INTO orbit.batches (root_run_id, step_key, batch_no, attempt, status, run_id)
VALUES (%(root_run_id)s, %(step_key)s, %(batch_no)s, %(attempt)s, 'draft', %(run_id)s)
RETURNING batch_id
