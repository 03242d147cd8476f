-- The last completed row of a step in input order, with its own result and the result of
-- its succeeded side effect. Only the last committed batch (the rows sharing the latest
-- updated_at) is ordered, so the lateral effect lookup runs for one batch, not the step.
WITH last_batch AS (
    SELECT max(updated_at) AS at
    FROM orbit.step_rows
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND status = 'done'
)
SELECT r.row_key, r.result, e.result AS effect_result
FROM orbit.step_rows r
JOIN last_batch b ON r.updated_at = b.at
LEFT JOIN LATERAL (
    SELECT x.result, x.created_at
    FROM orbit.effects x
    WHERE x.root_run_id = r.root_run_id AND x.step_key = r.step_key
      AND x.row_key = r.row_key AND x.status = 'succeeded'
    ORDER BY x.created_at DESC
    LIMIT 1
) e ON true
WHERE r.root_run_id = %(root_run_id)s AND r.step_key = %(step_key)s AND r.status = 'done'
ORDER BY e.created_at DESC NULLS LAST, r.ctid DESC
LIMIT 1
