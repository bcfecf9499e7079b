-- Full-text search over messages' current text. An FTS5 index that keeps no copy of the
-- text (`content=''`): the text lives in `messages` only. The writer removes an entry by
-- giving the index the words it had (the 'delete' command with the old text), and with
-- `secure-delete` the index removes them from its pages rather than only marking them
-- deleted: a deleted message's words are left nowhere. Words are runs of letters and
-- digits, case-folded, accents kept (as PostgreSQL's 'simple' configuration does).
CREATE VIRTUAL TABLE messages_search USING fts5 (
    text,
    content = '',
    tokenize = 'unicode61 remove_diacritics 0'
);
INSERT INTO messages_search (messages_search, rank) VALUES ('secure-delete', 1);

-- A message's entry in the index (its rowid there): given in commit order, so the index's
-- own order is newest-first for a search, which reads it backwards and stops at a page.
ALTER TABLE messages ADD COLUMN search_doc INTEGER;
CREATE INDEX messages_by_search_doc ON messages (search_doc) WHERE search_doc IS NOT NULL;

-- The messages already stored are numbered by time, then by their room's seq.
WITH docs AS (
    SELECT room_id, seq, row_number() OVER (ORDER BY ts, room_id, seq) AS doc
    FROM messages WHERE kind IS NULL AND deleted_at IS NULL
)
UPDATE messages SET search_doc = docs.doc
FROM docs WHERE messages.room_id = docs.room_id AND messages.seq = docs.seq;
INSERT INTO messages_search (rowid, text)
    SELECT search_doc, text FROM messages WHERE search_doc IS NOT NULL;
