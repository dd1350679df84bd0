//! Run files kept in the ledger's database (PostgreSQL, where several nodes must serve any run's
//! files without a shared file system): [`DbFiles`] writes a run's log and result file as pieces
//! of at most [`PIECE_BYTES`] (`run_files(run_id, kind, start_at, data)`), reads the pieces that
//! overlap a byte range, and deletes them by kind, in batches. Nothing here holds a whole file:
//! callers write and read a few pieces at a time. Blocking throughout (call from a blocking
//! thread). The layout is the `migrate-ledger` copy's too: LOG is `run.log` as served, RESULT the
//! file named by `runs.result_file`; a result of 0 bytes has no piece (its run says 0 bytes).
//!
//! The layout's rule, kept here: a file is cut into slots of `PIECE_BYTES` (`[k·P, (k+1)·P)`),
//! and a kept file has one piece per slot, starting at the slot's start. Only the last slot of a
//! log still being copied up (`run_files::kept`) may hold more: a piece at its start and the
//! small pieces of the seconds after it. Writing a piece at a slot's start replaces the slot's
//! other pieces in the same transaction, so a growing log's slot ends as one piece, and a reader
//! (one statement, one snapshot) sees the small pieces or the whole one, never both nor neither;
//! the bytes at an offset never change, so reads spread over several statements stay exact.
//! Why not grow the slot's piece in place (`data = data || $1`) instead: each such update writes
//! the whole piece again, so a slow printer's hour cost PostgreSQL 40 MB of WAL, against 6 MB
//! this way (README, "Run files in the database").

use super::Error;
use super::postgres::PgLedgerDb;
// The types are defined beside their SQL and named here, as the ledger's are.
pub use super::postgres::files::{FileKind, FilesOfRun, PIECE_BYTES, Piece};
use crate::domain::ids::RunId;

/// A slot's size: a piece's most bytes.
const SLOT: u64 = PIECE_BYTES as u64;

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

    /// Stores `pieces` (offset, bytes; each at most `PIECE_BYTES`, none crossing a slot's end) of
    /// a run's file in one transaction; for a log, also notes on the run (while it executes) how
    /// long it is now. `pieces` are either one piece inside a slot (a growing log's bytes of one
    /// second) or pieces that each start a slot, which replace whatever else that slot holds.
    /// Writing a piece again at the same offset replaces it, so a write may be retried.
    pub fn put(&self, run_id: i64, kind: FileKind, pieces: &[(u64, &[u8])]) -> Result<(), Error> {
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return Ok(());
        };
        debug_assert!(pieces.iter().all(|(start_at, data)| {
            let inside = start_at % SLOT + data.len() as u64 <= SLOT;
            inside && (pieces.len() == 1 || start_at.is_multiple_of(SLOT))
        }));
        self.pg.write(|pg| {
            let mut end = 0;
            for (start_at, data) in pieces {
                pg.put_run_file_piece(run_id, kind, *start_at, data)?;
                end = end.max(start_at + data.len() as u64);
            }
            if first.0.is_multiple_of(SLOT) {
                pg.delete_pieces_inside_slots(run_id, kind, first.0, last.0 + SLOT)?;
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
