import type { Frame } from '../protocol/hub-protocol.js';

/**
 * Stateful reconnect bookkeeping for one connection (hub protocol version 2): the sequenced messages the
 * server sent and the client has not acknowledged yet, and the sequence of the messages received.
 *
 * Sequence ids start at 1 on both sides and count Invocation, StreamItem, Completion, StreamInvocation and
 * CancelInvocation messages only.
 */
export class ResumeBuffer {
  #frames: Frame[] = [];
  /** Sequence id of `#frames[0]`, or of the next frame when the buffer is empty. */
  #firstId = 1;
  #bytes = 0;
  #overflowed = false;
  /** Id the next received sequenced message will have. */
  #nextReceiveId = 1;
  #latestReceivedId = 0;
  #lastAckedId = 0;

  constructor(private readonly limitBytes: number) {}

  /**
   * False once the unacknowledged messages outgrew the limit: the buffer no longer holds everything
   * the client may have missed, so the connection must not be resumed.
   */
  get resumable(): boolean {
    return !this.#overflowed;
  }

  get bufferedBytes(): number {
    return this.#bytes;
  }

  /** Records an outgoing sequenced frame. */
  sent(frame: Frame): void {
    if (this.#overflowed) return;
    this.#frames.push(frame);
    this.#bytes += frame.length;
    if (this.#bytes > this.limitBytes) {
      // note: ASP.NET blocks the writer here; a backplane send cannot block, so resumability is given up
      // instead and a dropped socket becomes a full reconnect that the client sees.
      this.#overflowed = true;
      this.#frames = [];
      this.#bytes = 0;
    }
  }

  /** The client acknowledged every message up to `sequenceId`. */
  acked(sequenceId: number): void {
    while (this.#frames.length > 0 && this.#firstId <= sequenceId) {
      this.#bytes -= (this.#frames.shift() as Frame).length;
      this.#firstId++;
    }
    if (this.#frames.length === 0 && this.#firstId <= sequenceId) this.#firstId = sequenceId + 1;
  }

  /** What to send on a resumed socket: the Sequence id, then every unacknowledged frame in order. */
  replay(): { sequenceId: number; frames: readonly Frame[] } {
    return { sequenceId: this.#firstId, frames: this.#frames };
  }

  /**
   * Numbers an incoming sequenced message; false when it is a duplicate of one already processed (the
   * client re-sends its unacknowledged messages after a reconnect).
   */
  received(): boolean {
    const id = this.#nextReceiveId++;
    if (id <= this.#latestReceivedId) return false;
    this.#latestReceivedId = id;
    return true;
  }

  /**
   * The client's Sequence message: its next message has id `sequenceId`. False when that leaves a gap
   * (messages the server never saw), which is a protocol error.
   */
  resetReceive(sequenceId: number): boolean {
    if (sequenceId > this.#latestReceivedId + 1) return false;
    this.#nextReceiveId = sequenceId;
    return true;
  }

  /** The Ack to send, if anything arrived since the last one. */
  takeAck(): number | undefined {
    if (this.#latestReceivedId <= this.#lastAckedId) return undefined;
    this.#lastAckedId = this.#latestReceivedId;
    return this.#latestReceivedId;
  }
}
