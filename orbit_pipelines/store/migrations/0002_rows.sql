-- Row ledger, tokens, batches, aggregation state, idempotency ledger, heartbeats.
-- A "logical run" is a Dagster run group: every key starts with its root run id, so a
-- re-execution finds what its ancestors finished.

-- key_hash is a 128-bit digest of row_key: a fixed-width primary key keeps the index small
-- and lets a resume load the done set as one compact array instead of a million strings.
CREATE TABLE orbit.step_rows (
    root_run_id    text        NOT NULL,
    step_key       text        NOT NULL,
    key_hash       uuid        NOT NULL,
    row_key        text        NOT NULL,
    status         text        NOT NULL
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'quarantined')),
    attempt        integer     NOT NULL DEFAULT 1,
    run_id         text,
    result         jsonb,
    error_code     text,
    error_message  text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (root_run_id, step_key, key_hash)
);

-- A row may fork into N tokens; the row is done only when every token is terminal.
CREATE TABLE orbit.row_tokens (
    root_run_id    text        NOT NULL,
    step_key       text        NOT NULL,
    key_hash       uuid        NOT NULL,
    token_no       integer     NOT NULL,
    status         text        NOT NULL
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'quarantined')),
    result         jsonb,
    error_code     text,
    error_message  text,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (root_run_id, step_key, key_hash, token_no)
);

-- Rows grouped for a sink; an interrupted batch is retried as a new attempt, same members.
CREATE TABLE orbit.batches (
    batch_id     bigserial   PRIMARY KEY,
    root_run_id  text        NOT NULL,
    step_key     text        NOT NULL,
    batch_no     integer     NOT NULL,
    attempt      integer     NOT NULL DEFAULT 1,
    status       text        NOT NULL
        CHECK (status IN ('draft', 'executing', 'completed', 'failed')),
    run_id       text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (root_run_id, step_key, batch_no, attempt)
);

CREATE TABLE orbit.batch_members (
    batch_id  bigint NOT NULL REFERENCES orbit.batches (batch_id) ON DELETE CASCADE,
    key_hash  uuid   NOT NULL,
    row_key   text   NOT NULL,
    PRIMARY KEY (batch_id, key_hash)
);

-- Written in the same transaction as the row statuses it reflects.
CREATE TABLE orbit.aggregation_state (
    root_run_id     text        NOT NULL,
    step_key        text        NOT NULL,
    name            text        NOT NULL,
    state           jsonb       NOT NULL,
    rows_reflected  bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (root_run_id, step_key, name)
);

-- Idempotency ledger. 'intent' with no outcome after a crash is "in doubt".
CREATE TABLE orbit.effects (
    effect_key     text        PRIMARY KEY,
    root_run_id    text        NOT NULL,
    step_key       text        NOT NULL,
    row_key        text,
    receiver       text        NOT NULL
        CHECK (receiver IN ('idempotent', 'transactional', 'unsafe')),
    status         text        NOT NULL
        CHECK (status IN ('intent', 'succeeded', 'failed', 'in_doubt')),
    attempts       integer     NOT NULL DEFAULT 1,
    run_id         text,
    result         jsonb,
    error_code     text,
    error_message  text,
    resolved_by    text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX effects_open_by_group ON orbit.effects (root_run_id)
    WHERE status IN ('intent', 'in_doubt');

-- Liveness of a step in a run: written at every batch commit and every few seconds.
-- progress_at moves only when rows_done moves, so a hung step is visible as an old
-- progress_at beside a fresh beat_at.
CREATE TABLE orbit.heartbeats (
    run_id       text        NOT NULL,
    step_key     text        NOT NULL,
    root_run_id  text        NOT NULL,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    rows_done    bigint      NOT NULL DEFAULT 0,
    rows_total   bigint,
    started_at   timestamptz NOT NULL DEFAULT now(),
    progress_at  timestamptz NOT NULL DEFAULT now(),
    beat_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_key)
);
CREATE INDEX heartbeats_by_group ON orbit.heartbeats (root_run_id);
