import { ProtocolError } from '../errors.js';
import type { Frame, ProtocolName } from './hub-protocol.js';
import { RECORD_SEPARATOR } from './json/json-protocol.js';

/** Hub protocol versions relayhub speaks: 1, and 2 (stateful reconnect: Ack and Sequence messages). */
export const SUPPORTED_PROTOCOL_VERSIONS = [1, 2] as const;

export interface HandshakeRequest {
  protocol: ProtocolName;
  version: 1 | 2;
}

/** Every protocol relayhub speaks, in the order it prefers them. */
export const PROTOCOL_NAMES: readonly ProtocolName[] = Object.freeze(['json', 'messagepack']);

/** `{}` followed by the separator: the handshake succeeded. */
export const HANDSHAKE_OK = `{}${RECORD_SEPARATOR}`;

export const formatHandshakeError = (error: string): string => JSON.stringify({ error }) + RECORD_SEPARATOR;

/**
 * Splits the handshake record (JSON text ending in 0x1E, whatever the hub protocol) from what follows it
 * in the same payload: hub messages, which for MessagePack are binary.
 */
export function splitHandshake(payload: Frame): { record: string; rest: Frame | undefined } {
  const end = typeof payload === 'string' ? payload.indexOf(RECORD_SEPARATOR) : payload.indexOf(0x1e);
  if (end < 0) throw new ProtocolError('Frame does not end with the record separator (0x1E).');
  const record = typeof payload === 'string' ? payload.slice(0, end) : payload.toString('utf8', 0, end);
  let rest: Frame | undefined;
  if (payload.length > end + 1) {
    rest = typeof payload === 'string' ? payload.slice(end + 1) : payload.subarray(end + 1);
  }
  return { record, rest };
}

/**
 * Parses the handshake record (without its separator). The protocols in `supported`, versions 1 and 2,
 * are accepted; anything else is a handshake error that the caller reports before closing.
 */
export function parseHandshakeRequest(
  record: string,
  supported: readonly ProtocolName[] = PROTOCOL_NAMES,
): HandshakeRequest {
  let value: unknown;
  try {
    value = JSON.parse(record);
  } catch {
    throw new ProtocolError('Handshake request is not valid JSON.', 'ERR_HANDSHAKE');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ProtocolError('Handshake request is not a JSON object.', 'ERR_HANDSHAKE');
  }
  const { protocol, version } = value as { protocol?: unknown; version?: unknown };
  if (typeof protocol !== 'string') {
    throw new ProtocolError("Handshake request is missing 'protocol'.", 'ERR_HANDSHAKE');
  }
  if (!(supported as readonly string[]).includes(protocol)) {
    throw new ProtocolError(
      `The protocol '${protocol}' is not supported; this server speaks ${supported.map((p) => `'${p}'`).join(' and ')}.`,
      'ERR_HANDSHAKE',
    );
  }
  if (version !== 1 && version !== 2) {
    // note: String() throws on a JSON object such as {"toString":1}; show objects as JSON instead.
    const shown = typeof version === 'object' && version !== null ? JSON.stringify(version) : String(version);
    throw new ProtocolError(`The protocol version '${shown}' is not supported; use 1 or 2.`, 'ERR_HANDSHAKE');
  }
  return { protocol: protocol as ProtocolName, version };
}
