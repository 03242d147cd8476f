-- For many (root_run_id, step_key) pairs at once: for each pair, the last completed row in
-- input order with its own result and its succeeded side effect's result.
-- Same rule per pair: only the last committed batch (rows sharing the latest commit time,
-- in step_rows and in the step's last done_batches record) is ordered: rows with a
-- succeeded effect first, then by insertion order (a record's keys are in input order; its
-- rows are taken as after the per-row records of the same commit). A row's effect is found
-- by its row tag (migration 0008), status 4 = succeeded; a done effect keeps no time.
WITH wanted AS (
    SELECT w.root_run_id, w.step_key
    FROM unnest(CAST(%(roots)s AS text[]), CAST(%(steps)s AS text[])) AS w(root_run_id, step_key)
), last_batch AS (
    SELECT w.root_run_id, w.step_key,
           greatest(
               (SELECT max(s.updated_at) FROM orbit.step_rows s
                WHERE s.root_run_id = w.root_run_id AND s.step_key = w.step_key
                  AND s.status = 'done'),
               (SELECT d.created_at FROM orbit.done_batches d
                WHERE d.root_run_id = w.root_run_id AND d.step_key = w.step_key
                ORDER BY d.batch_seq DESC
                LIMIT 1)) AS at
    FROM wanted w
)
SELECT b.root_run_id, b.step_key, pick.row_key, pick.result, pick.effect_result
FROM last_batch b
CROSS JOIN LATERAL (
    SELECT c.row_key, c.result, e.result AS effect_result
    FROM (
        SELECT r.row_key, r.result, 0 AS part, row_number() OVER (ORDER BY r.ctid) AS pos,
               orbit.effect_row_tag(uuid_send(r.key_hash)) AS tag
        FROM orbit.step_rows r
        WHERE r.root_run_id = b.root_run_id AND r.step_key = b.step_key
          AND r.status = 'done' AND r.updated_at = b.at
        UNION ALL
        SELECT k.row_key, nullif(d.results -> (k.n::int - 1), 'null'::jsonb), 1, k.n,
               orbit.effect_row_tag(substring(d.key_hashes FROM (k.n::int - 1) * 16 + 1 FOR 8))
        FROM orbit.done_batches d
        CROSS JOIN LATERAL unnest(string_to_array(d.row_keys, chr(31)))
            WITH ORDINALITY AS k(row_key, n)
        WHERE d.root_run_id = b.root_run_id AND d.step_key = b.step_key
          AND d.created_at = b.at
    ) c
    LEFT JOIN LATERAL (
        SELECT x.result, true AS found
        FROM orbit.effects x
        JOIN orbit.effect_scopes xs ON xs.scope_id = x.scope_id
        WHERE xs.root_run_id = b.root_run_id AND xs.step_key = b.step_key
          AND x.row_tag = c.tag AND x.status = 4
        LIMIT 1
    ) e ON true
    ORDER BY e.found IS NULL, c.part DESC, c.pos DESC
    LIMIT 1
) pick
