-- Rows that were tried before but are not finished (failed, held, pending tokens): a
-- rerun of one of them must look up which of its tokens are already done.
SELECT key_hash
FROM orbit.step_rows
WHERE root_run_id = %(root_run_id)s
  AND step_key = %(step_key)s
  AND status NOT IN ('done', 'quarantined')
