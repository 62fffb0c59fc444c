import { ProtocolError } from '../errors.js';
import { RECORD_SEPARATOR } from './json-protocol.js';

/** Hub protocol versions relayhub speaks: 1, and 2 (stateful reconnect: Ack and Sequence messages). */
export const SUPPORTED_PROTOCOL_VERSIONS = [1, 2] as const;

export interface HandshakeRequest {
  protocol: 'json';
  version: 1 | 2;
}

/** `{}` followed by the separator: the handshake succeeded. */
export const HANDSHAKE_OK = `{}${RECORD_SEPARATOR}`;

export const formatHandshakeError = (error: string): string => JSON.stringify({ error }) + RECORD_SEPARATOR;

/**
 * Parses the handshake record (without its separator). Only the JSON protocol, versions 1 and 2, is
 * supported; anything else is a handshake error that the caller reports before closing.
 */
export function parseHandshakeRequest(record: string): HandshakeRequest {
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
  if (protocol !== 'json') {
    throw new ProtocolError(
      `The protocol '${protocol}' is not supported; relayhub speaks 'json'.`,
      'ERR_HANDSHAKE',
    );
  }
  if (version !== 1 && version !== 2) {
    // note: String() throws on a JSON object such as {"toString":1}; show objects as JSON instead.
    const shown = typeof version === 'object' && version !== null ? JSON.stringify(version) : String(version);
    throw new ProtocolError(`The protocol version '${shown}' is not supported; use 1 or 2.`, 'ERR_HANDSHAKE');
  }
  return { protocol, version };
}
