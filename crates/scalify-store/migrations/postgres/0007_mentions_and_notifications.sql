-- Who a message mentions: NULL for nobody, else the mentioned user ids separated by spaces,
-- after '@room ' when it mentions every member. Read back with the message.
ALTER TABLE messages ADD COLUMN mentions TEXT;
-- The same, one row per mentioned user, or one row with user_id '@room' for a message that
-- mentions the whole room (it covers everyone: no message counts twice), keyed for the
-- mention count: a member's mentions in a room after their marker are two ranges of this key.
CREATE TABLE mentions (
    user_id   TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    seq       BIGINT NOT NULL,
    sender_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, seq)
);
-- Kept by a trigger, so every way a message row is written (a node's batch, the persister's
-- COPY, a resend) writes its mentions in the same transaction, and only for rows written.
CREATE FUNCTION record_mentions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mentions (user_id, room_id, seq, sender_id)
    SELECT u, NEW.room_id, NEW.seq, NEW.sender_id
    FROM unnest(string_to_array(NEW.mentions, ' ')) AS u
    WHERE u <> '' AND (u = '@room' OR NEW.mentions NOT LIKE '@room%')
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER messages_mentions AFTER INSERT ON messages
    FOR EACH ROW WHEN (NEW.mentions IS NOT NULL) EXECUTE FUNCTION record_mentions();
-- What of a room notifies each member: 'all', 'mentions' or 'none'.
ALTER TABLE members ADD COLUMN notify_level TEXT NOT NULL DEFAULT 'all'
    CHECK (notify_level IN ('all', 'mentions', 'none'));
-- Each user's settings: read receipts shown and seen, previews in notifications.
ALTER TABLE users ADD COLUMN read_receipts BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE users ADD COLUMN previews BOOLEAN NOT NULL DEFAULT TRUE;
