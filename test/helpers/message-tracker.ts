/**
 * Bookkeeping for tests of the reliable lane: what was sent to each user (in send order) and every copy
 * each user's clients received. It counts
 * - `sent`: messages sent (one per message id),
 * - `received`: handler calls, copies included,
 * - `delivered`: distinct sent messages received at least once,
 * - `duplicated`: copies of a message id already received by that user (at least once allows them),
 * - `missing`: sent and never received,
 * - `outOfOrder`: first receptions that came after a message sent later to the same user,
 * - `unexpected`: receptions of ids never sent to that user (or with another offset or payload than sent),
 * and {@link summary} prints them (with the first problems per user) for assertion messages.
 */
import { isDeepStrictEqual } from 'node:util';

export interface SentMessage {
  messageId: string;
  /** The offset the lane returned for it, when known. */
  offset?: number;
  payload: unknown;
}

export interface ReceivedMessage {
  messageId: string;
  offset: number;
  payload: unknown;
  /** Which client connection got it (for tests with several connections per user). */
  connection?: string;
  at: number;
}

export interface TrackerCounts {
  users: number;
  sent: number;
  received: number;
  delivered: number;
  duplicated: number;
  missing: number;
  outOfOrder: number;
  unexpected: number;
}

interface UserLog {
  sent: SentMessage[];
  sentIndex: Map<string, number>;
  received: ReceivedMessage[];
  /** Message ids in the order they were first received. */
  firstSeen: string[];
  seen: Set<string>;
}

export class MessageTracker {
  readonly #users = new Map<string, UserLog>();

  #user(userId: string): UserLog {
    let log = this.#users.get(userId);
    if (!log) {
      log = { sent: [], sentIndex: new Map(), received: [], firstSeen: [], seen: new Set() };
      this.#users.set(userId, log);
    }
    return log;
  }

  /**
   * Records a message as sent to `userId`, in send order. Call it before the send (a copy may arrive
   * before the send resolves) and {@link sentAt} once the lane returned its offset.
   */
  sent(userId: string, message: SentMessage): void {
    const log = this.#user(userId);
    if (log.sentIndex.has(message.messageId)) {
      throw new Error(`Message id '${message.messageId}' was recorded as sent to '${userId}' twice.`);
    }
    log.sentIndex.set(message.messageId, log.sent.length);
    log.sent.push({ ...message });
  }

  /** Records the offset the lane assigned to a message recorded with {@link sent}. */
  sentAt(userId: string, messageId: string, offset: number): void {
    const index = this.#users.get(userId)?.sentIndex.get(messageId);
    const message = index === undefined ? undefined : this.#users.get(userId)?.sent[index];
    if (!message) throw new Error(`Message id '${messageId}' was not recorded as sent to '${userId}'.`);
    message.offset = offset;
  }

  /** Records one copy received by a client of `userId`. */
  received(userId: string, message: Omit<ReceivedMessage, 'at'>): void {
    const log = this.#user(userId);
    log.received.push({ ...message, at: Date.now() });
    if (log.seen.has(message.messageId)) return;
    log.seen.add(message.messageId);
    log.firstSeen.push(message.messageId);
  }

  /** Receptions that do not match what was sent (unknown id, other offset or payload), described. */
  #unexpected(log: UserLog): string[] {
    const problems: string[] = [];
    for (const got of log.received) {
      const index = log.sentIndex.get(got.messageId);
      const expected = index === undefined ? undefined : log.sent[index];
      if (
        expected &&
        (expected.offset === undefined || expected.offset === got.offset) &&
        isDeepStrictEqual(expected.payload, got.payload)
      ) {
        continue;
      }
      problems.push(
        `${got.messageId}@${got.offset}=${JSON.stringify(got.payload)}` +
          (expected ? ` (sent @${expected.offset}=${JSON.stringify(expected.payload)})` : ' (never sent)'),
      );
    }
    return problems;
  }

  get userIds(): string[] {
    return [...this.#users.keys()];
  }

  /** The ids sent to `userId`, in send order. */
  sentIds(userId: string): string[] {
    return (this.#users.get(userId)?.sent ?? []).map((m) => m.messageId);
  }

  /** The offsets the lane returned for the messages sent to `userId`, in send order. */
  sentOffsets(userId: string): (number | undefined)[] {
    return (this.#users.get(userId)?.sent ?? []).map((m) => m.offset);
  }

  /** What `userId`'s clients received, duplicates dropped by message id: first receptions in order. */
  deduplicated(userId: string): string[] {
    return [...(this.#users.get(userId)?.firstSeen ?? [])];
  }

  /** Every copy `userId`'s clients received, in arrival order. */
  receivedBy(userId: string, connection?: string): ReceivedMessage[] {
    const all = this.#users.get(userId)?.received ?? [];
    return connection === undefined ? [...all] : all.filter((m) => m.connection === connection);
  }

  #countsOf(log: UserLog): Omit<TrackerCounts, 'users'> {
    let delivered = 0;
    for (const m of log.sent) if (log.seen.has(m.messageId)) delivered++;
    let outOfOrder = 0;
    let highest = -1;
    for (const id of log.firstSeen) {
      const index = log.sentIndex.get(id);
      if (index === undefined) continue;
      if (index < highest) outOfOrder++;
      else highest = index;
    }
    return {
      sent: log.sent.length,
      received: log.received.length,
      delivered,
      duplicated: log.received.length - log.firstSeen.length,
      missing: log.sent.length - delivered,
      outOfOrder,
      unexpected: this.#unexpected(log).length,
    };
  }

  counts(): TrackerCounts {
    const total: TrackerCounts = {
      users: this.#users.size,
      sent: 0,
      received: 0,
      delivered: 0,
      duplicated: 0,
      missing: 0,
      outOfOrder: 0,
      unexpected: 0,
    };
    for (const log of this.#users.values()) {
      const c = this.#countsOf(log);
      total.sent += c.sent;
      total.received += c.received;
      total.delivered += c.delivered;
      total.duplicated += c.duplicated;
      total.missing += c.missing;
      total.outOfOrder += c.outOfOrder;
      total.unexpected += c.unexpected;
    }
    return total;
  }

  /** True once every sent message reached its user at least once. */
  allDelivered(): boolean {
    for (const log of this.#users.values()) {
      for (const m of log.sent) if (!log.seen.has(m.messageId)) return false;
    }
    return true;
  }

  /** The counts, then the first problems of up to `maxUsers` users: for assertion messages. */
  summary(maxUsers = 5): string {
    const c = this.counts();
    const lines = [
      `sent=${c.sent} received=${c.received} delivered=${c.delivered} duplicated=${c.duplicated} ` +
        `missing=${c.missing} outOfOrder=${c.outOfOrder} unexpected=${c.unexpected} (users=${c.users})`,
    ];
    let shown = 0;
    for (const [userId, log] of this.#users) {
      const u = this.#countsOf(log);
      if (u.missing + u.outOfOrder + u.unexpected === 0) continue;
      if (shown++ >= maxUsers) {
        lines.push('  …');
        break;
      }
      const missing = log.sent
        .filter((m) => !log.seen.has(m.messageId))
        .slice(0, 5)
        .map((m) => `${m.messageId}@${m.offset}`);
      lines.push(
        `  ${userId}: sent=${u.sent} delivered=${u.delivered} duplicated=${u.duplicated} missing=${u.missing}` +
          ` outOfOrder=${u.outOfOrder} unexpected=${u.unexpected}` +
          (missing.length ? ` first missing: ${missing.join(', ')}` : '') +
          (u.unexpected ? ` first unexpected: ${this.#unexpected(log).slice(0, 3).join(', ')}` : ''),
      );
    }
    return lines.join('\n');
  }
}
