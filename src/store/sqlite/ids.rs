//! The typed ids bound as SQL parameters: each is its number in the ledger.

use rusqlite::ToSql;
use rusqlite::types::ToSqlOutput;

use crate::domain::ids::{JobId, RunId, UserId};

macro_rules! bound_as_integer {
    ($($name:ident),+) => {
        $(impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.0))
            }
        })+
    };
}

bound_as_integer!(JobId, RunId, UserId);
