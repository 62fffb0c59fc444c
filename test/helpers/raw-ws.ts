import WebSocket from 'ws';

/** The JSON hub protocol's record separator. */
export const RS = '\x1e';

/** A parsed hub protocol message as it arrived (fields by their wire names). */
export type WireMessage = Record<string, unknown> & { type?: number };

export interface NegotiateResult {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
}

/** `POST {hubUrl}/negotiate{query}` with `fetch`, as the official client does (empty body). */
export async function negotiate(
  hubUrl: string,
  query = '?negotiateVersion=1',
  init: { method?: string; headers?: Record<string, string> } = {},
): Promise<NegotiateResult> {
  const response = await fetch(`${hubUrl}/negotiate${query}`, {
    method: init.method ?? 'POST',
    headers: init.headers ?? {},
  });
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    body = { raw: text };
  }
  return { status: response.status, headers: response.headers, body };
}

/** `http://` → `ws://`. */
export const wsUrl = (httpUrl: string): string => httpUrl.replace(/^http/, 'ws');

/**
 * Opens a WebSocket and resolves with the HTTP status of the upgrade answer: 101 when it opened (the
 * socket is then closed again), otherwise the refusal's status code.
 */
export function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(url), { headers });
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

/**
 * A hand-written hub protocol client on the `ws` package, for what the official client does not let a test
 * see: every message as it arrives, and frames the official client would never send.
 */
export class RawClient {
  readonly messages: WireMessage[] = [];
  /** Close code once the socket closed. */
  closeCode: number | undefined;
  handshake: WireMessage | undefined;

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => this.#onFrame(data.toString()));
    ws.on('close', (code) => {
      this.closeCode = code;
    });
  }

  /** Opens `url` (http or ws) and completes the handshake (json, `version`). */
  static async open(
    url: string,
    options: { headers?: Record<string, string>; version?: number } = {},
  ): Promise<RawClient> {
    const ws = new WebSocket(wsUrl(url), { headers: options.headers ?? {} });
    const client = new RawClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('unexpected-response', (_req, res) =>
        reject(new Error(`upgrade refused with ${res.statusCode ?? '?'}`)),
      );
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ protocol: 'json', version: options.version ?? 1 }) + RS);
    await client.waitForHandshake();
    return client;
  }

  #onFrame(frame: string): void {
    for (const record of frame.split(RS)) {
      if (record === '') continue;
      const message = JSON.parse(record) as WireMessage;
      if (!this.handshake) this.handshake = message;
      else this.messages.push(message);
    }
  }

  async waitForHandshake(timeoutMs = 5_000): Promise<WireMessage> {
    const deadline = Date.now() + timeoutMs;
    while (!this.handshake) {
      if (Date.now() > deadline || this.closeCode !== undefined) throw new Error('no handshake response');
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return this.handshake;
  }

  /** Sends hub messages as one frame (one record each). */
  send(...messages: WireMessage[]): void {
    this.ws.send(messages.map((m) => JSON.stringify(m) + RS).join(''));
  }

  close(): void {
    this.ws.terminate();
  }
}
