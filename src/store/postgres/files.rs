//! Run files on PostgreSQL: a run's log and result file as pieces of `run_files` (at most
//! `PIECE_BYTES` each, `start_at` the offset of a piece's first byte; the layout's rule is
//! `store::files`'), written, read by range and deleted by kind. The SQL of
//! `store::files::DbFiles`, one statement per method, each inside the transaction
//! `PgLedgerDb::read` or `write` opened.

use super::Pg;
use crate::domain::ids::{JobId, RunId, RunOfJob};
use crate::store::Error;

/// Most bytes in one piece.
pub const PIECE_BYTES: usize = 256 * 1024;

/// Which of a run's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Log,
    Result,
}

impl FileKind {
    pub const ALL: [FileKind; 2] = [FileKind::Log, FileKind::Result];

    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Log => "LOG",
            FileKind::Result => "RESULT",
        }
    }
}

/// A piece of a file: its bytes from `start_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub start_at: u64,
    pub data: Vec<u8>,
}

impl Piece {
    /// The offset just past the piece's last byte.
    pub fn end(&self) -> u64 {
        self.start_at + self.data.len() as u64
    }
}

/// A finished run that holds files, as the files cleaner and retention see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesOfRun {
    pub ids: RunOfJob,
    pub finished_at: i64,
    /// How many of its files are stored (log, result).
    pub files: u64,
    pub bytes: u64,
}

/// Most pieces one read returns (a reader asks again from where it stopped): the open slot of a
/// growing log holds a small piece per second until it is written whole, so a window of bytes
/// could otherwise be thousands of rows.
const MOST_PIECES: i64 = 1024;

impl Pg<'_> {
    /// Stores a piece (replacing one at the same offset: a retried write after a commit whose
    /// answer was lost writes the same bytes again).
    pub(in crate::store) fn put_run_file_piece(
        &self,
        run_id: i64,
        kind: FileKind,
        start_at: u64,
        data: &[u8],
    ) -> Result<(), Error> {
        self.exec(
            "INSERT INTO run_files (run_id, kind, start_at, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id, kind, start_at) DO UPDATE SET data = EXCLUDED.data",
            &[&run_id, &kind.as_str(), &(start_at as i64), &data],
        )?;
        Ok(())
    }

    /// Deletes the pieces that start inside `(after, before)` off a slot's start (not a multiple
    /// of `PIECE_BYTES`): the small pieces of slots just written whole.
    pub(in crate::store) fn delete_pieces_inside_slots(
        &self,
        run_id: i64,
        kind: FileKind,
        after: u64,
        before: u64,
    ) -> Result<u64, Error> {
        self.exec(
            "DELETE FROM run_files
             WHERE run_id = $1 AND kind = $2 AND start_at > $3 AND start_at < $4
               AND start_at % $5 <> 0",
            &[
                &run_id,
                &kind.as_str(),
                &(after as i64),
                &(before.min(i64::MAX as u64) as i64),
                &(PIECE_BYTES as i64),
            ],
        )
    }

    /// Notes on an executing run how long its log is so far (the run JSON's `logSize` while it
    /// runs; its end writes the final size). Never shrinks it.
    pub(in crate::store) fn note_log_size(&self, run_id: i64, size: u64) -> Result<(), Error> {
        self.exec(
            "UPDATE runs SET log_size = $2
             WHERE id = $1 AND status = 'IN_PROGRESS' AND log_size < $2",
            &[&run_id, &(size as i64)],
        )?;
        Ok(())
    }

    /// The pieces that hold bytes of `[from, to)`, in order (at most `MOST_PIECES`): the piece
    /// that holds `from` (the last one starting at or before it, found backwards on the primary
    /// key) and every later one starting before `to`.
    pub(in crate::store) fn run_file_pieces(
        &self,
        run_id: i64,
        kind: FileKind,
        from: u64,
        to: u64,
    ) -> Result<Vec<Piece>, Error> {
        let rows = self.rows(
            "SELECT start_at, data FROM run_files
             WHERE run_id = $1 AND kind = $2 AND start_at < $4
               AND start_at >= COALESCE((SELECT max(start_at) FROM run_files
                                         WHERE run_id = $1 AND kind = $2 AND start_at <= $3), 0)
             ORDER BY start_at LIMIT $5",
            &[
                &run_id,
                &kind.as_str(),
                &(from as i64),
                &(to.min(i64::MAX as u64) as i64),
                &MOST_PIECES,
            ],
        )?;
        let mut pieces = rows
            .iter()
            .map(|r| {
                let start_at: i64 = r.try_get(0)?;
                Ok(Piece {
                    start_at: start_at as u64,
                    data: r.try_get(1)?,
                })
            })
            .collect::<Result<Vec<Piece>, Error>>()?;
        // The piece found backwards may end before `from` (a gap, or `from` past the end).
        pieces.retain(|p| p.end() > from);
        Ok(pieces)
    }

    /// Where the file ends (its last piece's end), or `None` when it has no piece. The length
    /// comes from the piece's header, without reading its bytes.
    pub(in crate::store) fn run_file_end(
        &self,
        run_id: i64,
        kind: FileKind,
    ) -> Result<Option<u64>, Error> {
        let row = self.row(
            "SELECT start_at + length(data) FROM run_files WHERE run_id = $1 AND kind = $2
             ORDER BY start_at DESC LIMIT 1",
            &[&run_id, &kind.as_str()],
        )?;
        Ok(row
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map(|end| end as u64))
    }

    /// Deletes up to `limit` pieces of this kind of the runs `run_ids`; how many went.
    pub(in crate::store) fn delete_run_file_pieces(
        &self,
        run_ids: &[i64],
        kind: FileKind,
        limit: i64,
    ) -> Result<u64, Error> {
        self.exec(
            "DELETE FROM run_files WHERE (run_id, kind, start_at) IN
               (SELECT run_id, kind, start_at FROM run_files
                WHERE run_id = ANY($1) AND kind = $2 LIMIT $3)",
            &[&run_ids, &kind.as_str(), &limit],
        )
    }

    /// Of the next `limit` runs above `after` that have pieces, those that finished before
    /// `cutoff`, with how many files (kinds) and bytes they hold; and the last run looked at
    /// (where the next page starts), `None` when there were none.
    pub(in crate::store) fn runs_with_files_finished_before(
        &self,
        cutoff: i64,
        after: RunId,
        limit: i64,
    ) -> Result<(Vec<FilesOfRun>, Option<RunId>), Error> {
        let last = self
            .one(
                "SELECT max(run_id) FROM (SELECT DISTINCT run_id FROM run_files
                                          WHERE run_id > $1 ORDER BY run_id LIMIT $2) page",
                &[&after.0, &limit],
            )?
            .try_get::<_, Option<i64>>(0)?;
        let Some(last) = last else {
            return Ok((Vec::new(), None));
        };
        let rows = self.rows(
            "SELECT r.job_id, r.id, r.finished_at, count(DISTINCT f.kind),
                    COALESCE(sum(length(f.data)), 0)::BIGINT
             FROM runs r JOIN run_files f ON f.run_id = r.id
             WHERE r.id > $2 AND r.id <= $3 AND r.status IN ('SUCCEEDED', 'FAILED')
               AND r.finished_at < $1
             GROUP BY r.job_id, r.id, r.finished_at ORDER BY r.id",
            &[&cutoff, &after.0, &last],
        )?;
        let found = rows
            .iter()
            .map(|r| {
                Ok(FilesOfRun {
                    ids: RunOfJob::new(JobId(r.try_get(0)?), RunId(r.try_get(1)?)),
                    finished_at: r.try_get(2)?,
                    files: r.try_get::<_, i64>(3)? as u64,
                    bytes: r.try_get::<_, i64>(4)? as u64,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok((found, Some(RunId(last))))
    }

    /// How many files (kinds) and bytes each of `run_ids` holds, for those that hold any.
    pub(in crate::store) fn run_file_totals(
        &self,
        run_ids: &[i64],
    ) -> Result<Vec<(i64, u64, u64)>, Error> {
        self.rows(
            "SELECT run_id, count(DISTINCT kind), COALESCE(sum(length(data)), 0)::BIGINT
             FROM run_files WHERE run_id = ANY($1) GROUP BY run_id",
            &[&run_ids],
        )?
        .iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                r.try_get::<_, i64>(1)? as u64,
                r.try_get::<_, i64>(2)? as u64,
            ))
        })
        .collect()
    }
}
