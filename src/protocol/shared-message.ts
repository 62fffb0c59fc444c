import type { Frame, HubProtocol } from './hub-protocol.js';
import { formatMessageChecked, jsonProtocol, RECORD_SEPARATOR } from './json/json-protocol.js';
import { messagePackProtocol, packValue, unpackValue } from './messagepack/messagepack-protocol.js';
import type { HubMessage } from './messages.js';

/** Marks a backplane wire form that is base64 MessagePack instead of a JSON record (which starts with `{`). */
const PACKED = 'm:';

/**
 * One hub message written to many connections (a send to all, a group, a user): encoded at most once per
 * hub protocol, on first use, however many connections receive it.
 *
 * Its {@link wire} form is what the backplane carries between instances: the JSON record itself when JSON
 * keeps everything (the common case, so JSON-only deployments pay nothing extra), else the MessagePack
 * encoding in base64, so that binary arguments and dates survive the trip. Each instance rebuilds the
 * message with {@link fromWire} and encodes it for the protocols its own connections speak.
 */
export class SharedMessage {
  #message: HubMessage | undefined;
  #wire: string | undefined;
  #json: string | undefined;
  #packed: Buffer | undefined;

  private constructor(message: HubMessage | undefined, wire: string | undefined) {
    this.#message = message;
    this.#wire = wire;
    if (wire !== undefined && !wire.startsWith(PACKED)) this.#json = wire;
  }

  static of(message: HubMessage): SharedMessage {
    return new SharedMessage(message, undefined);
  }

  /** The message behind a {@link wire} form (a JSON record, or the packed form). */
  static fromWire(wire: string): SharedMessage {
    return new SharedMessage(undefined, wire);
  }

  /** The form the backplane carries: a JSON record, or `m:` and base64 MessagePack. */
  get wire(): string {
    if (this.#wire === undefined) {
      const { record, lossless } = formatMessageChecked(this.message);
      this.#json = record;
      this.#wire = lossless ? record : PACKED + packValue(this.message).toString('base64');
    }
    return this.#wire;
  }

  get message(): HubMessage {
    if (this.#message === undefined) {
      const wire = this.#wire as string;
      this.#message = wire.startsWith(PACKED)
        ? (unpackValue(Buffer.from(wire.slice(PACKED.length), 'base64')) as HubMessage)
        : (JSON.parse(wire.slice(0, -RECORD_SEPARATOR.length)) as HubMessage);
    }
    return this.#message;
  }

  /** The message in `protocol`'s encoding, computed once per protocol. */
  encoded(protocol: HubProtocol): Frame {
    if (protocol === messagePackProtocol)
      return (this.#packed ??= messagePackProtocol.write(this.message) as Buffer);
    if (this.#json === undefined) void this.wire;
    return this.#json ?? jsonProtocol.write(this.message);
  }
}
