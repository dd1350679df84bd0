//! What the executor does for the cluster (several nodes on one PostgreSQL ledger): it stops the
//! runs it executes that someone asked, through any node, to cancel (the owning node polls for
//! the mark, `act_on_cancels`); it fails the IN_PROGRESS runs of a node declared lost, through the
//! same follow-ups a run's end has (retries, chains, notifications); and when this node learns it
//! was itself declared lost, it kills every run it still executes without writing their outcome
//! (`abandon_runs`: the node that declared it lost has decided them already).

use std::time::Duration;

use super::{Executor, followup};
use crate::clock::now_ms;
use crate::error::ServiceError;
use crate::store::Ledger;

impl Executor {
    /// Stops the runs executing here that the ledger says were asked to cancel (on `node`, which
    /// is this one): a cancel asked through another node reaches the process group here.
    pub async fn act_on_cancels(&self, node: &str) -> Result<usize, ServiceError> {
        let node = node.to_string();
        let asked = self
            .inner
            .db
            .read(move |l| l.cancels_asked_on(&node))
            .await?;
        let mut stopped = 0;
        for (run_id, login) in asked {
            if self.signal_running(run_id, &format!("cancelled by {login}")) {
                stopped += 1;
            }
        }
        Ok(stopped)
    }

    /// Fails the IN_PROGRESS runs of `node`, declared lost, with "node <name> lost", and applies
    /// what follows a run's end to each in the same transaction; then notifies as a run's end
    /// does. Returns how many runs failed.
    pub async fn fail_runs_of_lost_node(&self, node: &str) -> Result<usize, ServiceError> {
        let node = node.to_string();
        let failed = self
            .inner
            .db
            .write(move |tx| fail_on(tx, &node, &format!("node {node} lost")))
            .await?;
        self.after_remote_ends(&failed);
        Ok(failed.len())
    }

    /// Notifications and wake-ups after runs ended elsewhere than in `execute`.
    fn after_remote_ends(&self, ended: &[(i64, followup::FollowUp)]) {
        for (run_id, follow_up) in ended {
            if follow_up.notify && self.inner.notifier.would_send(follow_up.webhook) {
                self.inner.notifier.run_finished(*run_id);
            }
        }
        if !ended.is_empty() {
            self.inner.finished.notify_waiters();
            // Retries and chained runs may have been queued.
            self.inner.wake.notify_one();
        }
    }

    /// Kills every run this node executes, because it was declared lost: their ends are not
    /// written (the ledger refuses them: see `store::postgres::NodeId`). Waits until they are
    /// gone, or the kill grace and a few seconds have passed.
    pub async fn abandon_runs(&self, reason: &str) {
        let ids = self.running_ids();
        for id in ids {
            self.signal_running(id, reason);
        }
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.inner.settings.runs.kill_grace_seconds + 5);
        while self.running_count() > 0 && tokio::time::Instant::now() < deadline {
            self.wait_for_any_finish(Duration::from_millis(100)).await;
        }
    }
}

/// Fails `node`'s IN_PROGRESS runs with `message` and applies each one's follow-ups.
fn fail_on(
    tx: &dyn Ledger,
    node: &str,
    message: &str,
) -> Result<Vec<(i64, followup::FollowUp)>, ServiceError> {
    let now = now_ms();
    let failed = tx.fail_runs_in_progress_on(node, message, now)?;
    let mut ended = Vec::with_capacity(failed.len());
    for ids in failed {
        ended.push((ids.run.0, followup::after_end(tx, ids.run.0, now)?));
    }
    Ok(ended)
}
