//! Run files kept in the ledger's database (PostgreSQL, where several nodes must serve any run's
//! files without a shared file system): [`DbFiles`] writes a run's log and result file as pieces
//! of at most [`PIECE_BYTES`] (`run_files(run_id, kind, start_at, data)`), reads the pieces that
//! overlap a byte range, and deletes them by kind, in batches. Nothing here holds a whole file:
//! callers write and read a few pieces at a time. Blocking throughout (call from a blocking
//! thread). The layout is the `migrate-ledger` copy's too: LOG is `run.log` as served, RESULT the
//! file named by `runs.result_file`; a result of 0 bytes has no piece (its run says 0 bytes).

use super::Error;
use super::postgres::PgLedgerDb;
// The types are defined beside their SQL and named here, as the ledger's are.
pub use super::postgres::files::{FileKind, FilesOfRun, PIECE_BYTES, Piece};
use crate::domain::ids::RunId;

/// Pieces deleted per transaction.
const DELETE_BATCH: i64 = 1000;

/// The run files of a ledger that keeps them (a PostgreSQL one). Cheap to clone.
#[derive(Clone, Debug)]
pub struct DbFiles {
    pg: PgLedgerDb,
}

impl DbFiles {
    pub fn new(pg: PgLedgerDb) -> DbFiles {
        DbFiles { pg }
    }

    /// Stores `pieces` (offset, bytes; each at most `PIECE_BYTES`) of a run's file in one
    /// transaction; for a log, also notes on the run (while it executes) how long it is now.
    /// Writing a piece again at the same offset replaces it, so a write may be retried.
    pub fn put(&self, run_id: i64, kind: FileKind, pieces: &[(u64, &[u8])]) -> Result<(), Error> {
        if pieces.is_empty() {
            return Ok(());
        }
        self.pg.write(|pg| {
            let mut end = 0;
            for (start_at, data) in pieces {
                debug_assert!(data.len() <= PIECE_BYTES);
                pg.put_run_file_piece(run_id, kind, *start_at, data)?;
                end = end.max(start_at + data.len() as u64);
            }
            if kind == FileKind::Log {
                pg.note_log_size(run_id, end)?;
            }
            Ok(())
        })
    }

    /// The pieces holding bytes of `[from, to)`, in order; fewer when there are very many (ask
    /// again from the last one's end). The first may start before `from` and the last end past
    /// `to`: the caller cuts them.
    pub fn pieces(
        &self,
        run_id: i64,
        kind: FileKind,
        from: u64,
        to: u64,
    ) -> Result<Vec<Piece>, Error> {
        self.pg
            .read(|pg| pg.run_file_pieces(run_id, kind, from, to))
    }

    /// Where a run's file ends, or `None` when no piece of it is stored.
    pub fn end(&self, run_id: i64, kind: FileKind) -> Result<Option<u64>, Error> {
        self.pg.read(|pg| pg.run_file_end(run_id, kind))
    }

    /// Deletes every piece of this kind of the runs `run_ids`, `DELETE_BATCH` per transaction;
    /// how many pieces went.
    pub fn delete(&self, run_ids: &[i64], kind: FileKind) -> Result<u64, Error> {
        let mut deleted = 0;
        loop {
            let batch = self
                .pg
                .write(|pg| pg.delete_run_file_pieces(run_ids, kind, DELETE_BATCH))?;
            deleted += batch;
            if (batch as i64) < DELETE_BATCH {
                return Ok(deleted);
            }
        }
    }

    /// Of the next `limit` runs above `after` that hold files, those that finished before
    /// `cutoff`; and the last run looked at (`None`: no more runs hold files).
    pub fn finished_before(
        &self,
        cutoff: i64,
        after: RunId,
        limit: i64,
    ) -> Result<(Vec<FilesOfRun>, Option<RunId>), Error> {
        self.pg
            .read(|pg| pg.runs_with_files_finished_before(cutoff, after, limit))
    }

    /// How many files and bytes each of `run_ids` holds (runs holding none are left out).
    pub fn totals(&self, run_ids: &[i64]) -> Result<Vec<(i64, u64, u64)>, Error> {
        self.pg.read(|pg| pg.run_file_totals(run_ids))
    }
}
