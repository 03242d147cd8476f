-- The current owner's epoch, without a lock (opens a batch transaction, early warning).
SELECT epoch
FROM orbit.step_fences
WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s
