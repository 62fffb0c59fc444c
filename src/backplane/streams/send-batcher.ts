import type { ReliableMessage, ReliableSendResult } from '../backplane.js';
import type { BatchSendOutcome } from './reliable-producer.js';

/** The most messages one flush sends together. */
export const MAX_BATCH = 1_000;

interface Waiting {
  message: ReliableMessage;
  resolve: (result: ReliableSendResult) => void;
  reject: (error: unknown) => void;
}

/**
 * Gathers the sends of one event-loop turn into one batch (one send script per user, one pipeline), so
 * that many concurrent `send` calls cost Redis and the process one round trip instead of one each. Each
 * send still settles with its own outcome; sends to one user keep the order they were made in.
 */
export class SendBatcher {
  #queue: Waiting[] = [];
  #scheduled = false;

  constructor(private readonly flush: (messages: ReliableMessage[]) => Promise<BatchSendOutcome[]>) {}

  send(message: ReliableMessage): Promise<ReliableSendResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ message, resolve, reject });
      if (this.#queue.length >= MAX_BATCH) this.#run();
      else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => {
          this.#scheduled = false;
          this.#run();
        });
      }
    });
  }

  #run(): void {
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    this.flush(batch.map((w) => w.message)).then(
      (outcomes) =>
        batch.forEach((waiting, i) => {
          const outcome = outcomes[i];
          if (outcome?.ok) waiting.resolve(outcome.result);
          else waiting.reject(outcome?.error ?? new Error('no outcome for the message'));
        }),
      (error: unknown) => {
        for (const waiting of batch) waiting.reject(error);
      },
    );
  }
}
