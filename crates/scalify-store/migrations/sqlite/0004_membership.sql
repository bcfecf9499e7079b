-- A room's owner (its creator), who may remove its members. Rooms from before have none ('');
-- a new room's creator claims it right after creating it.
ALTER TABLE rooms ADD COLUMN owner_id TEXT;
UPDATE rooms SET owner_id = '';
-- `user_id` blocked `blocked_id`: a blocked user cannot open a DM with, nor add to a room, the
-- user who blocked them.
CREATE TABLE blocks (
    user_id    TEXT NOT NULL REFERENCES users(id),
    blocked_id TEXT NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, blocked_id)
) WITHOUT ROWID;
