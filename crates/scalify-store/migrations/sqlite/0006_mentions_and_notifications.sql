-- Who a message mentions: NULL for nobody, else the mentioned user ids separated by spaces,
-- after '@room ' when it mentions every member. Read back with the message.
ALTER TABLE messages ADD COLUMN mentions TEXT;
-- The same, one row per mentioned user, or one row with user_id '@room' for a message that
-- mentions the whole room (it covers everyone: no message counts twice), keyed for the
-- mention count: a member's mentions in a room after their marker are two ranges of this key.
-- Written with the message, in its transaction.
CREATE TABLE mentions (
    user_id   TEXT NOT NULL,
    room_id   TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    sender_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, seq)
) WITHOUT ROWID;
-- What of a room notifies each member: 'all', 'mentions' or 'none'.
ALTER TABLE members ADD COLUMN notify_level TEXT NOT NULL DEFAULT 'all'
    CHECK (notify_level IN ('all', 'mentions', 'none'));
-- Each user's settings: read receipts shown and seen, previews in notifications.
ALTER TABLE users ADD COLUMN read_receipts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN previews INTEGER NOT NULL DEFAULT 1;
