-- What the ledger holds for a key (no row: nothing), and whether this execution still owns
-- its step: an effect that records nothing before its call is still never called by an
-- execution that was fenced out.
SELECT EXISTS (
           SELECT 1 FROM orbit.step_fences
           WHERE root_run_id = %(root_run_id)s AND step_key = %(step_key)s
             AND epoch = %(epoch)s
       ) AS owned,
       e.status, e.result, e.row_tag, e.detail
FROM (VALUES (1)) AS one (x)
LEFT JOIN orbit.effects e ON e.key_hash = %(key_hash)s
