-- Recovery decisions. UNIQUE (parent_run_id) makes a second launch for one failed run
-- impossible: two sensor ticks, two daemons or a person with `orbit resume` race on the
-- INSERT and exactly one wins.
CREATE TABLE orbit.recoveries (
    recovery_id      bigserial   PRIMARY KEY,
    parent_run_id    text        NOT NULL UNIQUE,
    root_run_id      text        NOT NULL,
    job_name         text        NOT NULL,
    attempt          integer     NOT NULL,
    reason           text        NOT NULL CHECK (reason IN ('dead', 'hung', 'failed', 'manual')),
    detail           text        NOT NULL DEFAULT '',
    decided_by       text        NOT NULL,
    status           text        NOT NULL
        CHECK (status IN ('held', 'launching', 'launched', 'succeeded', 'failed', 'abandoned')),
    recovery_run_id  text        UNIQUE,
    not_before       timestamptz,
    detected_at      timestamptz NOT NULL DEFAULT now(),
    launched_at      timestamptz,
    finished_at      timestamptz,
    outcome          text
);
CREATE INDEX recoveries_by_group ON orbit.recoveries (root_run_id);

-- Per run group controls: a person abandoned it (`orbit cancel`) or turned recovery off.
CREATE TABLE orbit.run_groups (
    root_run_id   text        PRIMARY KEY,
    abandoned_at  timestamptz,
    auto_recover  boolean     NOT NULL DEFAULT true,
    note          text,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
