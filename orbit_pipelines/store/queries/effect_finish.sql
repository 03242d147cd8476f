-- The outcome of an attempt whose intent (or success) was recorded. A plain first-attempt
-- success drops the detail; anything else keeps it, with the error and who settled it.
UPDATE orbit.effects
SET status = %(status)s, result = %(result)s::json,
    detail = CASE
        WHEN %(keep_detail)s::boolean OR (detail ->> 'attempts')::integer > 1
        THEN (coalesce(detail, '{}') - 'error_code' - 'error_message') || %(detail)s::jsonb
             || jsonb_build_object('at', now())
    END
WHERE key_hash = %(key_hash)s
