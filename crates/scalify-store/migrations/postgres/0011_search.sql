-- Full-text search over messages' current text: a GIN index of each message's words
-- ('simple' configuration: case-folded, not stemmed, accents kept — chat is written in every
-- language, and the embedded engine splits words the same way). An expression index, so
-- no tsvector is stored in the table: an edit or a deletion rewrites `text`, and the index
-- follows it (a deleted message's text is '' and has no words). Changes are not indexed.
CREATE INDEX messages_search ON messages
    USING gin (to_tsvector('simple', text)) WHERE kind IS NULL;
