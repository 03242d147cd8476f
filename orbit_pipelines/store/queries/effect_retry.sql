-- A new attempt of an effect whose earlier attempt failed or may be repeated safely; only
-- by the execution that owns the step (no row updated: it was fenced out).
UPDATE orbit.effects
SET status = %(status)s, scope_id = %(scope_id)s,
    detail = (coalesce(detail, '{}') - 'error_code' - 'error_message') || %(detail)s::jsonb
        || jsonb_build_object('attempts', coalesce((detail ->> 'attempts')::integer, 1) + 1,
                              'at', now())
WHERE key_hash = %(key_hash)s
  AND EXISTS (
    SELECT 1 FROM orbit.step_fences
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND epoch = %(epoch)s
  )
