-- Detection at scale: a cursor over Dagster's RUN_FAILURE events per scanner, and every
-- decision the scanner took, with what it waits for, so a decided run costs nothing on
-- later ticks until that changes.

-- scanner: who pages (e.g. 'sensor:orbit_recovery@__repository__'); failure_cursor: the
-- storage id of the last RUN_FAILURE event of Dagster's event log it has read.
CREATE TABLE orbit.recovery_scan (
    scanner         text        PRIMARY KEY,
    failure_cursor  bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- One row per failed (or dead/hung) run detection decided. depends says what would make
-- the decision change: 'final' (launched or held: orbit.recoveries owns it from then on),
-- 'backoff' (re-decided once not_before passed), 'switch_global' / 'switch_group' (re-decided
-- when that switch is on again), 'switch_tag' and 'child' (never: the run's own tags, or
-- somebody else re-executed it). decisions counts how often the run was decided.
CREATE TABLE orbit.recovery_decisions (
    parent_run_id  text        PRIMARY KEY,
    root_run_id    text        NOT NULL,
    job_name       text        NOT NULL,
    reason         text        NOT NULL,
    detail         text        NOT NULL DEFAULT '',
    error_code     text,
    failed_at      timestamptz,
    tags           jsonb       NOT NULL DEFAULT '{}',
    action         text        NOT NULL CHECK (action IN ('launch', 'wait', 'hold', 'skip')),
    why            text        NOT NULL DEFAULT '',
    depends        text        NOT NULL
        CHECK (depends IN ('final', 'backoff', 'switch_global', 'switch_group', 'switch_tag', 'child')),
    not_before     timestamptz,
    decided_by     text        NOT NULL,
    decided_at     timestamptz NOT NULL DEFAULT now(),
    decisions      integer     NOT NULL DEFAULT 1
);
-- The per-tick "what is due again" query reads only the open rows.
CREATE INDEX recovery_decisions_open ON orbit.recovery_decisions (depends, not_before)
    WHERE depends IN ('backoff', 'switch_global', 'switch_group');
CREATE INDEX recovery_decisions_by_group ON orbit.recovery_decisions (root_run_id);
