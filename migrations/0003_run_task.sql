-- labcron ledger, schema version 3: the built-in task a run executed (INTERNAL runs; NULL for the
-- others). Who may download a result follows what produced it, not what the job does today: a
-- database-backup result stays admin-only after its job is pointed at another task.
ALTER TABLE runs ADD COLUMN task TEXT;
-- Runs recorded before this column: a backup file by its name, or a run of a job that is a backup
-- job now, counts as a backup; other INTERNAL runs take their job's present task.
UPDATE runs SET task = 'database-backup'
 WHERE result_file LIKE 'labcron-backup\_%.db' ESCAPE '\'
    OR job_id IN (SELECT id FROM jobs WHERE type = 'INTERNAL' AND task_impl_fqn = 'database-backup');
UPDATE runs SET task = (SELECT j.task_impl_fqn FROM jobs j WHERE j.id = runs.job_id AND j.type = 'INTERNAL')
 WHERE task IS NULL;
