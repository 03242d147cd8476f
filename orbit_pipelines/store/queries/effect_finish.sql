UPDATE orbit.effects
SET status = %(status)s, result = %(result)s::jsonb, error_code = %(error_code)s,
    error_message = %(error_message)s, resolved_by = %(resolved_by)s, updated_at = now()
WHERE effect_key = %(effect_key)s
