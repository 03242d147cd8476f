-- Claim an effect key: a new row means "ours, go"; no row back means someone recorded it first.
INSERT INTO orbit.effects (
    effect_key, root_run_id, step_key, row_key, receiver, status, run_id
)
VALUES (
    %(effect_key)s, %(root_run_id)s, %(step_key)s, %(row_key)s, %(receiver)s, %(status)s, %(run_id)s
)
ON CONFLICT (effect_key) DO NOTHING
RETURNING effect_key
