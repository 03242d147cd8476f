-- Claim an effect key: a new row means "ours, go"; no row back means someone recorded it
-- first, or this execution no longer owns its step (no fence row with its epoch).
INSERT INTO orbit.effects (
    effect_key, root_run_id, step_key, row_key, row_hash, receiver, status, run_id
)
SELECT %(effect_key)s, %(root_run_id)s, %(step_key)s, %(row_key)s, %(row_hash)s::uuid,
       %(receiver)s, %(status)s, %(run_id)s
WHERE EXISTS (
    SELECT 1 FROM orbit.step_fences
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND epoch = %(epoch)s
)
ON CONFLICT (effect_key) DO NOTHING
RETURNING effect_key
