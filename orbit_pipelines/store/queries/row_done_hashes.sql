-- Rows of one step that need no more work in step_rows (done or quarantined there), as one
-- bytea of their hashes (one value crosses the wire instead of a row and a Python object
-- per hash; unordered: sorting in SQL cost 3x the whole query, the executor sorts), and
-- how many done rows the step's done_batches records hold, so that the loader can size
-- its arrays before it streams them (done_batch_hashes). A bytea holds up to 1 GB: 67
-- million per-row records per step.
SELECT (SELECT coalesce(string_agg(uuid_send(r.key_hash), ''::bytea), ''::bytea)
        FROM orbit.step_rows r
        WHERE r.root_run_id = %(root_run_id)s
          AND r.step_key = %(step_key)s
          AND r.status IN ('done', 'quarantined')),
       (SELECT coalesce(sum(b.row_count), 0)::bigint
        FROM orbit.done_batches b
        WHERE b.root_run_id = %(root_run_id)s
          AND b.step_key = %(step_key)s)
