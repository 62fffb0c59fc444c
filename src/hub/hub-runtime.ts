import type { Logger } from 'pino';
import type {
  Audience,
  Backplane,
  HubChannel,
  Interest,
  LocalHub,
  ReliableLane,
  ReliableMetrics,
} from '../backplane/backplane.js';
import { groupNameProblem } from '../redis/keys.js';
import type { HubOptions } from '../config.js';
import { HubError, RelayhubError } from '../errors.js';
import { MessageType } from '../protocol/messages.js';
import { SharedMessage } from '../protocol/shared-message.js';
import type { Principal } from './auth.js';
import {
  type CallerClients,
  type ClientSink,
  callerClients,
  type GroupManager,
  type HubClients,
  hubClients,
} from './clients.js';
import { Connection, type ConnectionHost } from './connection.js';
import type { HubContext, HubDefinition } from './hub.js';
import { type ReliableClients, reliableClients } from './reliable-clients.js';
import { LocalRegistry } from './local-registry.js';
import { type SlotStore, TimerWheel } from './timer-wheel.js';
import { countInvocations, HubCounters } from '../metrics/hub-stats.js';
import { newId } from './random-ids.js';

/** How long shutdown waits for long-polling clients to collect their Close message. */
const DRAIN_LONG_POLLS_MS = 2_000;

/** Waits (bounded) until every long-polling connection's last data was polled. */
async function drainLongPolls(connections: readonly Connection[]): Promise<void> {
  const drains = connections.flatMap((c) => (c.transport?.drained ? [c.transport.drained] : []));
  if (drains.length === 0) return;
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(drains),
    new Promise((resolve) => (timer = setTimeout(resolve, DRAIN_LONG_POLLS_MS))),
  ]);
  clearTimeout(timer);
}

/** How often the timer wheel ticks: a quarter of the shortest timeout, between 10 ms and 1 s. */
function wheelResolutionMs(o: HubOptions): number {
  const shortest = Math.min(
    o.keepAliveIntervalMs,
    o.clientTimeoutMs,
    o.handshakeTimeoutMs,
    o.negotiateTimeoutMs,
  );
  return Math.min(1_000, Math.max(10, Math.floor(shortest / 4)));
}

/** The timer wheel keeps each connection's slot on the connection, not in a map. */
const CONNECTION_SLOTS: SlotStore<Connection> = {
  get: (connection) => connection.wheelSlot,
  set: (connection, slot) => (connection.wheelSlot = slot),
  delete: (connection) => (connection.wheelSlot = undefined),
};

/**
 * One hub mounted at one path on this instance: its connections, their timer wheel, and the bridge between
 * the server API (`clients`, `groups`) and the backplane.
 */
export class HubRuntime implements LocalHub, ConnectionHost, ClientSink, HubContext {
  readonly clients: HubClients;
  readonly groups: GroupManager;
  readonly reliable: ReliableClients;
  readonly registry = new LocalRegistry<Connection>();
  /** Event counters for the metrics collector (client-caused errors included). */
  readonly stats = new HubCounters();
  /** The app's definition, its methods counted in {@link stats}. */
  readonly definition: HubDefinition;
  readonly #byToken = new Map<string, Connection>();
  /** Told each token whose connection is forgotten (the server remembers signed ones until they expire). */
  onTokenForgotten: ((token: string) => void) | undefined;
  /** The message of the latest publish(), which the backplane hands back to deliver() for local delivery. */
  #lastPublished: SharedMessage | undefined;
  #channel: HubChannel | undefined;
  #lane: ReliableLane | undefined;
  /**
   * Every connection's next deadline (negotiate, handshake, keep-alive, client timeout, stateful
   * reconnect): one timer for the hub, visiting only the connections that are due.
   */
  readonly #wheel: TimerWheel<Connection>;
  #closing: Promise<void> | undefined;

  constructor(
    readonly name: string,
    definition: HubDefinition,
    readonly options: HubOptions,
    readonly logger: Logger,
  ) {
    for (const method of definition.streams ?? []) {
      if (!Object.hasOwn(definition.methods, method)) {
        throw new RelayhubError(
          'ERR_CONFIG',
          `Hub '${name}' lists '${method}' in streams, but has no such method.`,
          { remedy: 'List in `streams` the names of methods (in `methods`) that return an AsyncIterable.' },
        );
      }
    }
    this.definition = countInvocations(definition, this.stats);
    this.#wheel = new TimerWheel(
      wheelResolutionMs(options),
      (connection, now) => connection.tick(now),
      Date.now(),
      CONNECTION_SLOTS,
    );
    this.clients = hubClients(this);
    this.reliable = reliableClients(() => (this.#closing ? undefined : this.#lane), this.stats);
    this.groups = {
      add: (connectionId, group) => this.#requireChannel().addToGroup(connectionId, group),
      remove: (connectionId, group) => this.#requireChannel().removeFromGroup(connectionId, group),
    };
  }

  async start(backplane: Backplane): Promise<void> {
    this.#channel = await backplane.open(this.name, this);
    this.#lane = await backplane.openReliable?.(this.name, {
      connectionsOf: (userId) => [...this.registry.resolve({ kind: 'users', ids: [userId] })],
      hasConnections: (userId) => this.registry.hasUser(userId),
    });
    this.#wheel.start();
  }

  /**
   * Creates a connection for a v0 negotiate, a WebSocket without `id` (skipNegotiation), or (with `ids`)
   * the first request that presents a signed connection token (src/hub/connection-token.ts).
   */
  createConnection(
    principal: Principal,
    options: { statefulReconnect: boolean; v0?: boolean; ids?: { connectionId: string; token: string } },
  ): Connection {
    const connectionId = options.ids?.connectionId ?? newId();
    const token = options.ids?.token ?? (options.v0 ? connectionId : newId());
    const connection = new Connection(this, { connectionId, token }, principal, options.statefulReconnect);
    this.#byToken.set(token, connection);
    return connection;
  }

  connectionByToken(token: string): Connection | undefined {
    return this.#byToken.get(token);
  }

  get connectionCount(): number {
    return this.registry.size;
  }

  /** The reliable lane's figures; undefined without a lane (or once closing). */
  reliableMetrics(): Promise<ReliableMetrics> | undefined {
    return this.#closing ? undefined : this.#lane?.metrics();
  }

  // ---- ClientSink: what the client proxies call ----

  publish(audience: Audience, target: string, args: unknown[]): Promise<void> {
    // note: encoded once per send and protocol, whatever the number of recipients; the backplane carries
    // the wire form once, and deliver() below reuses this message for the local connections.
    const message = SharedMessage.of({ type: MessageType.Invocation, target, arguments: args });
    this.#lastPublished = message;
    this.stats.sent[audience.kind]++;
    return this.#requireChannel().publish(audience, message.wire);
  }

  invokeClient(connectionId: string, target: string, args: unknown[]): Promise<unknown> {
    return this.#requireChannel().invokeClient(
      connectionId,
      target,
      args,
      this.options.clientResultTimeoutMs,
    );
  }

  callerClients(connectionId: string): CallerClients {
    return callerClients(this, this.clients, connectionId);
  }

  // ---- LocalHub: what the backplane calls ----

  deliver(audience: Audience, frame: string): void {
    // note: the backplanes deliver locally within publish(), so the message just published is the one
    // arriving here, with its encodings; a frame from another instance is rebuilt (and encoded) once.
    const last = this.#lastPublished;
    const message = last?.wire === frame ? last : SharedMessage.fromWire(frame);
    this.registry.deliver(audience, message);
  }

  async addToGroup(connectionId: string, group: string): Promise<boolean> {
    const connection = this.registry.get(connectionId);
    if (!connection) return false;
    const problem = groupNameProblem(group);
    if (problem) throw new HubError(problem);
    this.#checkGroupLimit(connection, group);
    const authorize = this.definition.authorizeGroupJoin;
    if (authorize && !(await authorize(connection.context, group))) {
      throw new RelayhubError(
        'ERR_FORBIDDEN',
        `Connection '${connectionId}' may not join group '${group}'.`,
        {
          remedy: "The hub's authorizeGroupJoin hook refused it.",
        },
      );
    }
    // note: the connection may have ended (or joined other groups) while the hook ran.
    if (this.registry.get(connectionId) !== connection) return false;
    this.#checkGroupLimit(connection, group);
    if (this.registry.joinGroup(connection, group)) await this.#requireChannel().follow('group', group);
    return true;
  }

  /** Refuses a join past `maxGroupsPerConnection` with a `HubError`, whose text reaches the caller. */
  #checkGroupLimit(connection: Connection, group: string): void {
    const groups = this.registry.groupsOf(connection);
    const max = this.options.maxGroupsPerConnection;
    if (groups.size < max || groups.has(group)) return;
    this.stats.clientErrors.limit++;
    throw new HubError(
      `Connection '${connection.connectionId}' is already in ${max} groups (maxGroupsPerConnection); leave one first.`,
    );
  }

  async removeFromGroup(connectionId: string, group: string): Promise<boolean> {
    const connection = this.registry.get(connectionId);
    if (!connection) return false;
    if (this.registry.leaveGroup(connection, group)) await this.#requireChannel().unfollow('group', group);
    return true;
  }

  invokeLocal(
    connectionId: string,
    target: string,
    args: unknown[],
    timeoutMs: number,
  ): Promise<unknown> | undefined {
    return this.registry.get(connectionId)?.invoke(target, args, timeoutMs);
  }

  // ---- ConnectionHost: what connections call ----

  /**
   * Makes the connection addressable. The connection can end at any await below (its socket dropped, the
   * registration timed out): `ended` then undoes what was done so far (unfollow, `userLeft`), so each
   * step after an await first checks that the connection is still registered, and does nothing if not.
   */
  async register(connection: Connection): Promise<void> {
    const channel = this.#requireChannel();
    const firstOfUser = this.registry.add(connection);
    await Promise.all([
      channel.follow('connection', connection.connectionId),
      firstOfUser ? channel.follow('user', connection.userId as string) : undefined,
    ]);
    // note: presence and replay of the user's unacked reliable messages start with the first connection;
    // a connection that ended meanwhile must not re-announce a user whose userLeft already ran.
    if (!firstOfUser || !this.#isRegistered(connection)) return;
    const userId = connection.userId as string;
    await this.#lane?.userArrived(userId);
    // note: ended during userArrived: userLeft ran before the session existed or in the middle of it;
    // say it again unless another connection of the user arrived meanwhile.
    if (!this.#isRegistered(connection) && !this.#holdsUser(userId)) this.#lane?.userLeft(userId);
  }

  #isRegistered(connection: Connection): boolean {
    return this.registry.get(connection.connectionId) === connection;
  }

  #holdsUser(userId: string): boolean {
    for (const _ of this.registry.resolve({ kind: 'users', ids: [userId] })) return true;
    return false;
  }

  schedule(connection: Connection, at: number): void {
    this.#wheel.schedule(connection, at);
  }

  async connected(connection: Connection): Promise<void> {
    await this.definition.onConnected?.(connection.context);
  }

  ended(
    connection: Connection,
    error: Error | undefined,
    reached: { registered: boolean; connected: boolean },
  ): void {
    this.#wheel.cancel(connection);
    this.#forgetToken(connection);
    if (reached.registered) this.#unfollowGone(connection);
    if (!reached.connected || !this.definition.onDisconnected) return;
    Promise.resolve()
      .then(() => this.definition.onDisconnected?.(connection.context, error))
      .catch((caught: unknown) => this.logger.error({ err: caught }, 'onDisconnected failed'));
  }

  /** A long polling connection stays reachable until its last data (its Close message) was polled. */
  #forgetToken(connection: Connection): void {
    const forget = () => {
      if (this.#byToken.get(connection.token) !== connection) return;
      this.#byToken.delete(connection.token);
      this.onTokenForgotten?.(connection.token);
    };
    const drained = connection.transport?.drained;
    if (drained) void drained.then(forget);
    else forget();
  }

  #unfollowGone(connection: Connection): void {
    const channel = this.#channel;
    const { userGone, groupsGone } = this.registry.remove(connection);
    if (!channel) return;
    const gone: [Interest, string][] = [['connection', connection.connectionId]];
    if (userGone) {
      gone.push(['user', connection.userId as string]);
      this.#lane?.userLeft(connection.userId as string);
    }
    for (const group of groupsGone) gone.push(['group', group]);
    // note: one batch (one UNSUBSCRIBE on pubsub) however many groups the connection was in.
    channel
      .unfollowMany(gone)
      .catch((error: unknown) => this.logger.warn({ err: error, count: gone.length }, 'unfollow failed'));
  }

  #requireChannel(): HubChannel {
    if (!this.#channel || this.#closing) {
      throw new RelayhubError('ERR_CLOSED', `Hub '${this.name}' is not running.`, {
        remedy: 'Send only between start() (or listen()) and close().',
      });
    }
    return this.#channel;
  }

  /** Ends every connection with a Close that allows the client to reconnect, then leaves the backplane. */
  close(reason: string): Promise<void> {
    this.#closing ??= (async () => {
      this.#wheel.stop();
      const connections = [...this.#byToken.values()];
      for (const connection of connections) connection.close(reason, true);
      await drainLongPolls(connections);
      await this.#lane?.close();
      await this.#channel?.close();
    })();
    return this.#closing;
  }
}
