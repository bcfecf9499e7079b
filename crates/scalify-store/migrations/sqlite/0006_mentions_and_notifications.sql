-- Who a message mentions: NULL for nobody, else the mentioned user ids separated by spaces,
-- after '@room ' when it mentions every member.
ALTER TABLE messages ADD COLUMN mentions TEXT;
-- What of a room notifies each member: 'all', 'mentions' or 'none'.
ALTER TABLE members ADD COLUMN notify_level TEXT NOT NULL DEFAULT 'all'
    CHECK (notify_level IN ('all', 'mentions', 'none'));
-- Each user's settings: read receipts shown and seen, previews in notifications.
ALTER TABLE users ADD COLUMN read_receipts INTEGER NOT NULL DEFAULT 1;
ALTER TABLE users ADD COLUMN previews INTEGER NOT NULL DEFAULT 1;
