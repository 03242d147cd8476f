-- A new attempt of an effect whose earlier attempt failed or may be repeated safely; only
-- by the execution that owns the step (no row updated: it was fenced out).
UPDATE orbit.effects
SET status = %(status)s, attempts = attempts + 1, run_id = %(run_id)s,
    error_code = NULL, error_message = NULL, updated_at = now()
WHERE effect_key = %(effect_key)s
  AND EXISTS (
    SELECT 1 FROM orbit.step_fences
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s AND epoch = %(epoch)s
  )
