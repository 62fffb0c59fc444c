import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Logger, pino } from 'pino';
import { type Server as WsServer, WebSocketServer } from 'ws';
import type { Backplane, BackplaneHealth } from '../backplane/backplane.js';
import { type BackplaneKind, createBackplane, type RedisOption } from '../backplane/create-backplane.js';
import { type HubOptions, resolveHubOptions } from '../config.js';
import { RelayhubError } from '../errors.js';
import { type Authenticate, anonymous, type Principal } from './auth.js';
import {
  capConnectionsPerAddress,
  type HttpEdgeOptions,
  resolveHttpEdgeOptions,
  serverTimeouts,
} from './http-edge.js';
import type { HubContext, HubDefinition } from './hub.js';
import { DeferredRequest, type HubRequest, snapshotRequest } from './hub-request.js';
import { HubRuntime } from './hub-runtime.js';
import { HubWebSocket, WebSocketSet, WebSocketTransport } from '../transport/websocket.js';
import { availableTransports, maxPayloadBytes, serveHttpTransport } from './http-transports.js';
import { type CorsOptions, CorsPolicy } from './cors.js';
import { runChecks } from './health-checks.js';
import { type HubServerStats, hubMetrics, type MetricsCollector, toStats } from '../metrics/hub-metrics.js';
import {
  closeServer,
  listenMetrics,
  METRICS_PATH,
  metricsHandler,
  type MetricsOptions,
} from '../metrics/metrics-endpoint.js';
import { parseRequestTarget } from './request-target.js';
import { ConnectionTokens, connectionForToken } from './connection-token.js';
import { negotiateOnEndpoints } from '../backplane/endpoints/negotiate-on-endpoints.js';

export interface HubServerOptions extends Partial<HubOptions>, Partial<HttpEdgeOptions> {
  /**
   * Carries sends between instances: a backplane by name (`'memory'`, `'pubsub'`, `'streams'`, built
   * from {@link redis} and {@link channelPrefix}) or an instance. The server closes it when it closes.
   * @default 'memory' (one process)
   */
  backplane?: Backplane | BackplaneKind;
  /**
   * Where Redis is, for a backplane given by name: a URL (`'redis://host:6379'`) or a target in the
   * form the backplanes' `redis` option takes (`{ url }`; a Cluster where they support one).
   * @default 'redis://127.0.0.1:6379'
   */
  redis?: RedisOption;
  /**
   * Prefix of every Redis key and channel of a backplane given by name.
   * @default 'relayhub'
   */
  channelPrefix?: string;
  /**
   * Decides who a negotiate, WebSocket, SSE or long-polling request comes from; `null` refuses it with
   * 401 (empty body, as ASP.NET answers). Use `jwtAuthenticator({ secret })` for bearer JWTs. A hub's own
   * `authenticate` (in {@link HubServer.mapHub}) replaces it for that hub.
   * @default anonymous (everyone is welcome, nobody is a user)
   */
  authenticate?: Authenticate;
  /** @default pino at LOG_LEVEL (or 'info') */
  logger?: Logger;
  /**
   * Handles HTTP requests that are not for a hub (the app's own routes). Requests whose target does not
   * parse (or whose path has a malformed percent-encoding) are answered 400 before they reach it.
   * @default a 404 answer
   */
  fallback?: RequestListener;
  /**
   * `GET /metrics` in the Prometheus text format: `true` on the hub server's port, `{ port }` on its own
   * port, `false` not at all ({@link HubServer.metrics} still works).
   * @default true
   */
  metrics?: boolean | MetricsOptions;
  /**
   * Browser origins other than the server's own that may negotiate and open WebSockets (preflights are
   * answered). Cross-origin requests and WebSocket upgrades from origins not allowed get 403.
   * @default undefined (same origin only; clients that send no Origin header are not affected)
   */
  cors?: CorsOptions;
  /**
   * Extra checks for `GET /healthz` (e.g. `{ postgres: () => pool.query('SELECT 1') }`): one that
   * rejects (or takes over 2 s) makes the status `degraded` (503) and is reported with its error.
   * @default {}
   */
  healthChecks?: Record<string, () => Promise<unknown>>;
  /**
   * The key (at least 32 bytes) that signs connection tokens, the same on every instance: negotiate then
   * keeps nothing, and a WebSocket may open on any instance behind a load balancer without affinity (the
   * token carries the connection id, its user and an expiry of `negotiateTimeoutMs`). Server-Sent Events
   * and long polling still need affinity, and so does a stateful reconnect that should resume.
   * @default a random key of this process (a token opens a connection on this instance only)
   */
  connectionTokenSecret?: string;
}

/**
 * Serves hubs over HTTP and WebSockets: `POST <hub>/negotiate`, the WebSocket, Server-Sent Events and
 * long polling at `<hub>`, and `GET /healthz`. Map hubs with {@link mapHub}, then {@link listen};
 * {@link close} shuts down gracefully.
 */
export class HubServer {
  readonly #options: HubOptions;
  readonly #edge: HttpEdgeOptions;
  readonly #backplane: Backplane;
  readonly #authenticate: Authenticate;
  readonly #logger: Logger;
  readonly #fallback: RequestListener | undefined;
  /** By lower-cased path: hub paths match case-insensitively, as ASP.NET routing does. */
  readonly #hubs = new Map<string, MappedHub>();
  readonly #wss: WsServer<typeof HubWebSocket>;
  /** The open WebSockets (ws's own client tracking is off: it costs every socket a closure and more). */
  readonly #sockets: WebSocketSet;
  #http: Server | undefined;
  readonly #metrics: MetricsCollector;
  readonly #cors: CorsPolicy;
  readonly #healthChecks: Record<string, () => Promise<unknown>>;
  readonly #metricsOptions: boolean | MetricsOptions;
  readonly #tokens: ConnectionTokens;
  /** The `availableTransports` of every negotiate answer, as JSON (the options do not change). */
  readonly #transportsJson: string;
  #metricsServer: Server | undefined;
  #refusedSocket: (socket: Socket) => boolean = () => false;
  #started = false;
  #closing: Promise<void> | undefined;

  constructor(options: HubServerOptions = {}) {
    const {
      backplane,
      redis,
      channelPrefix,
      authenticate,
      logger,
      fallback,
      metrics,
      cors,
      healthChecks,
      connectionTokenSecret,
      headersTimeoutMs,
      requestTimeoutMs,
      keepAliveTimeoutMs,
      maxConnectionsPerAddress,
      ...hubOptions
    } = options;
    this.#options = resolveHubOptions(hubOptions);
    this.#edge = resolveHttpEdgeOptions({
      headersTimeoutMs,
      requestTimeoutMs,
      keepAliveTimeoutMs,
      maxConnectionsPerAddress,
    });
    // note: validated before the backplane is built, so that a bad option leaves nothing to close
    this.#cors = new CorsPolicy(cors);
    this.#tokens = new ConnectionTokens({
      secret: connectionTokenSecret,
      lifetimeMs: this.#options.negotiateTimeoutMs,
    });
    this.#logger = logger ?? pino({ level: process.env.LOG_LEVEL ?? 'info' });
    if (typeof backplane === 'object') {
      if (redis !== undefined || channelPrefix !== undefined) {
        throw new RelayhubError('ERR_CONFIG', 'redis and channelPrefix apply to a backplane given by name.', {
          remedy: "Pass them to the backplane's constructor, or use backplane: 'pubsub' | 'streams'.",
        });
      }
      this.#backplane = backplane;
    } else {
      this.#backplane = createBackplane(backplane ?? 'memory', {
        ...(redis !== undefined ? { redis } : {}),
        ...(channelPrefix !== undefined ? { channelPrefix } : {}),
        logger: this.#logger,
      });
    }
    this.#authenticate = authenticate ?? anonymous;
    this.#fallback = fallback;
    this.#metricsOptions = metrics ?? true;
    this.#healthChecks = healthChecks ?? {};
    this.#metrics = hubMetrics({
      hubs: () => [...this.#hubs.values()].map((mapped) => mapped.runtime),
      backplane: this.#backplane,
    });
    this.#transportsJson = JSON.stringify(availableTransports(this.#options));
    this.#sockets = new WebSocketSet(this.#options.maxBufferedBytesPerClient);
    this.#wss = new WebSocketServer({
      noServer: true,
      WebSocket: HubWebSocket,
      clientTracking: false,
      // note: pings are answered by the transport's shared listener (ws's keeps a closure per socket).
      autoPong: false,
      perMessageDeflate: false,
      // note: a frame may batch many records; each record is checked against maximumReceiveMessageSize.
      maxPayload: maxPayloadBytes(this.#options),
    });
  }

  /**
   * Mounts a hub at `path` (e.g. `/hubs/demo`; matched case-insensitively) and returns the context for
   * sending to it from anywhere. `definition.authenticate` / `definition.authorize` guard this hub only.
   */
  mapHub(path: string, definition: HubDefinition): HubContext {
    if (!/^\/[A-Za-z0-9._~\-/]*[^/]$/.test(path)) {
      throw new RelayhubError('ERR_CONFIG', `Hub path '${path}' is not valid.`, {
        remedy: "Use an absolute path without a trailing slash, such as '/hubs/chat'.",
      });
    }
    if (this.#hubs.has(path.toLowerCase())) {
      throw new RelayhubError('ERR_CONFIG', `A hub is already mapped at '${path}' (paths ignore case).`);
    }
    if (this.#started) throw new RelayhubError('ERR_CONFIG', 'Map every hub before listen().');
    const runtime = new HubRuntime(path, definition, this.#options, this.#logger.child({ hub: path }));
    runtime.onTokenForgotten = (token) => this.#tokens.spend(token);
    this.#hubs.set(path.toLowerCase(), {
      runtime,
      authenticate: definition.authenticate ?? this.#authenticate,
      authorize: definition.authorize,
    });
    return runtime;
  }

  /** The hub mapped at `path`, for sending from outside hub methods. */
  hub(path: string): HubContext {
    const mapped = this.#hubs.get(path.toLowerCase());
    if (!mapped) throw new RelayhubError('ERR_CONFIG', `No hub is mapped at '${path}'.`);
    return mapped.runtime;
  }

  /**
   * Starts the hubs on the backplane and listens; resolves with the bound address (use port 0 in tests).
   * The server it creates has the header/request/keep-alive timeouts of {@link HttpEdgeOptions}.
   */
  async listen(port: number, host = '0.0.0.0'): Promise<AddressInfo> {
    const server = createServer(serverTimeouts(this.#edge), (req, res) => this.#onRequest(req, res));
    await this.attach(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  /**
   * Starts the hubs and handles WebSocket upgrades of an HTTP server the app created, with the
   * per-address connection cap. The app owns that server's timeouts: set `headersTimeout`,
   * `requestTimeout` and `keepAliveTimeout` (and `connectionsCheckingInterval` at creation) as
   * {@link HttpEdgeOptions} describes, or Node's defaults (60 s for headers) apply.
   */
  async attach(server: Server): Promise<void> {
    if (this.#started) throw new RelayhubError('ERR_CONFIG', 'The server has already started.');
    this.#started = true;
    this.#http = server;
    this.#refusedSocket = capConnectionsPerAddress(server, this.#edge.maxConnectionsPerAddress);
    for (const { runtime } of this.#hubs.values()) await runtime.start(this.#backplane);
    const metrics = this.#metricsOptions;
    if (typeof metrics === 'object' && metrics.port !== undefined) {
      this.#metricsServer = (await listenMetrics(this.#metrics, metrics.port, metrics.host)).server;
    }
    server.on('upgrade', (req, socket, head) => {
      this.#onUpgrade(req, socket, head).catch((error: unknown) => {
        this.#logger.error({ err: error }, 'upgrade failed');
        rejectUpgrade(socket, 500, 'Internal Server Error');
      });
    });
  }

  /** The request handler for the app's own server (when it uses {@link attach}). */
  readonly handleRequest: RequestListener = (req, res) => this.#onRequest(req, res);

  /** The backplane's health: whether sends reach other instances, and how many may have been missed. */
  backplaneHealth(): BackplaneHealth {
    return this.#backplane.health();
  }

  /** This instance's metrics in the Prometheus text format (what `GET /metrics` answers). */
  metrics(): Promise<string> {
    return this.#metrics.metrics();
  }

  /** This instance's figures as JSON (connections, counters, backplane, reliable lane), sampled now. */
  async stats(): Promise<HubServerStats> {
    return toStats(await this.#metrics.snapshot(), this.#backplane.kind);
  }

  /** The address of the separate metrics port, when `metrics: { port }` was given. */
  get metricsAddress(): AddressInfo | undefined {
    return (this.#metricsServer?.address() as AddressInfo | null) ?? undefined;
  }

  get connectionCount(): number {
    let count = 0;
    for (const { runtime } of this.#hubs.values()) count += runtime.connectionCount;
    return count;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.#refusedSocket(req.socket)) return void res.destroy();
    if (this.#cors.handle(req, res)) return;
    const url = parseRequestTarget(req);
    if (!url) {
      res.setHeader('Connection', 'close');
      return json(res, 400, { error: 'Bad request target.' });
    }
    const path = url.pathname.toLowerCase();
    if (path === '/healthz' && req.method === 'GET') {
      void runChecks(this.#healthChecks).then((checks) => {
        const backplane = this.#backplane.health();
        const failing = Object.values(checks).some((c) => !c.ok);
        const status = this.#closing
          ? 'closing'
          : backplane.status === 'ready' && !failing
            ? 'ok'
            : 'degraded';
        json(res, status === 'ok' ? 200 : 503, {
          status,
          connections: this.connectionCount,
          backplane: { kind: this.#backplane.kind, ...backplane },
          ...(Object.keys(checks).length > 0 ? { checks } : {}),
        });
      });
      return;
    }
    if (path === METRICS_PATH && this.#metricsOptions !== false && !this.#metricsServer) {
      return metricsHandler(() => this.#metrics.metrics(), this.#metrics.registry.contentType)(req, res);
    }
    if (path.endsWith('/negotiate')) {
      const hub = this.#hubs.get(path.slice(0, -'/negotiate'.length));
      if (hub) {
        this.#negotiate(hub, req, res, url).catch((error: unknown) => {
          this.#logger.error({ err: error }, 'negotiate failed');
          if (!res.headersSent) json(res, 500, { error: 'Internal server error.' });
        });
        return;
      }
    }
    const mapped = this.#hubs.get(path);
    if (mapped) {
      this.#onTransportRequest(mapped, req, res, url).catch((error: unknown) => {
        this.#logger.error({ err: error }, 'transport request failed');
        if (!res.headersSent) json(res, 500, { error: 'Internal server error.' });
      });
      return;
    }
    if (!this.#fallback) return json(res, 404, { error: 'Not found.' });
    const failed = (error: unknown) => {
      this.#logger.error({ err: error }, 'fallback request handler failed');
      if (!res.headersSent) json(res, 500, { error: 'Internal server error.' });
      else res.destroy();
    };
    // note: a fallback that throws, or an async one that rejects (an unhandled rejection), would
    // otherwise take the whole process down.
    try {
      const result: unknown = this.#fallback(req, res);
      if (result instanceof Promise) result.catch(failed);
    } catch (error) {
      failed(error);
    }
  }

  async #negotiate(mapped: MappedHub, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (req.method !== 'POST') {
      res.setHeader('Allow', 'POST');
      return json(res, 405, { error: 'Negotiate takes POST.' });
    }
    // note: negotiate reads no body; one that is sent anyway is not drained (up to requestTimeoutMs of
    // upload): the socket closes after the answer.
    if (
      req.headers['content-length'] !== '0' &&
      (req.headers['content-length'] || req.headers['transfer-encoding'])
    ) {
      res.setHeader('Connection', 'close');
    }
    if (this.#closing) return json(res, 503, { error: 'The server is shutting down.' });
    // note: no snapshot is kept for a negotiated connection (ctx.request is the upgrade's, and a pending
    // negotiate must stay cheap); authorize gets one only when the hub has it.
    const access = await this.#admit(mapped, req, url, () => snapshotRequest(req, url));
    if (access.status !== 200) {
      // note: an empty body, as ASP.NET answers: the official client then reports
      // "Unauthorized: Status code '401'" (a body would become the error text).
      if (access.status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
      res.writeHead(access.status, { 'Content-Length': 0 });
      return void res.end();
    }
    // note: several Redis endpoints (issue 8): the router may redirect, refuse (503) or answer itself.
    if (await negotiateOnEndpoints(this.#backplane, req, res, url)) return;
    const { principal } = access;
    const hub = mapped.runtime;
    const version = Number(queryParam(url, 'negotiateVersion') ?? 0);
    const wantsStateful = queryParam(url, 'useStatefulReconnect') === 'true';
    const stateful = wantsStateful && this.#options.allowStatefulReconnects && version >= 1;
    if (version < 1) {
      // note: v0 has no token (the id is the secret), so it stays a connection of this instance.
      const { connectionId } = hub.createConnection(principal, { statefulReconnect: false, v0: true });
      return json(res, 200, {
        negotiateVersion: 0,
        connectionId,
        availableTransports: availableTransports(this.#options),
      });
    }
    // ---- connection token: v1 negotiate keeps nothing; the signed token opens the connection anywhere ----
    const { connectionId, token } = this.#tokens.issue(principal.userId, stateful);
    // note: the same JSON as stringifying the answer, with its constant part encoded once per server.
    jsonText(
      res,
      200,
      `{"negotiateVersion":1,"connectionId":${JSON.stringify(connectionId)},"connectionToken":` +
        `${JSON.stringify(token)},"availableTransports":${this.#transportsJson}` +
        `${stateful ? ',"useStatefulReconnect":true' : ''}}`,
    );
  }

  /** `GET`/`POST`/`DELETE <hub>?id=`: Server-Sent Events and long polling. */
  async #onTransportRequest(
    mapped: MappedHub,
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
  ): Promise<void> {
    // note: no 503 while closing: the long polls that collect the last Close messages must get through; new
    // transports cannot start, the connections having ended.
    const request = () => snapshotRequest(req, url);
    // note: every request of an HTTP transport is authenticated and authorized, as in ASP.NET.
    const access = await this.#admit(mapped, req, url, request);
    if (access.status !== 200) {
      if (access.status === 401) res.setHeader('WWW-Authenticate', 'Bearer');
      res.writeHead(access.status, { 'Content-Length': 0 });
      return void res.end();
    }
    serveHttpTransport(mapped.runtime, this.#tokens, req, res, url, access.principal, request);
  }

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', destroySocket);
    if (this.#refusedSocket(req.socket)) return void socket.destroy();
    const url = parseRequestTarget(req);
    if (!url) return rejectUpgrade(socket, 400, 'Bad Request');
    const mapped = this.#hubs.get(url.pathname.toLowerCase());
    if (!mapped || !this.#options.transports.includes('WebSockets')) {
      return rejectUpgrade(socket, 404, 'Not Found');
    }
    if (!this.#cors.allows(req)) return rejectUpgrade(socket, 403, 'Forbidden');
    if (this.#closing) return rejectUpgrade(socket, 503, 'Service Unavailable');
    // note: taken on first use (authorize, ctx.request): the connection keeps it for its whole life.
    const request = new DeferredRequest(req, url);
    const access = await this.#admit(mapped, req, url, () => request.get());
    if (access.status !== 200) {
      return rejectUpgrade(socket, access.status, access.status === 401 ? 'Unauthorized' : 'Forbidden');
    }
    const { principal } = access;
    const hub = mapped.runtime;
    const token = url.searchParams.get('id');
    let connection;
    if (token !== null) {
      // note: this instance's connection, or one opened from a signed token issued by any instance.
      const found = connectionForToken(hub, this.#tokens, token, principal, {
        create: true,
        anyInstance: true,
      });
      if (found === 404) return rejectUpgrade(socket, 404, 'Not Found');
      if (found === 403) return rejectUpgrade(socket, 403, 'Forbidden');
      connection = found;
      if (!connection.acceptsSocket) return rejectUpgrade(socket, 409, 'Conflict');
      if (connection.userId !== principal.userId) return rejectUpgrade(socket, 403, 'Forbidden');
    } else {
      connection = hub.createConnection(principal, { statefulReconnect: false });
    }
    const bound = connection;
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      // note: the WebSocket has its own 'error' listener now (which destroys the socket too).
      socket.off('error', destroySocket);
      const transport = new WebSocketTransport(ws, this.#sockets);
      if (!bound.acceptsSocket || this.#closing) return transport.refuse(1001);
      bound.request = request;
      bound.attach(transport);
    });
  }

  /** The hub's authenticate (or the server's), then its authorize; a hook that throws refuses. */
  async #admit(
    mapped: MappedHub,
    req: IncomingMessage,
    url: URL,
    request: () => HubRequest,
  ): Promise<{ status: 200; principal: Principal } | { status: 401 | 403 }> {
    let principal: Principal | null;
    try {
      principal = await mapped.authenticate(req, url);
    } catch (error) {
      this.#logger.warn({ err: error }, 'authenticate hook threw; refusing the request');
      return { status: 401 };
    }
    if (!principal) return { status: 401 };
    if (!mapped.authorize) return { status: 200, principal };
    try {
      if (await mapped.authorize(principal, request())) return { status: 200, principal };
    } catch (error) {
      this.#logger.warn({ err: error }, 'authorize hook threw; refusing the request');
    }
    return { status: 403 };
  }

  /**
   * Graceful shutdown: refuses new connections, sends every client a Close that allows it to reconnect
   * (elsewhere), leaves the backplane and stops listening. Idempotent.
   */
  close(reason = 'The server is shutting down.'): Promise<void> {
    this.#closing ??= (async () => {
      const errors: unknown[] = [];
      const attempt = async (step: () => Promise<unknown> | undefined) => {
        try {
          await step();
        } catch (error) {
          errors.push(error);
        }
      };
      for (const { runtime } of this.#hubs.values()) await attempt(() => runtime.close(reason));
      await attempt(() => this.#backplane.close());
      await attempt(
        () =>
          new Promise<void>((resolve) => {
            this.#sockets.terminateAll();
            this.#wss.close(() => resolve());
          }),
      );
      const metricsServer = this.#metricsServer;
      if (metricsServer) await attempt(() => closeServer(metricsServer));
      const http = this.#http;
      if (http?.listening) {
        await attempt(
          () =>
            new Promise<void>((resolve) => {
              http.close(() => resolve());
              http.closeAllConnections();
            }),
        );
      }
      if (errors.length > 0) throw new AggregateError(errors, 'Some resources failed to close.');
    })();
    return this.#closing;
  }
}

interface MappedHub {
  runtime: HubRuntime;
  authenticate: Authenticate;
  authorize: HubDefinition['authorize'];
}

/** Query keys are matched case-insensitively, as ASP.NET does. */
function queryParam(url: URL, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of url.searchParams) if (key.toLowerCase() === wanted) return value;
  return undefined;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  jsonText(res, status, JSON.stringify(body));
}

function jsonText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/** A shared listener (not a closure per socket: an upgraded socket keeps it for its whole life). */
function destroySocket(this: Duplex): void {
  this.destroy();
}

function rejectUpgrade(socket: Duplex, status: number, text: string): void {
  if (socket.destroyed) return;
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}
