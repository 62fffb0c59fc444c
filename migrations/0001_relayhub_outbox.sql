-- The transactional outbox of the reliable lane: app code inserts a row in its own transaction
-- (enqueue), the outbox worker relays committed rows to the users' Redis inboxes, and the row is kept
-- until the user's client acknowledged the message (or its TTL passed).
CREATE TABLE relayhub_outbox (
  id           bigserial PRIMARY KEY,
  user_id      text        NOT NULL,
  -- hash(user_id) mod 64: one worker owns a partition at a time, which keeps per-user order
  partition    smallint    NOT NULL CHECK (partition >= 0 AND partition < 64),
  target       text        NOT NULL,
  args         jsonb       NOT NULL,
  -- the message id the client sees (and the lane deduplicates by): the app's key, or 'outbox:<id>'
  message_key  text,
  created_at   timestamptz NOT NULL DEFAULT now(),
  expires_at   timestamptz NOT NULL,
  -- set when relayed into Redis under relay_epoch; cleared to relay again after Redis lost its memory
  relayed_at   timestamptz,
  relay_epoch  text,
  lane_offset  bigint,
  acked_at     timestamptz,
  -- a poison row: set aside with the reason, never retried
  failed_at    timestamptz,
  fail_reason  text
);

-- what the relay looks for: committed, not relayed, not poison, per partition in id order
CREATE INDEX relayhub_outbox_unrelayed ON relayhub_outbox (partition, id)
  WHERE relayed_at IS NULL AND failed_at IS NULL;
-- relayed rows waiting for their ack
CREATE INDEX relayhub_outbox_unacked ON relayhub_outbox (partition, user_id, lane_offset)
  WHERE relayed_at IS NOT NULL AND acked_at IS NULL;
CREATE INDEX relayhub_outbox_expires ON relayhub_outbox (expires_at);

-- workers announce themselves here so that each can take a fair share of the partitions
CREATE TABLE relayhub_workers (
  id        text PRIMARY KEY,
  seen_at   timestamptz NOT NULL DEFAULT now()
);
