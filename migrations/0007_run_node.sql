-- labcron ledger, schema version 7: the node that executed a run, and at most one run of a job in
-- progress, enforced by the ledger itself (as on PostgreSQL, where several nodes claim runs).

-- The node (`node_name`) that claimed the run; NULL until it starts.
ALTER TABLE runs ADD COLUMN node TEXT;

-- A ledger from before the index could hold two runs of a job IN_PROGRESS only by a fault; the
-- later ones are ended first so the index can be built (a restart fails the rest anyway).
UPDATE runs SET status = 'FAILED',
               finished_at = CAST(unixepoch('subsec') * 1000 AS INTEGER),
               message = 'interrupted: another run of the job was in progress'
 WHERE status = 'IN_PROGRESS'
   AND id NOT IN (SELECT min(id) FROM runs WHERE status = 'IN_PROGRESS' GROUP BY job_id);

CREATE UNIQUE INDEX runs_one_in_progress ON runs (job_id) WHERE status = 'IN_PROGRESS';
