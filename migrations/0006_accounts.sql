-- labcron ledger, schema version 6: API tokens, where a user's account lives, and the audit trail.

-- API tokens for services (issue 15). Only the SHA-256 of a token is stored; a revoked token keeps
-- its row (the audit trail names it) but never authenticates again.
CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    name         TEXT    NOT NULL,
    token_hash   TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    last_used_at INTEGER,
    revoked_at   INTEGER,
    revoked_by   INTEGER REFERENCES users (id)
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, id);

-- Where a user signs in: LOCAL (a password in this ledger) or LDAP (the directory; no password here).
ALTER TABLE users ADD COLUMN source TEXT NOT NULL DEFAULT 'LOCAL' CHECK (source IN ('LOCAL', 'LDAP'));

-- The audit trail: who did what, when, from where. `actor` is the login name as it was (for a
-- failed sign-in, the name that was tried); `detail` is a JSON object and never holds a secret.
CREATE TABLE audit_events (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    action      TEXT    NOT NULL,
    object_type TEXT,
    object_id   TEXT,
    detail      TEXT    NOT NULL DEFAULT '{}',
    remote_addr TEXT
);
CREATE INDEX audit_events_at ON audit_events (at, id);
CREATE INDEX audit_events_object ON audit_events (object_type, object_id, id);
CREATE INDEX audit_events_actor ON audit_events (actor, id);
-- Events are never changed: no API does it, and the ledger refuses it too. (Deleting stays
-- possible for the retention pass.)
CREATE TRIGGER audit_events_append_only BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events cannot be changed');
END;
