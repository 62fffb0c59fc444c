import type { HubMessage } from './messages.js';

/** How a protocol's bytes travel: UTF-8 text (WebSocket text frames) or arbitrary bytes (binary frames). */
export type TransferFormat = 'Text' | 'Binary';

/** One or more encoded messages, ready for a transport: text for `Text` protocols, bytes for `Binary`. */
export type Frame = string | Buffer;

/** The names of the hub protocols relayhub speaks, as they appear in the handshake. */
export type ProtocolName = 'json' | 'messagepack';

/**
 * A SignalR hub protocol (dotnet/aspnetcore `src/SignalR/docs/specs/HubProtocol.md`): how hub messages
 * become bytes and back. Pure: no I/O, no state, so one instance serves every connection.
 */
export interface HubProtocol {
  readonly name: ProtocolName;
  /** The highest protocol version spoken (2 adds stateful reconnect's Ack and Sequence messages). */
  readonly version: number;
  readonly transferFormat: TransferFormat;
  /**
   * Splits one transport payload (a WebSocket frame or an HTTP POST body) into messages and validates
   * them, one at a time as the caller iterates, so that the messages before a malformed one still count.
   * Throws a `ProtocolError` on malformed input and on a message larger than `maxMessageBytes`.
   */
  parse(payload: Frame, maxMessageBytes: number): Iterable<HubMessage>;
  /** Encodes one message, framing (record separator or length prefix) included. */
  write(message: HubMessage): Frame;
}

/** Joins frames of one protocol into one payload: both protocols allow many messages per payload. */
export function concatFrames(frames: readonly Frame[]): Frame {
  if (frames.length === 1) return frames[0] as Frame;
  if (typeof frames[0] === 'string') return (frames as string[]).join('');
  return Buffer.concat(frames as Buffer[]);
}
