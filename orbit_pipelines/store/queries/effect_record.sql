-- The outcome of an effect that recorded no intent (idempotent: a retry with the same key
-- is its reconciliation). A first outcome is one insert, the one write a plain success
-- costs; an attempt after a recorded failure updates that row (attempts + 1, so it keeps
-- its detail). A recorded success is kept.
INSERT INTO orbit.effects AS e (key_hash, scope_id, row_tag, status, result, detail)
VALUES (%(key_hash)s::uuid, %(scope_id)s::integer, %(row_tag)s::bigint, %(status)s::smallint,
        %(result)s::json, %(detail)s::jsonb || jsonb_build_object('at', now()))
ON CONFLICT (key_hash) DO UPDATE
SET status = excluded.status,
    result = excluded.result,
    scope_id = excluded.scope_id,
    detail = (coalesce(e.detail, '{}') - 'error_code' - 'error_message')
        || coalesce(excluded.detail, '{}')
        || jsonb_build_object('attempts', coalesce((e.detail ->> 'attempts')::integer, 1) + 1,
                              'at', now())
WHERE e.status <> 4
