//! Removing events on a person's request.

use crate::error::Result;
use crate::spool::{tally, Limits, Spool};
use crate::wire::Millis;

/// Which events `purge` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeSelector {
    /// Events whose event time is before this.
    OlderThan(Millis),
    Rejected,
    All,
}

impl Spool {
    /// Counts what `selector` would remove, without removing it.
    pub fn count_matching(&mut self, selector: PurgeSelector) -> Result<u64> {
        let (sql, arg) = where_clause(selector);
        self.fold_inbox()?;
        self.read(|tx| {
            let n: i64 = tx.query_row(
                &format!("SELECT count(*) FROM events WHERE {sql}"),
                [arg],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
    }

    /// Removes what `selector` matches; returns how many events went. These are not
    /// counted as dropped: a person chose to remove them.
    pub fn purge(&mut self, selector: PurgeSelector, limits: &Limits) -> Result<u64> {
        let (sql, arg) = where_clause(selector);
        self.write(Some(limits), |tx| {
            let n =
                tally::delete_events(tx, &format!("DELETE FROM events WHERE {sql}"), [arg])?.count;
            tx.execute(
                "DELETE FROM streams WHERE id NOT IN (SELECT DISTINCT stream FROM events)",
                [],
            )?;
            Ok(n)
        })
    }
}

fn where_clause(selector: PurgeSelector) -> (&'static str, i64) {
    match selector {
        PurgeSelector::OlderThan(cutoff) => ("ts < ?1", cutoff),
        PurgeSelector::Rejected => ("rejected = 1 AND ?1 = ?1", 0),
        PurgeSelector::All => ("?1 = ?1", 0),
    }
}
