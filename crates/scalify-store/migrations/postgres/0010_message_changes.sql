-- Edits, deletions, reactions and replies. Each is an entry of the room's log like a message
-- (so ordered, idempotent and recovered the same way): `kind` says which ('edit', 'delete',
-- 'reaction', 'unreaction'; NULL for a message), `ref_seq` the seq of the message it changes
-- (or, for a message, the one it replies to). The trigger below applies each change to the
-- message it names in the same transaction, whichever way the row is written (a node's
-- batch, the persister's COPY, a resend), so the message row always holds its current state:
-- `text` the current text, `edited_at`, `deleted_at`. A deletion erases the text of the
-- message and of its edits: it is not kept anywhere in the table.
ALTER TABLE messages ADD COLUMN kind TEXT
    CHECK (kind IN ('edit', 'delete', 'reaction', 'unreaction'));
ALTER TABLE messages ADD COLUMN ref_seq BIGINT;
ALTER TABLE messages ADD COLUMN edited_at BIGINT;
ALTER TABLE messages ADD COLUMN deleted_at BIGINT;
-- Clients name the message a change or a reply refers to by id. On the id alone: ids grow
-- with time, so every insert lands at the index's right edge (indexed by room and id, the
-- inserts spread over every active room, and cost a fifth of SQLite's append throughput).
-- Compared byte by byte (COLLATE "C": an id is ASCII), not by the database's locale.
CREATE INDEX messages_by_id ON messages (id COLLATE "C");

-- Who reacted with what: one row per (message, emoji, member).
CREATE TABLE reactions (
    room_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    emoji   TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, seq, emoji, user_id)
);

-- Applies one change (the row of room `r` at `seq`) to the message it names. Idempotent: a
-- change applied twice leaves what once does, and a message's changes replayed in seq order
-- give its state whatever happened before (see replay_message_changes).
CREATE FUNCTION apply_change(r TEXT, seq_ BIGINT, kind_ TEXT, target BIGINT, sender TEXT,
                             text_ TEXT, ts_ BIGINT) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF kind_ = 'edit' THEN
        UPDATE messages SET text = text_, edited_at = ts_
        WHERE room_id = r AND seq = target AND kind IS NULL
          AND deleted_at IS NULL AND sender_id = sender;
        -- An edit of a message deleted before it keeps no text either.
        UPDATE messages SET text = '' WHERE room_id = r AND seq = seq_ AND text <> ''
          AND EXISTS (SELECT 1 FROM messages WHERE room_id = r AND seq = target
                        AND deleted_at IS NOT NULL);
    ELSIF kind_ = 'delete' THEN
        UPDATE messages SET text = '', deleted_at = ts_
        WHERE room_id = r AND seq = target AND kind IS NULL AND deleted_at IS NULL;
        UPDATE messages SET text = ''
        WHERE room_id = r AND ref_seq = target AND kind = 'edit' AND text <> ''
          AND EXISTS (SELECT 1 FROM messages WHERE room_id = r AND seq = target
                        AND deleted_at IS NOT NULL);
        DELETE FROM reactions WHERE room_id = r AND seq = target
          AND EXISTS (SELECT 1 FROM messages WHERE room_id = r AND seq = target
                        AND deleted_at IS NOT NULL);
    ELSIF kind_ = 'reaction' THEN
        INSERT INTO reactions (room_id, seq, emoji, user_id)
        SELECT r, target, text_, sender
        WHERE EXISTS (SELECT 1 FROM messages WHERE room_id = r AND seq = target
                        AND kind IS NULL AND deleted_at IS NULL)
        ON CONFLICT DO NOTHING;
    ELSIF kind_ = 'unreaction' THEN
        DELETE FROM reactions WHERE room_id = r AND seq = target
          AND emoji = text_ AND user_id = sender;
    END IF;
END
$$;

CREATE FUNCTION apply_message_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM apply_change(NEW.room_id, NEW.seq, NEW.kind, NEW.ref_seq, NEW.sender_id, NEW.text,
                         NEW.ts);
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_changes AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.kind IS NOT NULL) EXECUTE FUNCTION apply_message_change();

-- The persisters write a room's records in the order they reach the topic, which is not
-- always seq order: a change can be written before the message it changes. When that message
-- comes, its changes are replayed over it, in seq order (`replay_message_changes`), which
-- gives the state a write in seq order would have. Changes are found by this index (which
-- also finds a deleted message's edits).
CREATE INDEX messages_changes ON messages (room_id, ref_seq) WHERE kind IS NOT NULL;
CREATE FUNCTION replay_message_changes(r TEXT, target BIGINT) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE c RECORD;
BEGIN
    FOR c IN SELECT seq, kind, sender_id, text, ts FROM messages
             WHERE room_id = r AND ref_seq = target AND kind IS NOT NULL ORDER BY seq
    LOOP
        PERFORM apply_change(r, c.seq, c.kind, target, c.sender_id, c.text, c.ts);
    END LOOP;
END
$$;
