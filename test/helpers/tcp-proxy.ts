import { createConnection, createServer, type Server, type Socket } from 'node:net';

/** How much of what the client and the server sent on a proxied connection {@link TcpProxy.routes} keeps. */
const ROUTE_REQUEST_CHARS = 4_096;
const ROUTE_RESPONSE_CHARS = 65_536;

/** One proxied TCP connection: the upstream it went to, and the start of what each side sent. */
export interface ProxyRoute {
  /** Index in the ports given to {@link TcpProxy.startRoundRobin} (0 for a single target). */
  upstream: number;
  /** The first bytes the client sent (latin1): an HTTP request line and headers. */
  request: string;
  /** The first bytes the server sent (latin1). */
  response: string;
}

/**
 * A TCP proxy in front of a server port, so that a test can cut a client's connection the way a network
 * does (no close frame), or keep a client away for a while, without any test-only code in the server.
 * In round-robin mode ({@link startRoundRobin}) it is a load balancer without affinity: each new TCP
 * connection goes to the next of several upstreams.
 */
export class TcpProxy {
  readonly #server: Server;
  readonly #targets: number[];
  #next = 0;
  /** Every proxied connection, in order of arrival. */
  readonly routes: ProxyRoute[] = [];
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

  private constructor(targets: number[]) {
    this.#targets = targets;
    this.#server = createServer((socket) => this.#onConnection(socket));
  }

  static start(targetPort: number): Promise<TcpProxy> {
    return TcpProxy.#listen([targetPort]);
  }

  /** A proxy that alternates every new TCP connection over `targetPorts`, in turn (no affinity). */
  static startRoundRobin(targetPorts: number[]): Promise<TcpProxy> {
    if (targetPorts.length === 0) throw new Error('Give at least one upstream port.');
    return TcpProxy.#listen(targetPorts);
  }

  static async #listen(targets: number[]): Promise<TcpProxy> {
    const proxy = new TcpProxy(targets);
    await new Promise<void>((resolve) => proxy.#server.listen(0, '127.0.0.1', resolve));
    const address = proxy.#server.address();
    proxy.port = typeof address === 'object' && address ? address.port : 0;
    return proxy;
  }

  /** Sends the next new TCP connection to upstream `index` (round-robin continues from there). */
  routeNextTo(index: number): void {
    this.#next = index;
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
    const index = this.#next++ % this.#targets.length;
    const upstream = createConnection({ port: this.#targets[index] as number, host: '127.0.0.1' });
    const route: ProxyRoute = { upstream: index, request: '', response: '' };
    this.routes.push(route);
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
      if (route.request.length < ROUTE_REQUEST_CHARS)
        route.request += chunk.toString('latin1', 0, ROUTE_REQUEST_CHARS);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (route.response.length < ROUTE_RESPONSE_CHARS) {
        route.response += chunk.toString('latin1', 0, ROUTE_RESPONSE_CHARS);
      }
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
