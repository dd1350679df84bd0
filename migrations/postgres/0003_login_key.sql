-- The login key, the one normal form of a login name (trimmed, Unicode NFKC, full case folding:
-- `domain::user::login_key`), as SQLite's migration 8. It replaces `lower(login_name)` as what
-- makes a name unique: `lower()` follows the database's locale (ASCII only under C). Filled for
-- existing users by the migration's Rust step (`store::postgres::people::fill_login_keys`) in the
-- same transaction; when two existing names share a key the older account keeps it and the newer
-- one stays NULL (no sign-in until an admin renames it), so the migration never fails on them.
ALTER TABLE users ADD COLUMN login_key TEXT;
DROP INDEX users_login_name;
CREATE UNIQUE INDEX users_login_key ON users (login_key);
