-- labcron ledger, schema version 5: retries, chains and notification rules of jobs.
-- Jobs: how often a failed run is retried and after how long, and when notifications go out.
ALTER TABLE jobs ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN retry_delay_seconds INTEGER NOT NULL DEFAULT 60;
ALTER TABLE jobs ADD COLUMN notify_on TEXT NOT NULL DEFAULT 'ALWAYS'
    CHECK (notify_on IN ('ALWAYS', 'FAILURE', 'CHANGE', 'NEVER'));

-- Chains: when a run of job_id ends its series with on_result, target_id gets a run.
CREATE TABLE job_chains (
    job_id    INTEGER NOT NULL REFERENCES jobs (id),
    on_result TEXT    NOT NULL CHECK (on_result IN ('SUCCESS', 'FAILURE')),
    target_id INTEGER NOT NULL REFERENCES jobs (id),
    position  INTEGER NOT NULL,
    PRIMARY KEY (job_id, on_result, target_id)
) WITHOUT ROWID;
CREATE INDEX job_chains_target ON job_chains (target_id);

-- Runs: the trigger CHECK gains RETRY and CHAINED, which SQLite can only do by rebuilding the
-- table. New columns:
--   attempt      1 for a series' first run, 2 for its first retry…
--   retry_of     the id of the series' first run (NULL on the first)
--   chained_from the run whose end queued this one (CHAINED runs and their retries)
--   not_before   a QUEUED run is not started before this instant (a retry's delay)
--   cancelled_by the user who cancelled the run
--   series_end   1 once the run ended its series (succeeded, or failed with no retry queued)
CREATE TABLE runs_v3 (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs (id),
    status           TEXT    NOT NULL CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'SUCCEEDED', 'FAILED')),
    run_trigger      TEXT    NOT NULL
        CHECK (run_trigger IN ('MANUAL', 'SCHEDULED', 'CATCH_UP', 'RETRY', 'CHAINED')),
    run_by           INTEGER NOT NULL REFERENCES users (id),
    rt_args          TEXT,
    queued_at        INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    scheduled_for    INTEGER,
    exit_code        INTEGER,
    message          TEXT,
    result_file      TEXT,
    result_file_size INTEGER,
    log_size         INTEGER NOT NULL DEFAULT 0,
    log_truncated    INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    -- From 0003_run_task.sql: the built-in task an INTERNAL run executed.
    task             TEXT,
    attempt          INTEGER NOT NULL DEFAULT 1,
    retry_of         INTEGER,
    chained_from     INTEGER,
    not_before       INTEGER,
    cancelled_by     INTEGER REFERENCES users (id),
    series_end       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO runs_v3 (id, job_id, status, run_trigger, run_by, rt_args, queued_at, started_at, finished_at,
                     scheduled_for, exit_code, message, result_file, result_file_size, log_size, log_truncated,
                     idempotency_key, task, series_end)
SELECT id, job_id, status, run_trigger, run_by, rt_args, queued_at, started_at, finished_at,
       scheduled_for, exit_code, message, result_file, result_file_size, log_size, log_truncated,
       idempotency_key, task, status IN ('SUCCEEDED', 'FAILED')
FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v3 RENAME TO runs;
CREATE UNIQUE INDEX runs_job_scheduled_for ON runs (job_id, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX runs_job ON runs (job_id, id);
CREATE INDEX runs_job_queued_at ON runs (job_id, queued_at);
CREATE INDEX runs_idempotency ON runs (job_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_active ON runs (status, job_id, id) WHERE status IN ('QUEUED', 'IN_PROGRESS');
-- The runs list across jobs filtered by status (FAILED last night) reads newest first.
CREATE INDEX runs_status_id ON runs (status, id);
-- The CHANGE rule looks up a job's previous series end.
CREATE INDEX runs_job_series_end ON runs (job_id, id) WHERE series_end = 1;
