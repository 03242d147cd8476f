-- Hashes of the rows of one step that need no more work, concatenated into one bytea:
-- one value crosses the wire instead of a row (and a Python object) per hash. Unordered:
-- sorting in SQL cost 3x the whole query; the executor sorts the array instead. (A bytea
-- holds up to 1 GB: 67 million rows per step.)
SELECT coalesce(string_agg(uuid_send(key_hash), ''::bytea), ''::bytea)
FROM orbit.step_rows
WHERE root_run_id = %(root_run_id)s
  AND step_key = %(step_key)s
  AND status IN ('done', 'quarantined')
