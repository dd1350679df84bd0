-- labcron ledger, schema version 1.
-- Times are INTEGER epoch milliseconds (UTC). Applied once, in one transaction, by store::migrate.

CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    login_name      TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    first_name      TEXT    NOT NULL DEFAULT '',
    last_name       TEXT    NOT NULL DEFAULT '',
    email_address   TEXT    NOT NULL DEFAULT '',
    admin           INTEGER NOT NULL DEFAULT 0,
    -- NULL: the user cannot sign in (the built-in system user).
    password_hash   TEXT,
    is_system       INTEGER NOT NULL DEFAULT 0,
    activity_status TEXT    NOT NULL DEFAULT 'Active' CHECK (activity_status IN ('Active', 'Disabled')),
    created_at      INTEGER NOT NULL
);

-- The user that runs scheduled jobs without a runAs user. It has no password.
INSERT INTO users (login_name, first_name, last_name, admin, is_system, created_at)
VALUES ('$system', 'System', 'User', 1, 1, 0);

CREATE TABLE sessions (
    -- SHA-256 of the token, hex. The token itself is never stored.
    token_hash   TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE saved_queries (
    id               INTEGER PRIMARY KEY,
    title            TEXT    NOT NULL,
    sql              TEXT    NOT NULL,
    data_source      TEXT    NOT NULL,
    created_by       INTEGER NOT NULL REFERENCES users (id),
    last_modified_on INTEGER NOT NULL,
    deleted          INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id                     INTEGER PRIMARY KEY,
    name                   TEXT    NOT NULL,
    type                   TEXT    NOT NULL CHECK (type IN ('INTERNAL', 'EXTERNAL', 'QUERY')),
    repeat_schedule        TEXT    NOT NULL,
    scheduled_minute       INTEGER,
    scheduled_hour         INTEGER,
    scheduled_day_of_week  TEXT,
    scheduled_day_of_month INTEGER,
    minutely_interval      INTEGER,
    hourly_interval        INTEGER,
    cron_expression        TEXT,
    timezone               TEXT    NOT NULL,
    start_date             INTEGER NOT NULL,
    end_date               INTEGER,
    activity_status        TEXT    NOT NULL CHECK (activity_status IN ('Active', 'Closed', 'Disabled')),
    created_by             INTEGER NOT NULL REFERENCES users (id),
    run_as                 INTEGER REFERENCES users (id),
    task_impl_fqn          TEXT,
    command                TEXT,
    fixed_args             TEXT,
    rt_args_provided       INTEGER NOT NULL DEFAULT 0,
    rt_args_help_text      TEXT,
    saved_query_id         INTEGER REFERENCES saved_queries (id),
    timeout_seconds        INTEGER NOT NULL,
    misfire_policy         TEXT    NOT NULL DEFAULT 'SKIP',
    max_queued_runs        INTEGER NOT NULL,
    result_from_stdout     INTEGER NOT NULL DEFAULT 0,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    -- The scheduled instant the scheduler last fired (survives restarts, drives misfire handling).
    last_fired_for         INTEGER
);
-- Names are unique among jobs that are not deleted.
CREATE UNIQUE INDEX jobs_live_name ON jobs (name) WHERE activity_status <> 'Disabled';

CREATE TABLE job_recipients (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    user_id INTEGER NOT NULL REFERENCES users (id),
    PRIMARY KEY (job_id, user_id)
) WITHOUT ROWID;

CREATE TABLE job_shared_users (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    user_id INTEGER NOT NULL REFERENCES users (id),
    PRIMARY KEY (job_id, user_id)
) WITHOUT ROWID;
CREATE INDEX job_shared_users_user ON job_shared_users (user_id);

CREATE TABLE runs (
    id               INTEGER PRIMARY KEY,
    job_id           INTEGER NOT NULL REFERENCES jobs (id),
    status           TEXT    NOT NULL CHECK (status IN ('QUEUED', 'IN_PROGRESS', 'SUCCEEDED', 'FAILED')),
    run_trigger      TEXT    NOT NULL CHECK (run_trigger IN ('MANUAL', 'SCHEDULED', 'CATCH_UP')),
    run_by           INTEGER NOT NULL REFERENCES users (id),
    rt_args          TEXT,
    queued_at        INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    -- The schedule instant a SCHEDULED/CATCH_UP run was fired for; NULL for manual runs.
    scheduled_for    INTEGER,
    exit_code        INTEGER,
    message          TEXT,
    -- Result file path relative to the run directory (runs/<job>/<run>/).
    result_file      TEXT,
    result_file_size INTEGER,
    log_size         INTEGER NOT NULL DEFAULT 0,
    log_truncated    INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT
);
-- Firing is idempotent per (job, scheduled instant).
CREATE UNIQUE INDEX runs_job_scheduled_for ON runs (job_id, scheduled_for) WHERE scheduled_for IS NOT NULL;
CREATE INDEX runs_job ON runs (job_id, id);
CREATE INDEX runs_job_queued_at ON runs (job_id, queued_at);
CREATE INDEX runs_idempotency ON runs (job_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- The dispatcher's and recovery's working set: small, whatever the ledger's size.
CREATE INDEX runs_active ON runs (status, job_id, id) WHERE status IN ('QUEUED', 'IN_PROGRESS');
