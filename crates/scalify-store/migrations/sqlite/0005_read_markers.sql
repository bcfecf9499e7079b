-- Each member's read marker: the highest seq they marked read in the room. Kept on the
-- membership, so leaving a room forgets it.
ALTER TABLE members ADD COLUMN last_read INTEGER NOT NULL DEFAULT 0;
-- Members at the upgrade start with everything read, not with the whole history unread.
UPDATE members SET last_read = (SELECT last_seq FROM rooms WHERE rooms.id = members.room_id);
