-- labcron ledger: a job's stable key (ext), written to jobs files (`labcron jobs export`) so an
-- import finds the job again after a rename. NULL until the first export gives it one.
ALTER TABLE jobs ADD COLUMN key TEXT;
CREATE UNIQUE INDEX jobs_key ON jobs (key) WHERE key IS NOT NULL;
