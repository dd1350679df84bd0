//! Ids of the ledger's rows as types of their own where two of them travel together and could be
//! swapped unseen: a run's directory is `<data>/runs/<job>/<run>/`, a sharing check takes a job and
//! a user, a cancel records a run and who cancelled it. Passing a `RunId` where a `JobId` belongs
//! is a compile error. (Row structs keep their `i64` fields: they come from one place, the store.)

use std::fmt;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// The id of a job (`jobs.id`).
    JobId
);
id_type!(
    /// The id of a run (`runs.id`).
    RunId
);
id_type!(
    /// The id of a user (`users.id`).
    UserId
);

/// A run and the job it belongs to: what a run's files are found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOfJob {
    pub job: JobId,
    pub run: RunId,
}

impl RunOfJob {
    pub fn new(job: JobId, run: RunId) -> Self {
        RunOfJob { job, run }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_their_number() {
        assert_eq!(JobId(7).to_string(), "7");
        assert_eq!(format!("{}/{}", JobId(1), RunId(2)), "1/2");
    }
}
