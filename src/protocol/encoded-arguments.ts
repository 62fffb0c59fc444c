import type { Frame, HubProtocol } from './hub-protocol.js';
import { RECORD_SEPARATOR } from './json/json-protocol.js';
import { MessageType } from './messages.js';

/**
 * The arguments of an invocation as JSON text (a reliable message's arguments as its inbox holds them),
 * parsed only when a protocol needs the values: a JSON client is written the text as it is, so a message
 * is not parsed and formatted again on its way from Redis to the socket.
 */
export class EncodedArguments {
  #values: unknown[] | undefined;

  /** `json`: a JSON array (as `JSON.stringify` writes one). */
  constructor(readonly json: string) {}

  /**
   * The arguments `json`, with one more given as JSON text `last` (the reliable lane's
   * `{ messageId, offset }`).
   */
  static withLast(json: string, last: string): EncodedArguments {
    return new EncodedArguments(json === '[]' ? `[${last}]` : `${json.slice(0, -1)},${last}]`);
  }

  get values(): unknown[] {
    this.#values ??= JSON.parse(this.json) as unknown[];
    return this.#values;
  }

  /** The Invocation record of these arguments in `protocol`, framing included. */
  invocation(protocol: HubProtocol, invocationId: string, target: string): Frame {
    if (protocol.name === 'json') {
      // note: what formatMessage writes for the same message (JSON.stringify of its fields in this order).
      return (
        `{"type":${MessageType.Invocation},"invocationId":${JSON.stringify(invocationId)},` +
        `"target":${JSON.stringify(target)},"arguments":${this.json}}${RECORD_SEPARATOR}`
      );
    }
    return protocol.write({ type: MessageType.Invocation, invocationId, target, arguments: this.values });
  }
}
