import {
  bigint,
  bigserial,
  index,
  jsonb,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
} from 'drizzle-orm/pg-core';

/**
 * The outbox table (created by `migrations/0001_relayhub_outbox.sql`, made per deployment by
 * `0003_outbox_deployment.sql`; this mirrors it for queries).
 */
export const outbox = pgTable(
  'relayhub_outbox',
  {
    id: bigserial('id', { mode: 'bigint' }).primaryKey(),
    /** The deployment the row belongs to: only workers of this channel prefix relay it. */
    channelPrefix: text('channel_prefix').notNull(),
    /** The hub whose user receives it. */
    hub: text('hub').notNull(),
    userId: text('user_id').notNull(),
    partition: smallint('partition').notNull(),
    target: text('target').notNull(),
    args: jsonb('args').$type<unknown[]>().notNull(),
    messageKey: text('message_key'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    relayedAt: timestamp('relayed_at', { withTimezone: true }),
    relayEpoch: text('relay_epoch'),
    laneOffset: bigint('lane_offset', { mode: 'number' }),
    /** The Redis endpoint it was relayed to (`default` with one Redis). */
    relayEndpoint: text('relay_endpoint'),
    /** The worker that relayed it last. */
    relayedBy: text('relayed_by'),
    ackedAt: timestamp('acked_at', { withTimezone: true }),
    failedAt: timestamp('failed_at', { withTimezone: true }),
    failReason: text('fail_reason'),
  },
  (t) => [index('relayhub_outbox_expires').on(t.expiresAt)],
);

export const workers = pgTable(
  'relayhub_workers',
  {
    id: text('id').notNull(),
    channelPrefix: text('channel_prefix').notNull(),
    hub: text('hub').notNull(),
    seenAt: timestamp('seen_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.id, t.channelPrefix, t.hub] })],
);

/** Partitions of the outbox: a user's rows all fall in one, and one worker owns a partition at a time. */
export const PARTITIONS = 64;

/** 32-bit FNV-1a: a stable hash across processes and versions. */
export function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash;
}

/** The partition of a user's rows. */
export const partitionOf = (userId: string): number => fnv1a(userId) % PARTITIONS;
