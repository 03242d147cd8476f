-- For many (root_run_id, step_key) pairs at once: for each pair, the last completed row in
-- input order with its own result and its succeeded side effect's result.
-- Same rule per pair: only the last committed batch (rows sharing the latest updated_at)
-- is ordered, by the effect recorded last, then by insertion order.
WITH wanted AS (
    SELECT w.root_run_id, w.step_key
    FROM unnest(CAST(%(roots)s AS text[]), CAST(%(steps)s AS text[])) AS w(root_run_id, step_key)
), last_batch AS (
    SELECT w.root_run_id, w.step_key,
           (SELECT max(s.updated_at) FROM orbit.step_rows s
            WHERE s.root_run_id = w.root_run_id AND s.step_key = w.step_key
              AND s.status = 'done') AS at
    FROM wanted w
)
SELECT b.root_run_id, b.step_key, pick.row_key, pick.result, pick.effect_result
FROM last_batch b
CROSS JOIN LATERAL (
    SELECT r.row_key, r.result, e.result AS effect_result
    FROM orbit.step_rows r
    LEFT JOIN LATERAL (
        SELECT x.result, x.created_at
        FROM orbit.effects x
        WHERE x.root_run_id = r.root_run_id AND x.step_key = r.step_key
          AND x.row_key = r.row_key AND x.status = 'succeeded'
        ORDER BY x.created_at DESC
        LIMIT 1
    ) e ON true
    WHERE r.root_run_id = b.root_run_id AND r.step_key = b.step_key AND r.status = 'done'
      AND r.updated_at = b.at
    ORDER BY e.created_at DESC NULLS LAST, r.ctid DESC
    LIMIT 1
) pick
