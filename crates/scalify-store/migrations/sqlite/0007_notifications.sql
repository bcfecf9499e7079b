-- Missed-message notifications. A room with messages its notifier has not looked at yet carries
-- the time (ms) the first of them was stored in `notify_from`; every write that raises
-- `last_seq` sets it if it is unset. The notifier of some node claims a room whose
-- `notify_from` is older than the notification delay (`notify_lease`: until when the claim
-- holds, so a node that dies mid-way gives the room back), looks at the messages after
-- `notify_seq`, queues what is due in `notify_outbox`, and moves `notify_seq` on — in one
-- transaction, so no message is looked at twice and none is skipped.
ALTER TABLE rooms ADD COLUMN notify_from INTEGER;
ALTER TABLE rooms ADD COLUMN notify_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rooms ADD COLUMN notify_lease INTEGER;
-- Existing messages were never announced: the notifier starts after them.
UPDATE rooms SET notify_seq = last_seq;
CREATE INDEX rooms_notify_due ON rooms (notify_from) WHERE notify_from IS NOT NULL;

-- Notifications waiting for delivery, one row per notification and target ('webhook', or
-- 'push ' and a Web Push endpoint). `next_at` is when it may be tried (again); a node that
-- takes a row moves it a lease ahead, so a node that dies while delivering gives it back.
CREATE TABLE notify_outbox (
    id         TEXT NOT NULL,
    target     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    first_seq  INTEGER NOT NULL,
    body       TEXT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    next_at    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (id, target)
);
CREATE INDEX notify_outbox_due ON notify_outbox (next_at);

-- Web Push subscriptions (RFC 8030): an endpoint belongs to one browser, so to one user at a
-- time; subscribing it again (another user signed in there) moves it.
CREATE TABLE push_subscriptions (
    endpoint   TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id),
    p256dh     TEXT NOT NULL,
    auth       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX push_subscriptions_by_user ON push_subscriptions (user_id);
