-- The latest attempt of every batch of a step that has not completed, with its members:
-- a rerun retries each one as a new attempt with exactly these members.
WITH latest AS (
    SELECT DISTINCT ON (batch_no) batch_id, batch_no, attempt, status
    FROM orbit.batches
    WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s
    ORDER BY batch_no, attempt DESC
)
SELECT l.batch_no, l.attempt, l.status, m.key_hash::text AS key_hash
FROM latest AS l
JOIN orbit.batch_members AS m ON m.batch_id = l.batch_id
WHERE l.status <> 'completed'
ORDER BY l.batch_no
