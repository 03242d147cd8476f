-- Claim an effect key: a new row means "ours, go"; no row back means someone recorded it
-- first, or this execution no longer owns its step (no fence row with its epoch). A NULL
-- detail (a transactional success) stays NULL: a plain success keeps none.
INSERT INTO orbit.effects (key_hash, scope_id, row_tag, status, detail)
SELECT %(key_hash)s::uuid, %(scope_id)s::integer, %(row_tag)s::bigint, %(status)s::smallint,
       %(detail)s::jsonb || jsonb_build_object('at', now())
WHERE EXISTS (
    SELECT 1 FROM orbit.step_fences
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND epoch = %(epoch)s
)
ON CONFLICT (key_hash) DO NOTHING
RETURNING key_hash
