import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import WebSocket from 'ws';
import { waitFor } from './wait-for.js';

/** The record separator that ends every JSON hub protocol record. */
export const RS = '\u001e';

/** The handshake request of the official client for protocol version `version`. */
export const handshakeRequest = (version: number = 1, protocol = 'json'): string =>
  JSON.stringify({ protocol, version }) + RS;

/** Formats `value` as one record: JSON followed by the separator. */
export const record = (value: unknown): string => JSON.stringify(value) + RS;

export interface NegotiateResult {
  connectionId: string;
  connectionToken: string;
  useStatefulReconnect?: boolean;
}

export interface NegotiateOptions {
  statefulReconnect?: boolean;
  headers?: Record<string, string>;
}

/** `POST <hub>/negotiate?negotiateVersion=1` as the official client sends it. */
export async function negotiate(hubUrl: string, options: NegotiateOptions = {}): Promise<NegotiateResult> {
  const query = `negotiateVersion=1${options.statefulReconnect ? '&useStatefulReconnect=true' : ''}`;
  const res = await fetch(`${hubUrl}/negotiate?${query}`, {
    method: 'POST',
    headers: { 'X-Requested-With': 'XMLHttpRequest', ...options.headers },
  });
  if (res.status !== 200) throw new Error(`negotiate answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as NegotiateResult;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export interface RawConnectOptions extends NegotiateOptions {
  /** Negotiate first and open the WebSocket with `id=<token>` (default), or open it without `id`. */
  negotiate?: boolean;
}

/** The WebSocket URL of a hub for `token` (or without `id`). */
export function socketUrl(hubUrl: string, token?: string): string {
  const ws = hubUrl.replace(/^http/, 'ws');
  return token === undefined ? ws : `${ws}?id=${token}`;
}

/**
 * Opens a WebSocket to `hubUrl` (with `id=token`) and resolves with the HTTP status of the upgrade: 101
 * when it was accepted (the socket is then closed again), else the refusal's status.
 */
export function upgradeStatus(hubUrl: string, token?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(socketUrl(hubUrl, token));
    ws.on('open', () => {
      ws.terminate();
      resolve(101);
    });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
      ws.terminate();
    });
    ws.on('error', (error) => reject(error));
  });
}

/** Splits received text into records; a frame that does not end with the separator is kept whole. */
function splitFrame(text: string): { records: string[]; complete: boolean } {
  const parts = text.split(RS);
  const rest = parts.pop();
  return { records: parts, complete: rest === '' };
}

/**
 * A hub client on a plain `ws` WebSocket: it sends exactly the bytes a test gives it (text or binary
 * frames) and collects every record the server sends. Nothing is sent unless a test sends it (no
 * handshake, no pings).
 */
export class RawClient {
  readonly ws: WebSocket;
  readonly connectionId: string | undefined;
  readonly token: string | undefined;
  /** Every text frame received, as is. */
  readonly frames: string[] = [];
  /** Every record received, in order, without separators. */
  readonly records: string[] = [];
  /** Frames that did not end with the separator (the server must never send one). */
  readonly incompleteFrames: string[] = [];
  /** Frames received as binary (the server must never send one). */
  binaryFrames = 0;
  readonly errors: Error[] = [];
  /** Resolves with the close code and reason once the socket has closed. */
  readonly closed: Promise<CloseInfo>;
  #closeInfo: CloseInfo | undefined;

  private constructor(ws: WebSocket, ids: { connectionId?: string; token?: string }) {
    this.ws = ws;
    this.connectionId = ids.connectionId;
    this.token = ids.token;
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        this.binaryFrames++;
        return;
      }
      const text = rawToString(data);
      this.frames.push(text);
      const { records, complete } = splitFrame(text);
      if (!complete) this.incompleteFrames.push(text);
      this.records.push(...records);
    });
    ws.on('error', (error) => this.errors.push(error));
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.#closeInfo = { code, reason: reason.toString('utf8') };
        resolve(this.#closeInfo);
      });
    });
  }

  /** Negotiates (unless `negotiate: false`) and opens the WebSocket; resolves once it is open. */
  static async connect(hubUrl: string, options: RawConnectOptions = {}): Promise<RawClient> {
    const ids: { connectionId?: string; token?: string } =
      options.negotiate === false
        ? {}
        : await negotiate(hubUrl, options).then((n) => ({
            connectionId: n.connectionId,
            token: n.connectionToken,
          }));
    const ws = new WebSocket(socketUrl(hubUrl, ids.token), { headers: options.headers });
    const client = new RawClient(ws, ids);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        reject(new Error(`WebSocket upgrade answered ${res.statusCode}`));
      });
      ws.once('error', reject);
    });
    return client;
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  /** The close code and reason, once closed. */
  get closeInfo(): CloseInfo | undefined {
    return this.#closeInfo;
  }

  /** Every record received, parsed as JSON. */
  messages(): Record<string, unknown>[] {
    return this.records.map((r) => JSON.parse(r) as Record<string, unknown>);
  }

  /** Sends one text frame with exactly `text`. */
  sendText(text: string): Promise<void> {
    return this.#send(text, false);
  }

  /** Sends one binary frame. */
  sendBinary(data: Uint8Array): Promise<void> {
    return this.#send(data, true);
  }

  /** Sends bytes as one text frame without checking that they are UTF-8. */
  sendTextBytes(data: Uint8Array): Promise<void> {
    return this.#send(data, false);
  }

  /** Sends each value as a record, all in one frame. */
  send(...values: unknown[]): Promise<void> {
    return this.sendText(values.map(record).join(''));
  }

  #send(data: string | Uint8Array, binary: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.ws.send(data, { binary }, (error) => (error ? reject(error) : resolve()));
    });
  }

  /** Sends the handshake request and waits for the server's first record; returns it parsed. */
  async handshake(version = 1, protocol = 'json'): Promise<Record<string, unknown>> {
    const before = this.records.length;
    await this.sendText(handshakeRequest(version, protocol));
    return this.nextMessage(before);
  }

  /** Waits for the record at index `index` (the next one by default) and returns it parsed. */
  async nextMessage(index = this.records.length, timeoutMs = 5_000): Promise<Record<string, unknown>> {
    const text = (await waitFor(() => this.records[index], {
      timeoutMs,
      message: `record #${index} not received`,
    })) as string;
    return JSON.parse(text) as Record<string, unknown>;
  }

  /** Waits for a received message that matches `predicate` and returns it. */
  async waitForMessage(
    predicate: (message: Record<string, unknown>) => boolean,
    timeoutMs = 5_000,
  ): Promise<Record<string, unknown>> {
    const found = await waitFor(() => this.messages().find(predicate), {
      timeoutMs,
      message: 'message not received',
    });
    return found as Record<string, unknown>;
  }

  /** Waits for the socket to close; rejects after `timeoutMs`. */
  async waitForClose(timeoutMs = 5_000): Promise<CloseInfo> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([this.closed, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes the socket (a clean 1000 close) and waits until it is closed. */
  async close(): Promise<CloseInfo> {
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) {
      this.ws.close(1000);
    }
    return this.waitForClose().catch(() => {
      this.ws.terminate();
      return this.closed;
    });
  }

  terminate(): void {
    this.ws.terminate();
  }
}

/** Collects raw clients so that a test can close all of them in afterEach. */
export class RawClientPool {
  readonly #clients: { close(): Promise<unknown> }[] = [];

  async connect(hubUrl: string, options: RawConnectOptions = {}): Promise<RawClient> {
    const client = await RawClient.connect(hubUrl, options);
    this.#clients.push(client);
    return client;
  }

  async connectTcp(hubUrl: string, token?: string): Promise<RawTcpClient> {
    const client = await RawTcpClient.connect(hubUrl, token);
    this.#clients.push(client);
    return client;
  }

  async closeAll(): Promise<void> {
    await Promise.allSettled(this.#clients.splice(0).map((c) => c.close()));
  }
}

/**
 * A WebSocket client written on a bare TCP socket, for tests that need control below `ws`: it completes
 * the upgrade itself, sends masked text frames, and can stop reading ({@link pause}) so that the server's
 * writes back up in the kernel buffers like those of a client that never reads.
 */
export class RawTcpClient {
  readonly socket: Socket;
  readonly records: string[] = [];
  /** Close frames received from the server. */
  readonly closeFrames: number[] = [];
  /** Resolves once the TCP socket has closed (either side). */
  readonly closed: Promise<void>;
  /** Bytes received after the upgrade response. */
  bytesReceived = 0;
  #buffer: Buffer = Buffer.alloc(0);
  #text = '';

  private constructor(socket: Socket) {
    this.socket = socket;
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
  }

  /** Opens a TCP socket to the hub and completes the WebSocket upgrade for `token` (or without `id`). */
  static async connect(hubUrl: string, token?: string): Promise<RawTcpClient> {
    const url = new URL(hubUrl);
    const socket = netConnect({ host: url.hostname, port: Number(url.port) });
    const client = new RawTcpClient(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const path = `${url.pathname}${token === undefined ? '' : `?id=${token}`}`;
    socket.write(
      `GET ${path} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    );
    await new Promise<void>((resolve, reject) => {
      let head = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        socket.off('data', onData);
        const status = head.subarray(0, end).toString('latin1').split('\r\n')[0] ?? '';
        if (!/^HTTP\/1\.1 101 /.test(status)) {
          socket.destroy();
          return reject(new Error(`upgrade refused: ${status}`));
        }
        socket.on('data', (data: Buffer) => client.#onData(data));
        const rest = head.subarray(end + 4);
        if (rest.length > 0) client.#onData(rest);
        resolve();
      };
      socket.on('data', onData);
      socket.once('close', () => reject(new Error('socket closed during the upgrade')));
    });
    return client;
  }

  #onData(chunk: Buffer): void {
    this.bytesReceived += chunk.length;
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    for (;;) {
      const frame = parseServerFrame(this.#buffer);
      if (!frame) return;
      this.#buffer = this.#buffer.subarray(frame.size);
      if (frame.opcode === 0x8) {
        this.closeFrames.push(frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005);
      } else if (frame.opcode === 0x1 || frame.opcode === 0x0) {
        this.#text += frame.payload.toString('utf8');
        if (frame.fin) {
          this.records.push(...splitFrame(this.#text).records);
          this.#text = '';
        }
      }
    }
  }

  /** Sends one masked text frame. */
  sendText(text: string): void {
    this.socket.write(maskedFrame(0x1, Buffer.from(text, 'utf8')));
  }

  /** Stops reading from the socket: the server's writes pile up in the kernel buffers, then in the server. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  get isClosed(): boolean {
    return this.socket.closed;
  }

  close(): Promise<void> {
    this.socket.destroy();
    return this.closed;
  }
}

function parseServerFrame(
  buffer: Buffer,
): { fin: boolean; opcode: number; payload: Buffer; size: number } | undefined {
  if (buffer.length < 2) return undefined;
  const b0 = buffer[0] as number;
  const b1 = buffer[1] as number;
  let length = b1 & 0x7f;
  let offset = 2;
  if (length === 126) {
    if (buffer.length < 4) return undefined;
    length = buffer.readUInt16BE(2);
    offset = 4;
  } else if (length === 127) {
    if (buffer.length < 10) return undefined;
    length = Number(buffer.readBigUInt64BE(2));
    offset = 10;
  }
  if (b1 & 0x80) offset += 4; // note: servers do not mask, but skip a mask key if one is there.
  if (buffer.length < offset + length) return undefined;
  return {
    fin: (b0 & 0x80) !== 0,
    opcode: b0 & 0x0f,
    payload: buffer.subarray(offset, offset + length),
    size: offset + length,
  };
}

function maskedFrame(opcode: number, payload: Buffer): Buffer {
  const length = payload.length;
  const header = length < 126 ? Buffer.alloc(2) : length < 65_536 ? Buffer.alloc(4) : Buffer.alloc(10);
  header[0] = 0x80 | opcode;
  if (length < 126) {
    header[1] = 0x80 | length;
  } else if (length < 65_536) {
    header[1] = 0x80 | 126;
    header.writeUInt16BE(length, 2);
  } else {
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(length), 2);
  }
  const mask = randomBytes(4);
  const masked = Buffer.alloc(length);
  for (let i = 0; i < length; i++) masked[i] = (payload[i] as number) ^ (mask[i % 4] as number);
  return Buffer.concat([header, mask, masked]);
}

function rawToString(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/** A socket that only counts the Completion records it receives, see {@link openCountingCompletions}. */
export interface CountingSocket {
  readonly ws: WebSocket;
  /** Completion records received so far. */
  completions(): number;
}

/**
 * Opens `url` and sends the handshake request, then counts Completions without parsing or keeping them:
 * for floods of thousands of invocations, where keeping every message would skew memory figures.
 */
export async function openCountingCompletions(url: string): Promise<CountingSocket> {
  const ws = new WebSocket(socketUrl(url));
  let completions = 0;
  ws.on('message', (data: WebSocket.RawData) => {
    for (const text of data.toString().split(RS)) if (text.startsWith('{"type":3')) completions++;
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  ws.send(handshakeRequest());
  return { ws, completions: () => completions };
}

/** Sends `records` (formatted with {@link record}) in frames of `perFrame` records each. */
export function sendInFrames(ws: WebSocket, records: readonly string[], perFrame: number): void {
  for (let at = 0; at < records.length; at += perFrame) ws.send(records.slice(at, at + perFrame).join(''));
}
