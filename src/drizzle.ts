/**
 * `relayhub/drizzle`: the outbox table for drizzle-orm queries (apart from the main entry, so that apps
 * without drizzle-orm never load its types).
 */
export { outbox } from './outbox/schema.js';
