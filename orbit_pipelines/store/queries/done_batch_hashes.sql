-- The packed key digests of every done-batch record of one step (streamed by a binary
-- COPY, a record at a time: the whole set never sits in one value).
SELECT key_hashes
FROM orbit.done_batches
WHERE root_run_id = %(root_run_id)s
  AND step_key = %(step_key)s
