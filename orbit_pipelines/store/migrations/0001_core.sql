-- The orbit schema and the settings every part shares.
CREATE SCHEMA IF NOT EXISTS orbit;

-- Global switches (e.g. the automatic-recovery kill switch), set by the CLI.
CREATE TABLE orbit.settings (
    name        text PRIMARY KEY,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
