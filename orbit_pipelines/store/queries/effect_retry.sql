-- A new attempt of an effect whose earlier attempt failed or may be repeated safely.
UPDATE orbit.effects
SET status = %(status)s, attempts = attempts + 1, run_id = %(run_id)s,
    error_code = NULL, error_message = NULL, updated_at = now()
WHERE effect_key = %(effect_key)s
