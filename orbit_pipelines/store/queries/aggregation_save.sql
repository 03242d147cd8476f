-- Aggregation states, written in the transaction of the row statuses they reflect.
INSERT INTO orbit.aggregation_state AS a (root_run_id, step_key, name, state, rows_reflected, updated_at)
SELECT %(root_run_id)s, %(step_key)s, t.name, t.state::jsonb, %(rows_reflected)s, now()
FROM unnest(%(names)s::text[], %(states)s::text[]) AS t(name, state)
ON CONFLICT (root_run_id, step_key, name) DO UPDATE SET
    state = excluded.state,
    rows_reflected = excluded.rows_reflected,
    updated_at = now()
