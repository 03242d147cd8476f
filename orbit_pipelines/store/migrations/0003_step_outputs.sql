-- Step outputs, keyed by the run that produced them; root_run_id finds them across the group.
CREATE TABLE orbit.step_outputs (
    output_id     bigserial   PRIMARY KEY,
    root_run_id   text        NOT NULL,
    run_id        text        NOT NULL,
    step_key      text        NOT NULL,
    output_name   text        NOT NULL,
    mapping_key   text        NOT NULL DEFAULT '',
    format        text        NOT NULL CHECK (format IN ('json', 'parquet', 'pickle')),
    type_name     text        NOT NULL,
    content_hash  text        NOT NULL,
    size_bytes    bigint      NOT NULL,
    row_count     bigint,
    code_version  text,
    config_hash   text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, step_key, output_name, mapping_key)
);
CREATE INDEX step_outputs_by_group ON orbit.step_outputs (root_run_id, step_key, output_name);

-- Payload in chunks so that a large output is never one giant bytea in memory.
CREATE TABLE orbit.step_output_chunks (
    output_id  bigint  NOT NULL REFERENCES orbit.step_outputs (output_id) ON DELETE CASCADE,
    chunk_no   integer NOT NULL,
    data       bytea   NOT NULL,
    PRIMARY KEY (output_id, chunk_no)
);
