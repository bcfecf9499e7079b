-- Sign-in sessions: a token is good while its session exists (sign-out deletes it).
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions(user_id);
-- A deleted account: no password matches it and its name stays taken.
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
