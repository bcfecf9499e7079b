-- The file a message carries, as JSON (`scalify_core::Attachment`: id, name, size, type and an
-- image's dimensions). The bytes live in the file store, not here. A deletion sets it to NULL
-- with the text.
ALTER TABLE messages ADD COLUMN attachment TEXT;
