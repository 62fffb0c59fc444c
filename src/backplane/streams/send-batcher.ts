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
 * Gathers concurrent sends into batches (one send script per user, one pipeline per Redis node), so that
 * many `send` calls cost Redis and the process one round trip instead of one each. One batch is in flight
 * at a time: the sends made meanwhile form the next one (so a retried batch can never be overtaken, and
 * sends to one user keep the order they were made in). Each send settles with its own outcome.
 */
export class SendBatcher {
  #queue: Waiting[] = [];
  #scheduled = false;
  #flushing = false;

  constructor(private readonly flush: (messages: ReliableMessage[]) => Promise<BatchSendOutcome[]>) {}

  send(message: ReliableMessage): Promise<ReliableSendResult> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ message, resolve, reject });
      if (this.#scheduled || this.#flushing) return;
      this.#scheduled = true;
      // note: the sends of this event-loop turn join the batch.
      setImmediate(() => {
        this.#scheduled = false;
        void this.#run();
      });
    });
  }

  async #run(): Promise<void> {
    if (this.#flushing) return;
    this.#flushing = true;
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        try {
          const outcomes = await this.flush(batch.map((w) => w.message));
          batch.forEach((waiting, i) => {
            const outcome = outcomes[i];
            if (outcome?.ok) waiting.resolve(outcome.result);
            else waiting.reject(outcome?.error ?? new Error('no outcome for the message'));
          });
        } catch (error) {
          for (const waiting of batch) waiting.reject(error);
        }
      }
    } finally {
      this.#flushing = false;
    }
  }
}
