-- Durable mode keeps each room's seq counter in Redis. When Redis loses its data the counter is
-- seeded again from here, after the persisters wrote everything the topic held, and the room is
-- stamped with a new epoch: `seq_epoch`, taken from `durable_epochs`. A record allocated in an
-- earlier epoch and not stored by then was never acked (its deposit in the recent window saw
-- the new epoch); the persister refuses it instead of letting it take a seq of the new epoch.
ALTER TABLE rooms ADD COLUMN seq_epoch BIGINT NOT NULL DEFAULT 0;
CREATE SEQUENCE durable_epochs;
