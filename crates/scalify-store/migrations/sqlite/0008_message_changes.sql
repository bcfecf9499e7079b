-- Edits, deletions, reactions and replies. Each is an entry of the room's log like a message
-- (so ordered, idempotent and recovered the same way): `kind` says which ('edit', 'delete',
-- 'reaction', 'unreaction'; NULL for a message), `ref_seq` the seq of the message it changes
-- (or, for a message, the one it replies to). The writer applies each change to the message
-- it names in the same transaction (statements of its own, not triggers: a trigger on the
-- table would make every insert keep a statement journal), so the message row always holds
-- its current state: `text` the current text, `edited_at`, `deleted_at`. A deletion erases
-- the text of the message and of its edits (and `secure_delete` overwrites the freed bytes
-- in the file).
ALTER TABLE messages ADD COLUMN kind TEXT
    CHECK (kind IN ('edit', 'delete', 'reaction', 'unreaction'));
ALTER TABLE messages ADD COLUMN ref_seq INTEGER;
ALTER TABLE messages ADD COLUMN edited_at INTEGER;
ALTER TABLE messages ADD COLUMN deleted_at INTEGER;
-- Clients name the message a change or a reply refers to by id. On the id alone: ids grow
-- with time, so every insert lands at the index's right edge (indexed by room and id, the
-- inserts spread over every active room, and cost a fifth of SQLite's append throughput).
CREATE INDEX messages_by_id ON messages (id);
-- A message's changes (a deletion finds its edits to erase them).
CREATE INDEX messages_changes ON messages (room_id, ref_seq) WHERE kind IS NOT NULL;

-- Who reacted with what: one row per (message, emoji, member).
CREATE TABLE reactions (
    room_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    emoji   TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, seq, emoji, user_id)
) WITHOUT ROWID;
