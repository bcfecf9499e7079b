-- ScalifyChat schema, PostgreSQL engine. Ids are ULID strings; times are ms since the epoch.
-- Applied by sqlx's migrator (table _sqlx_migrations) on start and by `scalify migrate`.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

CREATE TABLE rooms (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL CHECK (kind IN ('public', 'private', 'dm')),
    -- The room's newest seq. Writers lock this row to allocate seqs: the lock is what keeps
    -- seq gap-free and strictly increasing when several nodes write to one room.
    last_seq   BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE members (
    room_id   TEXT NOT NULL REFERENCES rooms(id),
    user_id   TEXT NOT NULL REFERENCES users(id),
    joined_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX members_by_user ON members(user_id);

-- Keyed by (room, seq): history and sync are range scans of one room.
CREATE TABLE messages (
    room_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    id          TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    sender_name TEXT NOT NULL,
    client_id   TEXT NOT NULL,
    text        TEXT NOT NULL,
    ts          BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);
-- The idempotency rule: one message per (sender, room, client_id), whichever node took it.
CREATE UNIQUE INDEX messages_idempotency ON messages(room_id, sender_id, client_id);
