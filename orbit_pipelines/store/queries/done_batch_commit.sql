-- One record for the plain done rows of a committed batch, in the batch transaction:
-- their digests packed in one bytea, their keys joined by chr(31), their results (when
-- any row emitted one) as one JSON array aligned with the keys.
INSERT INTO orbit.done_batches (
    root_run_id, step_key, run_id, row_count, key_hashes, row_keys, results
) VALUES (
    %(root_run_id)s, %(step_key)s, %(run_id)s, %(row_count)s, %(key_hashes)s::bytea,
    %(row_keys)s::text, %(results)s::jsonb
)
