//! The next fire instant of a schedule. (Being written for issue 3: until then only ONDEMAND, which
//! never fires, is answered.)

use chrono::{DateTime, Utc};

use crate::domain::job::{Repeat, Schedule};

/// The first fire instant strictly after `after`, or `None` when the schedule never fires again.
pub fn next_fire(schedule: &Schedule, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let _ = after;
    match schedule.repeat {
        Repeat::OnDemand => None,
        _ => None,
    }
}

/// The next `count` fire instants after `after`.
pub fn next_fires(schedule: &Schedule, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    while out.len() < count {
        match next_fire(schedule, cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}
