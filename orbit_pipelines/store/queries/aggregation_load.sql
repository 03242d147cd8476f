SELECT name, state, rows_reflected
FROM orbit.aggregation_state
WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s
