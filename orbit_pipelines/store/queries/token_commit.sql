-- Token outcomes of forked rows, in the same transaction as their rows.
INSERT INTO orbit.row_tokens AS k (
    root_run_id, step_key, key_hash, token_no, status, result, error_code, error_message,
    updated_at
)
SELECT %(root_run_id)s, %(step_key)s, t.key_hash::uuid, t.token_no, t.status,
       t.result::jsonb, t.error_code, t.error_message, now()
FROM unnest(
    %(key_hashes)s::text[], %(token_nos)s::int[], %(statuses)s::text[],
    %(results)s::text[], %(error_codes)s::text[], %(error_messages)s::text[]
) AS t(key_hash, token_no, status, result, error_code, error_message)
ON CONFLICT (root_run_id, step_key, key_hash, token_no) DO UPDATE SET
    status = excluded.status,
    result = excluded.result,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    updated_at = now()
