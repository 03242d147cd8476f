INSERT INTO orbit.batch_members (batch_id, key_hash, row_key)
SELECT %(batch_id)s, t.key_hash::uuid, t.row_key
FROM unnest(%(key_hashes)s::text[], %(row_keys)s::text[]) AS t(key_hash, row_key)
