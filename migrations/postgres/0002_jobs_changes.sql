-- The change marker of the jobs table (what SQLite's `PRAGMA data_version` is for one file): a
-- counter bumped, in the same transaction, by every statement that adds, deletes or changes a job
-- the way the scheduler's fingerprint sees (its `updated_at`). A node's scheduler reads it every
-- second and reloads its jobs when it moved, so a job created or changed through another node is
-- armed here within a second or two. A fire's own bookkeeping (`last_fired_for`) does not bump it.
CREATE TABLE ledger_changes (
    name    TEXT   PRIMARY KEY,
    counter BIGINT NOT NULL
);
INSERT INTO ledger_changes (name, counter) VALUES ('jobs', 0);

CREATE FUNCTION labcron_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE ledger_changes SET counter = counter + 1 WHERE name = 'jobs';
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_changed
    AFTER INSERT OR DELETE OR UPDATE OF updated_at OR TRUNCATE ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION labcron_jobs_changed();
