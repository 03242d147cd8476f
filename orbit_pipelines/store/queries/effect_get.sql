SELECT status, receiver, result, error_code, error_message, attempts, row_key, row_hash
FROM orbit.effects
WHERE effect_key = %(effect_key)s
FOR UPDATE
