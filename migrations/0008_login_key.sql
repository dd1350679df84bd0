-- labcron ledger, schema version 8: the login key, the one normal form of a login name (trimmed,
-- Unicode NFKC, full case folding: `domain::user::login_key`). Sign-in, uniqueness and directory
-- accounts compare it, never `login_name` (whose NOCASE folds ASCII only). Filled for existing
-- users by the migration's Rust step (`store::sqlite::users::fill_login_keys`) in the same
-- transaction: when two existing names share a key the older account keeps it and the newer one
-- stays NULL (it cannot sign in until an admin renames it; start-up logs it). NULLs are distinct
-- under a unique index, so such a collision never fails the migration.
ALTER TABLE users ADD COLUMN login_key TEXT;
CREATE UNIQUE INDEX users_login_key ON users (login_key);
