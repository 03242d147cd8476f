-- Inside a commit: the share lock holds off a newer claim until this transaction ends, so
-- a commit that passed the check cannot land after the step changed hands.
SELECT epoch
FROM orbit.step_fences
WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s
FOR SHARE
