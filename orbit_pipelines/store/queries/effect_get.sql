SELECT status, receiver, result, error_code, error_message, attempts
FROM orbit.effects
WHERE effect_key = %(effect_key)s
FOR UPDATE
