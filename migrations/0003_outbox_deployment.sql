-- Outbox rows belong to one deployment: the channel prefix and hub they are for, recorded by enqueue().
-- A worker relays only the rows of its own prefix, for the hubs it serves; two deployments (prefixes)
-- sharing one database never relay each other's rows. Rows written before this migration get the
-- defaults of enqueue() and `relayhub worker` ('relayhub', '/hubs/demo'); a deployment that used another
-- prefix or hub sets its unrelayed rows once (see README, "Upgrading the outbox").
ALTER TABLE relayhub_outbox
  ADD COLUMN channel_prefix text NOT NULL DEFAULT 'relayhub',
  ADD COLUMN hub            text NOT NULL DEFAULT '/hubs/demo',
  -- the Redis endpoint the row was relayed to (its user's inbox endpoint; 'default' with one Redis): its
  -- relay_epoch is that endpoint's, and its ack is read back there
  ADD COLUMN relay_endpoint text,
  -- the worker that relayed it last (who touched a row, for operators and tests)
  ADD COLUMN relayed_by     text;
-- note: enqueue() always names both; without a default a writer that does not is an error, not a row
-- that some other deployment's worker might pick up.
ALTER TABLE relayhub_outbox ALTER COLUMN channel_prefix DROP DEFAULT, ALTER COLUMN hub DROP DEFAULT;
UPDATE relayhub_outbox SET relay_endpoint = 'default' WHERE relayed_at IS NOT NULL;

DROP INDEX relayhub_outbox_unrelayed;
DROP INDEX relayhub_outbox_unacked;
CREATE INDEX relayhub_outbox_unrelayed ON relayhub_outbox (channel_prefix, hub, partition, id)
  WHERE relayed_at IS NULL AND failed_at IS NULL;
CREATE INDEX relayhub_outbox_unacked ON relayhub_outbox (channel_prefix, hub, partition, user_id, lane_offset)
  WHERE relayed_at IS NOT NULL AND acked_at IS NULL;

-- workers announce themselves per (prefix, hub): each takes a fair share of that hub's partitions among
-- the workers serving it
ALTER TABLE relayhub_workers
  ADD COLUMN channel_prefix text NOT NULL DEFAULT 'relayhub',
  ADD COLUMN hub            text NOT NULL DEFAULT '/hubs/demo';
ALTER TABLE relayhub_workers DROP CONSTRAINT relayhub_workers_pkey;
ALTER TABLE relayhub_workers ADD PRIMARY KEY (id, channel_prefix, hub);
