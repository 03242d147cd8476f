-- Tokens of one row finished by an earlier attempt: a rerun does not redo them.
SELECT token_no
FROM orbit.row_tokens
WHERE root_run_id = %(root_run_id)s
  AND step_key = %(step_key)s
  AND key_hash = %(key_hash)s::uuid
  AND status IN ('done', 'quarantined')
