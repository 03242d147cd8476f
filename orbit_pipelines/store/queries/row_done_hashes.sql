-- Hashes of the rows of one step that need no more work, in uuid (= byte) order, so the
-- executor can binary-search them as one sorted array.
COPY (
    SELECT key_hash
    FROM orbit.step_rows
    WHERE root_run_id = %(root_run_id)s
      AND step_key = %(step_key)s
      AND status IN ('done', 'quarantined')
    ORDER BY key_hash
) TO STDOUT (FORMAT binary)
