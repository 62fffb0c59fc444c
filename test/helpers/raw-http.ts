import { connect, type Socket } from 'node:net';

export interface RawResponse {
  /** The status code of the first response line, when one arrived. */
  status: number | undefined;
  /** Everything the server sent before it closed the socket (or before the timeout). */
  text: string;
  /** Whether the server closed the socket (rather than the timeout ending the wait). */
  closed: boolean;
}

/**
 * Writes `request` (any bytes: request lines no HTTP client would send) to `127.0.0.1:port` and collects
 * the answer until the server closes the socket or `timeoutMs` passes. Never rejects on socket errors
 * (a reset is an answer too).
 */
export function rawRequest(
  port: number,
  request: string | Buffer,
  { timeoutMs = 5_000 }: { timeoutMs?: number } = {},
): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1');
    let text = '';
    let done = false;
    const finish = (closed: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      resolve({ status: match ? Number(match[1]) : undefined, text, closed });
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    socket.on('connect', () => socket.write(request));
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
  });
}

/** A `GET` upgrade request for a WebSocket at `target` (a raw request target, not checked). */
export function upgradeRequest(target: string, extraHeaders = ''): string {
  return (
    `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n${extraHeaders}\r\n`
  );
}
