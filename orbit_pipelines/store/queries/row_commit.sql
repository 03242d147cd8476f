-- One batch of row outcomes, upserted in the batch transaction.
INSERT INTO orbit.step_rows AS r (
    root_run_id, step_key, key_hash, row_key, status, attempt, run_id,
    result, error_code, error_message, updated_at
)
SELECT %(root_run_id)s, %(step_key)s, t.key_hash::uuid, t.row_key, t.status, 1, %(run_id)s,
       t.result::jsonb, t.error_code, t.error_message, now()
FROM unnest(
    %(key_hashes)s::text[], %(row_keys)s::text[], %(statuses)s::text[],
    %(results)s::text[], %(error_codes)s::text[], %(error_messages)s::text[]
) AS t(key_hash, row_key, status, result, error_code, error_message)
ON CONFLICT (root_run_id, step_key, key_hash) DO UPDATE SET
    status = excluded.status,
    attempt = r.attempt + 1,
    run_id = excluded.run_id,
    result = excluded.result,
    error_code = excluded.error_code,
    error_message = excluded.error_message,
    updated_at = now()
