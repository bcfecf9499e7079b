-- A message sent again with a client_id whose idempotency key has expired (durable mode keeps
-- keys for `--idempotency-window-secs`) is a new message, acked with a seq of its own: it is
-- stored beside the first one, told apart by `resend_seq` (its own seq; 0 for every other
-- message), so that no acked message is refused by the idempotency index.
ALTER TABLE messages ADD COLUMN resend_seq BIGINT NOT NULL DEFAULT 0;
DROP INDEX messages_idempotency;
CREATE UNIQUE INDEX messages_idempotency ON messages(room_id, sender_id, client_id, resend_seq);
