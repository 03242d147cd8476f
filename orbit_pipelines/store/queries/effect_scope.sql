-- The id that names a run group, step and run in the effect ledger; created on first use.
WITH created AS (
    INSERT INTO orbit.effect_scopes (root_run_id, step_key, run_id)
    VALUES (%(root_run_id)s, %(step_key)s, %(run_id)s)
    ON CONFLICT (root_run_id, step_key, run_id) DO NOTHING
    RETURNING scope_id
)
SELECT scope_id FROM created
UNION ALL
SELECT scope_id FROM orbit.effect_scopes
WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND run_id = %(run_id)s
LIMIT 1
