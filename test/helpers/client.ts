import {
  type HubConnection,
  HubConnectionBuilder,
  HttpTransportType,
  type IHttpConnectionOptions,
  type IRetryPolicy,
  LogLevel,
} from '@microsoft/signalr';
import { MessagePackHubProtocol } from '@microsoft/signalr-protocol-msgpack';

export interface ClientOptions {
  /** Bearer token (sent as `Authorization: Bearer`). */
  token?: string;
  skipNegotiation?: boolean;
  /** `withAutomaticReconnect` with these delays (ms). */
  reconnectDelays?: number[];
  statefulReconnect?: boolean | { bufferSize: number };
  serverTimeoutMs?: number;
  keepAliveIntervalMs?: number;
  /** Restricts the client to one transport (default: the client's choice, WebSockets first). */
  transport?: HttpTransportType;
  /** The hub protocol (default json). */
  protocol?: 'json' | 'messagepack';
}

/** Builds an official @microsoft/signalr client for `url` (not started). */
export function buildClient(url: string, options: ClientOptions = {}): HubConnection {
  const http: IHttpConnectionOptions = { logger: LogLevel.None };
  if (options.token) http.accessTokenFactory = () => options.token as string;
  if (options.transport !== undefined) http.transport = options.transport;
  if (options.skipNegotiation) {
    http.skipNegotiation = true;
    http.transport = HttpTransportType.WebSockets;
  }
  let builder = new HubConnectionBuilder().withUrl(url, http).configureLogging(LogLevel.None);
  if (options.protocol === 'messagepack') builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (options.reconnectDelays) {
    const delays = options.reconnectDelays;
    const policy: IRetryPolicy = {
      nextRetryDelayInMilliseconds: (ctx) =>
        delays[Math.min(ctx.previousRetryCount, delays.length - 1)] ?? null,
    };
    builder = builder.withAutomaticReconnect(policy);
  }
  if (options.statefulReconnect) {
    builder = builder.withStatefulReconnect(
      typeof options.statefulReconnect === 'object' ? options.statefulReconnect : undefined,
    );
  }
  if (options.serverTimeoutMs) builder = builder.withServerTimeout(options.serverTimeoutMs);
  if (options.keepAliveIntervalMs) builder = builder.withKeepAliveInterval(options.keepAliveIntervalMs);
  return builder.build();
}

/** Builds and starts a client; stop every client you start (see {@link ClientPool}). */
export async function connect(url: string, options: ClientOptions = {}): Promise<HubConnection> {
  const connection = buildClient(url, options);
  await connection.start();
  return connection;
}

/** Collects clients so that a test can stop all of them in afterEach. */
export class ClientPool {
  readonly #clients: HubConnection[] = [];

  async connect(url: string, options: ClientOptions = {}): Promise<HubConnection> {
    const connection = buildClient(url, options);
    this.#clients.push(connection);
    await connection.start();
    return connection;
  }

  add(connection: HubConnection): HubConnection {
    this.#clients.push(connection);
    return connection;
  }

  async stopAll(): Promise<void> {
    await Promise.allSettled(this.#clients.splice(0).map((c) => c.stop()));
  }
}

/** Records every call of a client method, e.g. `message(from, text)`. */
export function record(connection: HubConnection, target: string): unknown[][] {
  const calls: unknown[][] = [];
  connection.on(target, (...args: unknown[]) => {
    calls.push(args);
  });
  return calls;
}
