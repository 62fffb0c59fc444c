/**
 * An optional helper for clients of the reliable lane, for the official `@microsoft/signalr` client (or any
 * client with the same `on(target, handler)`): it drops duplicates by message id and acknowledges by
 * returning. Nothing in it is required: a plain handler that returns a value acknowledges too.
 */

/** What the server appends to every reliable message's arguments. */
export interface ReliableMeta {
  messageId: string;
  offset: number;
}

/** The part of a SignalR client connection the helper needs. */
export interface HandlerHost {
  on(target: string, handler: (...args: never[]) => unknown): void;
}

export interface ReliableHandlerOptions {
  /**
   * How many recent message ids are remembered for deduplication.
   * @default 10_000
   */
  remember?: number;
}

const isMeta = (value: unknown): value is ReliableMeta =>
  typeof value === 'object' &&
  value !== null &&
  typeof (value as ReliableMeta).messageId === 'string' &&
  typeof (value as ReliableMeta).offset === 'number';

/**
 * Registers `handler` for reliable messages to `target`. It runs once per message id (a redelivered copy is
 * acknowledged without running it again); when it throws, the message is nacked and redelivered later.
 */
export function onReliable<Args extends unknown[]>(
  connection: HandlerHost,
  target: string,
  handler: (meta: ReliableMeta, ...args: Args) => unknown,
  options: ReliableHandlerOptions = {},
): void {
  const remember = options.remember ?? 10_000;
  const seen = new Set<string>();
  connection.on(target, async (...received: never[]) => {
    const meta = received.at(-1) as unknown;
    if (!isMeta(meta)) throw new Error(`'${target}' did not carry reliable message metadata.`);
    if (seen.has(meta.messageId)) return true;
    await handler(meta, ...(received.slice(0, -1) as unknown as Args));
    seen.add(meta.messageId);
    // note: a Set iterates in insertion order, so the first entry is the oldest.
    if (seen.size > remember) seen.delete(seen.values().next().value as string);
    return true;
  });
}
