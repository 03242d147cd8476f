SELECT status, result, row_tag, detail
FROM orbit.effects
WHERE key_hash = %(key_hash)s
FOR UPDATE
