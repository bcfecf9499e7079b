-- The file a message carries, as JSON (`scalify_core::Attachment`: id, name, size, type and an
-- image's dimensions). The bytes live in the file store, not here. A deletion sets it to NULL
-- with the text: apply_change as in 0010, plus that.
ALTER TABLE messages ADD COLUMN attachment TEXT;

-- Applies one change (the row of room `r` at `seq`) to the message it names. Idempotent: a
-- change applied twice leaves what once does, and a message's changes replayed in seq order
-- give its state whatever happened before (see replay_message_changes).
CREATE OR REPLACE FUNCTION apply_change(r TEXT, seq_ BIGINT, kind_ TEXT, target BIGINT, sender TEXT,
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
        UPDATE messages SET text = '', attachment = NULL, deleted_at = ts_
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
