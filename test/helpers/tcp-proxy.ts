import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy in front of a server port, so that a test can cut a client's connection the way a network
 * does (no close frame), or keep a client away for a while, without any test-only code in the server.
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #targetPort: number;
  /** Each proxied connection: the client's socket and the server's. */
  readonly #pairs = new Set<{ client: Socket; upstream: Socket; halfOpen: boolean }>();
  /** While holding, new client connections are accepted but not forwarded until {@link release}. */
  #held: Socket[] | undefined;
  port = 0;
  /** Connections accepted so far. */
  accepted = 0;
  /** Every byte clients sent through the proxy, as text (HTTP requests are readable; frames are masked). */
  clientText = '';
  /** Server-side sockets whose client side was cut by {@link dropClientSides}. */
  readonly #orphans = new Set<Socket>();
  /** What each client sent, per connection. */
  readonly #sent: Buffer[][] = [];

  private constructor(targetPort: number) {
    this.#targetPort = targetPort;
    this.#server = createServer((socket) => this.#onConnection(socket));
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const proxy = new TcpProxy(targetPort);
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    const address = proxy.#server.address();
    proxy.port = typeof address === 'object' && address ? address.port : 0;
    return proxy;
  }

  /** `http://127.0.0.1:<proxy port><path>` */
  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  #onConnection(socket: Socket): void {
    this.accepted++;
    socket.on('error', () => socket.destroy());
    if (this.#held) {
      socket.pause();
      this.#held.push(socket);
      return;
    }
    this.#forward(socket);
  }

  #forward(client: Socket): void {
    const upstream = createConnection({ port: this.#targetPort, host: '127.0.0.1' });
    const pair = { client, upstream, halfOpen: false };
    this.#pairs.add(pair);
    upstream.on('error', () => upstream.destroy());
    const forget = () => {
      client.destroy();
      if (!pair.halfOpen) upstream.destroy();
      this.#pairs.delete(pair);
    };
    client.on('close', forget);
    upstream.on('close', forget);
    const sent: Buffer[] = [];
    this.#sent.push(sent);
    client.on('data', (chunk: Buffer) => {
      sent.push(chunk);
      this.clientText += chunk.toString('latin1');
    });
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  }

  /** The text frames clients sent over WebSockets through the proxy (unmasked), connection by connection. */
  clientWebSocketTexts(): string[] {
    const texts: string[] = [];
    for (const chunks of this.#sent) {
      const data = Buffer.concat(chunks);
      const headerEnd = data.indexOf('\r\n\r\n');
      if (headerEnd < 0) continue;
      if (!/^upgrade: websocket$/im.test(data.subarray(0, headerEnd).toString('latin1'))) continue;
      let at = headerEnd + 4;
      while (at + 2 <= data.length) {
        const opcode = (data[at] as number) & 0x0f;
        const second = data[at + 1] as number;
        let length = second & 0x7f;
        let payloadAt = at + 2;
        if (length === 126) {
          if (payloadAt + 2 > data.length) break;
          length = data.readUInt16BE(payloadAt);
          payloadAt += 2;
        } else if (length === 127) {
          if (payloadAt + 8 > data.length) break;
          length = Number(data.readBigUInt64BE(payloadAt));
          payloadAt += 8;
        }
        const mask = (second & 0x80) !== 0 ? data.subarray(payloadAt, payloadAt + 4) : undefined;
        if (mask) payloadAt += 4;
        if (payloadAt + length > data.length) break;
        const payload = Buffer.from(data.subarray(payloadAt, payloadAt + length));
        if (mask)
          for (let i = 0; i < payload.length; i++)
            payload[i] = (payload[i] as number) ^ (mask[i % 4] as number);
        if (opcode === 1) texts.push(payload.toString('utf8'));
        at = payloadAt + length;
      }
    }
    return texts;
  }

  /** Cuts every proxied connection on both sides at once (no WebSocket close frame). */
  dropAll(): void {
    for (const pair of [...this.#pairs]) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
  }

  /**
   * Cuts the clients' side only: the server keeps its socket open and does not notice (a half-open
   * connection, as when the client's network changes).
   */
  dropClientSides(): void {
    for (const pair of [...this.#pairs]) {
      pair.halfOpen = true;
      this.#orphans.add(pair.upstream);
      pair.client.destroy();
    }
  }

  /** Accept new connections but forward none of them until {@link release}. */
  hold(): void {
    this.#held ??= [];
  }

  /** Forwards the connections that waited, and every new one. */
  release(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const socket of held) if (!socket.destroyed) this.#forward(socket);
  }

  get heldCount(): number {
    return this.#held?.filter((s) => !s.destroyed).length ?? 0;
  }

  async close(): Promise<void> {
    for (const socket of this.#orphans) socket.destroy();
    for (const socket of this.#held ?? []) socket.destroy();
    this.#held = undefined;
    this.dropAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
