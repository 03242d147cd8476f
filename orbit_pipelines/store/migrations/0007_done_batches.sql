-- The compact row ledger: rows that were simply done are recorded per committed batch,
-- one record per batch, instead of one step_rows row each (226 bytes a done row there,
-- about 21 here for short keys). step_rows keeps the rows that are not simply done
-- (failed, quarantined, held, pending tokens) and the rows an earlier attempt recorded
-- there, which are upserted in place as before.
--
-- key_hashes: the batch's 16-byte key digests, packed in key order (the done set reads
-- nothing else). Random bytes do not compress: STORAGE EXTERNAL keeps them out of line
-- without a compression attempt on every commit. row_keys: the display keys joined by the
-- unit separator chr(31) (the writer refuses a batch with a key containing it, or an empty
-- key; those rows go to step_rows), compressed by TOAST: pglz stores short keys in fewer
-- bytes than lz4 here (3.3 against 4.0 bytes a key for "order-00001234" or sequential
-- ints, 21.0 against 25.1 ledger bytes a row in total, measured 2026-12-01 on the 2-core
-- test machine, load 6). results: a JSON array aligned with the keys, NULL when no row of
-- the batch emitted a result.
CREATE TABLE orbit.done_batches (
    root_run_id  text        NOT NULL,
    step_key     text        NOT NULL,
    batch_seq    bigserial   NOT NULL,
    run_id       text        NOT NULL,
    row_count    integer     NOT NULL,
    key_hashes   bytea       NOT NULL,
    row_keys     text        NOT NULL,
    results      jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- One index for the done-set load, the counts (sum(row_count)), a group's prune and
    -- "the step's last batch" (batch_seq grows with commit order: a step's commits are
    -- serialized by its fence).
    PRIMARY KEY (root_run_id, step_key, batch_seq),
    CHECK (octet_length(key_hashes) = 16 * row_count)
);
ALTER TABLE orbit.done_batches ALTER COLUMN key_hashes SET STORAGE EXTERNAL;

-- Every row outcome of both ledgers as rows, in step_rows' shape, for readers that need
-- per-row keys (a person, tests, the demo's redo count). Counts should read
-- sum(row_count) of done_batches instead of unnesting it.
CREATE VIEW orbit.row_outcomes AS
SELECT r.root_run_id, r.step_key, r.key_hash, r.row_key, r.status, r.attempt, r.run_id,
       r.result, r.error_code, r.error_message, r.updated_at
FROM orbit.step_rows r
UNION ALL
SELECT b.root_run_id, b.step_key,
       encode(substring(b.key_hashes FROM (k.n::int - 1) * 16 + 1 FOR 16), 'hex')::uuid,
       k.row_key, 'done'::text, 1, b.run_id,
       nullif(b.results -> (k.n::int - 1), 'null'::jsonb), NULL::text, NULL::text,
       b.created_at
FROM orbit.done_batches b
CROSS JOIN LATERAL unnest(string_to_array(b.row_keys, chr(31))) WITH ORDINALITY AS k(row_key, n);
