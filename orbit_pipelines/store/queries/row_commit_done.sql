-- The common batch: every row done, no results. Hashes travel as one bytea (16 bytes per
-- row) and keys as one string joined by the unit separator (the caller checks no key
-- contains it): two parameters instead of six 1,000-element arrays, whose client-side
-- encoding cost more than the insert.
INSERT INTO orbit.step_rows AS r (
    root_run_id, step_key, key_hash, row_key, status, attempt, run_id, updated_at
)
SELECT %(root_run_id)s, %(step_key)s,
       encode(substring(%(key_hashes)s::bytea FROM (t.n::int - 1) * 16 + 1 FOR 16), 'hex')::uuid,
       t.row_key, 'done', 1, %(run_id)s, now()
FROM unnest(string_to_array(%(row_keys)s::text, chr(31))) WITH ORDINALITY AS t(row_key, n)
ON CONFLICT (root_run_id, step_key, key_hash) DO UPDATE SET
    status = 'done',
    attempt = r.attempt + 1,
    run_id = excluded.run_id,
    result = NULL,
    error_code = NULL,
    error_message = NULL,
    updated_at = now()
