-- Whether the step has rows recorded before the typed key rule (migration 0005): those
-- hashed every key as str(key), so an int key 1 was recorded under the digest of "1".
SELECT EXISTS (
    SELECT 1
    FROM orbit.step_rows r
    WHERE r.root_run_id = %(root_run_id)s
      AND r.step_key = %(step_key)s
      AND r.updated_at < (SELECT applied_at FROM orbit.schema_migrations WHERE version = 5)
)
