import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type Logger, pino } from 'pino';
import { WebSocketServer } from 'ws';
import type { Backplane, BackplaneHealth } from '../backplane/backplane.js';
import { type BackplaneKind, createBackplane, type RedisOption } from '../backplane/create-backplane.js';
import { type HubOptions, resolveHubOptions } from '../config.js';
import { RelayhubError } from '../errors.js';
import { type Authenticate, anonymous, type Principal } from './auth.js';
import type { HubContext, HubDefinition } from './hub.js';
import { HubRuntime } from './hub-runtime.js';
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

export interface HubServerOptions extends Partial<HubOptions> {
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
   * Decides who a negotiate or WebSocket request comes from; `null` refuses it with 401.
   * Use `jwtAuthenticator({ secret })` for bearer JWTs.
   * @default anonymous (everyone is welcome, nobody is a user)
   */
  authenticate?: Authenticate;
  /** @default pino at LOG_LEVEL (or 'info') */
  logger?: Logger;
  /**
   * Handles HTTP requests that are not for a hub (the app's own routes).
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
}

const MIN_FRAME_BYTES = 1 << 20;

/**
 * Serves hubs over HTTP and WebSockets: `POST <hub>/negotiate`, the WebSocket at `<hub>`, and
 * `GET /healthz`. Map hubs with {@link mapHub}, then {@link listen}; {@link close} shuts down gracefully.
 */
export class HubServer {
  readonly #options: HubOptions;
  readonly #backplane: Backplane;
  readonly #authenticate: Authenticate;
  readonly #logger: Logger;
  readonly #fallback: RequestListener | undefined;
  readonly #hubs = new Map<string, HubRuntime>();
  readonly #wss: WebSocketServer;
  #http: Server | undefined;
  readonly #metrics: MetricsCollector;
  readonly #cors: CorsPolicy;
  readonly #healthChecks: Record<string, () => Promise<unknown>>;
  readonly #metricsOptions: boolean | MetricsOptions;
  #metricsServer: Server | undefined;
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
      ...hubOptions
    } = options;
    this.#options = resolveHubOptions(hubOptions);
    // note: validated before the backplane is built, so that a bad option leaves nothing to close
    this.#cors = new CorsPolicy(cors);
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
    this.#metrics = hubMetrics({ hubs: () => this.#hubs.values(), backplane: this.#backplane });
    this.#wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      // note: a frame may batch many records; each record is checked against maximumReceiveMessageSize.
      maxPayload: Math.max(this.#options.maximumReceiveMessageSize * 4, MIN_FRAME_BYTES),
    });
  }

  /** Mounts a hub at `path` (e.g. `/hubs/demo`) and returns the context for sending to it from anywhere. */
  mapHub(path: string, definition: HubDefinition): HubContext {
    if (!/^\/[A-Za-z0-9._~\-/]*[^/]$/.test(path)) {
      throw new RelayhubError('ERR_CONFIG', `Hub path '${path}' is not valid.`, {
        remedy: "Use an absolute path without a trailing slash, such as '/hubs/chat'.",
      });
    }
    if (this.#hubs.has(path)) throw new RelayhubError('ERR_CONFIG', `A hub is already mapped at '${path}'.`);
    if (this.#started) throw new RelayhubError('ERR_CONFIG', 'Map every hub before listen().');
    const runtime = new HubRuntime(path, definition, this.#options, this.#logger.child({ hub: path }));
    this.#hubs.set(path, runtime);
    return runtime;
  }

  /** The hub mapped at `path`, for sending from outside hub methods. */
  hub(path: string): HubContext {
    const runtime = this.#hubs.get(path);
    if (!runtime) throw new RelayhubError('ERR_CONFIG', `No hub is mapped at '${path}'.`);
    return runtime;
  }

  /** Starts the hubs on the backplane and listens; resolves with the bound address (use port 0 in tests). */
  async listen(port: number, host = '0.0.0.0'): Promise<AddressInfo> {
    const server = createServer((req, res) => this.#onRequest(req, res));
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

  /** Starts the hubs and handles WebSocket upgrades of an HTTP server the app created. */
  async attach(server: Server): Promise<void> {
    if (this.#started) throw new RelayhubError('ERR_CONFIG', 'The server has already started.');
    this.#started = true;
    this.#http = server;
    for (const hub of this.#hubs.values()) await hub.start(this.#backplane);
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
    for (const hub of this.#hubs.values()) count += hub.connectionCount;
    return count;
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    if (this.#cors.handle(req, res)) return;
    const url = requestUrl(req);
    if (url.pathname === '/healthz' && req.method === 'GET') {
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
    if (url.pathname === METRICS_PATH && this.#metricsOptions !== false && !this.#metricsServer) {
      return metricsHandler(() => this.#metrics.metrics(), this.#metrics.registry.contentType)(req, res);
    }
    if (url.pathname.endsWith('/negotiate')) {
      const hub = this.#hubs.get(url.pathname.slice(0, -'/negotiate'.length));
      if (hub) {
        this.#negotiate(hub, req, res, url).catch((error: unknown) => {
          this.#logger.error({ err: error }, 'negotiate failed');
          if (!res.headersSent) json(res, 500, { error: 'Internal server error.' });
        });
        return;
      }
    }
    if (this.#hubs.has(url.pathname)) {
      return json(res, 400, {
        error: 'This hub accepts WebSocket connections only (no SSE or long polling).',
      });
    }
    if (this.#fallback) return void this.#fallback(req, res);
    json(res, 404, { error: 'Not found.' });
  }

  async #negotiate(hub: HubRuntime, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    if (req.method !== 'POST') {
      res.setHeader('Allow', 'POST');
      return json(res, 405, { error: 'Negotiate takes POST.' });
    }
    if (this.#closing) return json(res, 503, { error: 'The server is shutting down.' });
    const principal = await this.#authenticateRequest(req, url);
    if (!principal) {
      res.setHeader('WWW-Authenticate', 'Bearer');
      return json(res, 401, { error: 'Unauthorized.' });
    }
    const version = Number(queryParam(url, 'negotiateVersion') ?? 0);
    const wantsStateful = queryParam(url, 'useStatefulReconnect') === 'true';
    const stateful = wantsStateful && this.#options.allowStatefulReconnects && version >= 1;
    const connection = hub.createConnection(principal, { statefulReconnect: stateful, v0: version < 1 });
    const transports = [{ transport: 'WebSockets', transferFormats: ['Text'] }];
    json(
      res,
      200,
      version >= 1
        ? {
            negotiateVersion: 1,
            connectionId: connection.connectionId,
            connectionToken: connection.token,
            availableTransports: transports,
            ...(stateful ? { useStatefulReconnect: true } : {}),
          }
        : { negotiateVersion: 0, connectionId: connection.connectionId, availableTransports: transports },
    );
  }

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    socket.on('error', () => socket.destroy());
    const url = requestUrl(req);
    const hub = this.#hubs.get(url.pathname);
    if (!hub) return rejectUpgrade(socket, 404, 'Not Found');
    if (!this.#cors.allows(req)) return rejectUpgrade(socket, 403, 'Forbidden');
    if (this.#closing) return rejectUpgrade(socket, 503, 'Service Unavailable');
    const principal = await this.#authenticateRequest(req, url);
    if (!principal) return rejectUpgrade(socket, 401, 'Unauthorized');
    const token = url.searchParams.get('id');
    let connection = token === null ? undefined : hub.connectionByToken(token);
    if (token !== null) {
      if (!connection) return rejectUpgrade(socket, 404, 'Not Found');
      if (!connection.acceptsSocket) return rejectUpgrade(socket, 409, 'Conflict');
      if (connection.userId !== principal.userId) return rejectUpgrade(socket, 403, 'Forbidden');
    } else {
      connection = hub.createConnection(principal, { statefulReconnect: false });
    }
    const bound = connection;
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      if (!bound.acceptsSocket || this.#closing) {
        ws.close(1001);
        return;
      }
      bound.attach(ws);
    });
  }

  async #authenticateRequest(req: IncomingMessage, url: URL): Promise<Principal | null> {
    try {
      return await this.#authenticate(req, url);
    } catch (error) {
      this.#logger.warn({ err: error }, 'authenticate hook threw; refusing the request');
      return null;
    }
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
      for (const hub of this.#hubs.values()) await attempt(() => hub.close(reason));
      await attempt(() => this.#backplane.close());
      await attempt(
        () =>
          new Promise<void>((resolve) => {
            for (const ws of this.#wss.clients) ws.terminate();
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

function requestUrl(req: IncomingMessage): URL {
  return new URL(req.url ?? '/', 'http://localhost');
}

/** Query keys are matched case-insensitively, as ASP.NET does. */
function queryParam(url: URL, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [key, value] of url.searchParams) if (key.toLowerCase() === wanted) return value;
  return undefined;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function rejectUpgrade(socket: Duplex, status: number, text: string): void {
  if (socket.destroyed) return;
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}
