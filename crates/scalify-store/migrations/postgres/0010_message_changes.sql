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
-- Clients name the message a change or a reply refers to by id.
CREATE INDEX messages_by_id ON messages (room_id, id);
-- A deletion finds the message's edits to erase them.
CREATE INDEX messages_edits ON messages (room_id, ref_seq) WHERE kind = 'edit';

-- Who reacted with what: one row per (message, emoji, member).
CREATE TABLE reactions (
    room_id TEXT NOT NULL,
    seq     BIGINT NOT NULL,
    emoji   TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, seq, emoji, user_id)
);

CREATE FUNCTION apply_message_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.kind = 'edit' THEN
        UPDATE messages SET text = NEW.text, edited_at = NEW.ts
        WHERE room_id = NEW.room_id AND seq = NEW.ref_seq AND kind IS NULL
          AND deleted_at IS NULL AND sender_id = NEW.sender_id;
        IF NOT FOUND THEN
            -- An edit of a message deleted before it keeps no text either.
            UPDATE messages SET text = '' WHERE room_id = NEW.room_id AND seq = NEW.seq;
        END IF;
    ELSIF NEW.kind = 'delete' THEN
        UPDATE messages SET text = '', deleted_at = NEW.ts
        WHERE room_id = NEW.room_id AND seq = NEW.ref_seq AND kind IS NULL
          AND deleted_at IS NULL;
        UPDATE messages SET text = ''
        WHERE room_id = NEW.room_id AND ref_seq = NEW.ref_seq AND kind = 'edit';
        DELETE FROM reactions WHERE room_id = NEW.room_id AND seq = NEW.ref_seq;
    ELSIF NEW.kind = 'reaction' THEN
        INSERT INTO reactions (room_id, seq, emoji, user_id)
        SELECT NEW.room_id, NEW.ref_seq, NEW.text, NEW.sender_id
        WHERE EXISTS (SELECT 1 FROM messages WHERE room_id = NEW.room_id
                        AND seq = NEW.ref_seq AND kind IS NULL AND deleted_at IS NULL)
        ON CONFLICT DO NOTHING;
    ELSIF NEW.kind = 'unreaction' THEN
        DELETE FROM reactions WHERE room_id = NEW.room_id AND seq = NEW.ref_seq
          AND emoji = NEW.text AND user_id = NEW.sender_id;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_changes AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.kind IS NOT NULL) EXECUTE FUNCTION apply_message_change();
