import type { Logger } from 'pino';
import type { HubOptions } from '../config.js';
import { HubError, ProtocolError, RelayhubError } from '../errors.js';
import {
  formatHandshakeError,
  HANDSHAKE_OK,
  parseHandshakeRequest,
  splitHandshake,
} from '../protocol/handshake.js';
import { EncodedArguments } from '../protocol/encoded-arguments.js';
import { concatFrames, type Frame, type HubProtocol } from '../protocol/hub-protocol.js';
import { checkRecordSize, jsonProtocol, splitRecords } from '../protocol/json/json-protocol.js';
import { messagePackProtocol } from '../protocol/messagepack/messagepack-protocol.js';
import { SharedMessage } from '../protocol/shared-message.js';
import type { Transport, TransportEvents } from '../transport/transport.js';
import {
  type CompletionMessage,
  type HubMessage,
  type InvocationMessage,
  isSequenced,
  MessageType,
  type StreamInvocationMessage,
} from '../protocol/messages.js';
import type { Principal } from './auth.js';
import type { CallerClients, GroupManager } from './clients.js';
import { type ConnectionContext, type HubDefinition, isStreamingMethod } from './hub.js';
import { DeferredRequest, EMPTY_REQUEST, type HubRequest } from './hub-request.js';
import type { Addressable } from './local-registry.js';
import { type ClientErrorKind, LogBudget, truncateForLog } from './client-errors.js';
import type { HubCounters } from '../metrics/hub-stats.js';
import { ResumeBuffer } from './resume-buffer.js';
import { UploadStream } from './upload-stream.js';

/** What a connection needs from the hub it belongs to. */
export interface ConnectionHost {
  readonly options: HubOptions;
  readonly definition: HubDefinition;
  readonly logger: Logger;
  /** The hub's counters, shared by its connections: client-caused errors, messages received. */
  readonly stats: HubCounters;
  callerClients(connectionId: string): CallerClients;
  readonly groups: GroupManager;
  /** The handshake request is valid: make the connection addressable everywhere (before the response). */
  register(connection: Connection): Promise<void>;
  /**
   * Look at the connection (call its {@link Connection.tick}) no later than `at` (ms since the epoch): its
   * next deadline moved earlier.
   */
  schedule(connection: Connection, at: number): void;
  /** The handshake response is out: run `onConnected`. */
  connected(connection: Connection): Promise<void>;
  /**
   * The connection ended: forget it if it was registered and, when `connected` had been called, run
   * `onDisconnected`. Called once per connection.
   */
  ended(
    connection: Connection,
    error: Error | undefined,
    reached: { registered: boolean; connected: boolean },
  ): void;
}

type State =
  /** Negotiated, no socket yet. */
  | 'pending'
  /** Socket bound, waiting for the handshake request. */
  | 'handshake'
  /** Handshake done, `onConnected` running; incoming frames wait. */
  | 'starting'
  | 'open'
  /** Stateful reconnect: the socket dropped and the client may come back with the same token. */
  | 'detached'
  | 'ended';

interface PendingResult {
  resolve(value: unknown): void;
  reject(error: Error): void;
  target: string;
  timeoutMs: number;
  /** When it times out (`Date.now()` clock). */
  deadline: number;
}

const ACK_INTERVAL_MS = 1_000;
/** What a connection's times are relative to (see {@link toClock}). */
const CLOCK_BASE = Date.now();
/**
 * A time as milliseconds since CLOCK_BASE in 32 bits: a small integer, which V8 keeps in the object itself
 * (a plain difference of two `Date.now()` values is a heap number, a box of its own on every connection).
 * It wraps after ~24.8 days; {@link fromClock} undoes that for any time within as much of now, which a
 * connection's times always are (the keep-alive and the timeouts renew or end them within minutes).
 */
const toClock = (at: number): number => (at - CLOCK_BASE) | 0;
const fromClock = (value: number): number => {
  const now = Date.now();
  return now - ((toClock(now) - value) | 0);
};
const STATEFUL_OFFERED = 1;
const AWAITING_SEQUENCE = 2;
const FLUSH_SCHEDULED = 4;
const HANDSHAKE_DONE = 8;
const ON_CONNECTED_CALLED = 16;
const READ_PAUSED = 32;
/** How long a refused, paused socket may take to flush its handshake error before it is dropped. */
const CLOSE_GRACE_MS = 1_000;

/**
 * One client connection of a hub: a session over one {@link Transport} (replaced on a stateful
 * reconnect) that owns the protocol state: the handshake and the hub protocol it picked, parsing,
 * dispatch of hub methods with bounded concurrency, streams, client results, keep-alive, and the write
 * path, which joins everything written in one event-loop turn into one transport payload.
 */
export class Connection implements Addressable {
  readonly connectionId: string;
  readonly token: string;
  readonly userId: string | undefined;
  readonly claims: Principal['claims'];
  /** The slot of the hub's timer wheel this connection is in (kept by the wheel). */
  wheelSlot: number | undefined = undefined;
  /** The request that bound the current socket (or what snapshots it on first use). */
  #request: HubRequest | DeferredRequest = EMPTY_REQUEST;

  #state: State = 'pending';
  #transport: Transport | undefined;
  /** The last transport bound, kept after the connection ends (a long poll may still collect from it). */
  #lastTransport: Transport | undefined;
  /** Chosen by the handshake. */
  #protocol: HubProtocol = jsonProtocol;
  readonly #host: ConnectionHost;
  // note: created on first use: a negotiate that no socket ever binds to costs only the fields above.
  #logger: Logger | undefined;
  #abortController: AbortController | undefined;
  #context: ConnectionContext | undefined;
  #items: Map<string, unknown> | undefined;
  #logBudget: LogBudget | undefined;
  #resume: ResumeBuffer | undefined;
  #ackTimer: NodeJS.Timeout | undefined;

  /** `#since`, `#lastReceivedAt` and `#lastSentAt` (accessors below), as {@link toClock} keeps them. */
  #sinceAt = toClock(Date.now());
  #receivedAt = this.#sinceAt;
  #sentAt = this.#sinceAt;
  /** The booleans (accessors below), one bit each: one field instead of six on every connection. */
  #flags = 0;

  /** What was written this turn, for the next flush (created on first write). */
  #pending: Frame[] | undefined;
  #pendingBytes = 0;
  #waitingFrames: Frame[] | undefined;
  #waitingBytes = 0;

  #queue: (() => Promise<void>)[] | undefined;
  #running = 0;
  // note: the maps and sets below are created on first use: most connections never stream or get a
  // client result, and an idle connection should cost as little as possible.
  #uploads: Map<string, UploadStream> | undefined;
  /** The uploads whose buffer is full: while there is one, the socket is not read. */
  #fullUploads: Set<UploadStream> | undefined;
  /** Invocations with upload streams and stream invocations that have not finished. */
  #activeStreams = 0;
  #streams: Map<string, AbortController> | undefined;
  #results: Map<string, PendingResult> | undefined;
  /** One timer for every pending result: armed for the earliest deadline (not a timer per invocation). */
  #resultsTimer: NodeJS.Timeout | undefined;
  #resultsTimerAt = 0;
  #nextInvocationId = 0;

  /**
   * When the current state's deadline started: the negotiate (pending), the socket bound (handshake,
   * starting), the socket dropped (detached).
   */
  get #since(): number {
    return fromClock(this.#sinceAt);
  }
  set #since(at: number) {
    this.#sinceAt = toClock(at);
  }
  get #lastReceivedAt(): number {
    return fromClock(this.#receivedAt);
  }
  set #lastReceivedAt(at: number) {
    this.#receivedAt = toClock(at);
  }
  get #lastSentAt(): number {
    return fromClock(this.#sentAt);
  }
  set #lastSentAt(at: number) {
    this.#sentAt = toClock(at);
  }

  get #statefulOffered(): boolean {
    return (this.#flags & STATEFUL_OFFERED) !== 0;
  }
  set #statefulOffered(on: boolean) {
    this.#setFlag(STATEFUL_OFFERED, on);
  }
  /** After a stateful reconnect, client messages are dropped until the client's Sequence arrives. */
  get #awaitingSequence(): boolean {
    return (this.#flags & AWAITING_SEQUENCE) !== 0;
  }
  set #awaitingSequence(on: boolean) {
    this.#setFlag(AWAITING_SEQUENCE, on);
  }
  get #flushScheduled(): boolean {
    return (this.#flags & FLUSH_SCHEDULED) !== 0;
  }
  set #flushScheduled(on: boolean) {
    this.#setFlag(FLUSH_SCHEDULED, on);
  }
  /** Nothing but the handshake response may be written before it. */
  get #handshakeDone(): boolean {
    return (this.#flags & HANDSHAKE_DONE) !== 0;
  }
  set #handshakeDone(on: boolean) {
    this.#setFlag(HANDSHAKE_DONE, on);
  }
  get #onConnectedCalled(): boolean {
    return (this.#flags & ON_CONNECTED_CALLED) !== 0;
  }
  set #onConnectedCalled(on: boolean) {
    this.#setFlag(ON_CONNECTED_CALLED, on);
  }
  get #readPaused(): boolean {
    return (this.#flags & READ_PAUSED) !== 0;
  }
  set #readPaused(on: boolean) {
    this.#setFlag(READ_PAUSED, on);
  }
  #setFlag(flag: number, on: boolean): void {
    this.#flags = on ? this.#flags | flag : this.#flags & ~flag;
  }

  constructor(
    host: ConnectionHost,
    ids: { connectionId: string; token: string },
    principal: Principal,
    statefulOffered: boolean,
  ) {
    this.#host = host;
    this.connectionId = ids.connectionId;
    this.token = ids.token;
    this.userId = principal.userId;
    this.claims = principal.claims;
    this.#statefulOffered = statefulOffered;
    this.#schedule();
  }

  /** The request that bound the current socket, for `ctx.request`; the server sets it before `attach`. */
  get request(): HubRequest {
    if (this.#request instanceof DeferredRequest) this.#request = this.#request.get();
    return this.#request;
  }

  set request(request: HubRequest | DeferredRequest) {
    this.#request = request;
  }

  /** Per-connection state for the app. */
  get items(): Map<string, unknown> {
    this.#items ??= new Map();
    return this.#items;
  }

  /** What every hub callback of this connection gets. */
  get context(): ConnectionContext {
    const self = this;
    this.#context ??= {
      connectionId: this.connectionId,
      userId: this.userId,
      claims: this.claims,
      get request() {
        return self.request;
      },
      items: this.items,
      clients: this.#host.callerClients(this.connectionId),
      groups: this.#host.groups,
      signal: this.#abort.signal,
      abort: (error?: string) => this.close(error, false),
    };
    return this.#context;
  }

  get #log(): Logger {
    this.#logger ??= this.#host.logger.child({ connectionId: this.connectionId });
    return this.#logger;
  }

  get #abort(): AbortController {
    this.#abortController ??= new AbortController();
    return this.#abortController;
  }

  get state(): State {
    return this.#state;
  }

  /** The transport bound last (still set after the connection ended). */
  get transport(): Transport | undefined {
    return this.#lastTransport;
  }

  /**
   * True when a socket may bind to this connection now: a new one, or a stateful one whose socket dropped
   * or (as in ASP.NET) whose client came back before the server noticed its old socket dropped.
   */
  get acceptsSocket(): boolean {
    return (
      this.#state === 'pending' ||
      this.#state === 'detached' ||
      (this.#state === 'open' && this.#resume?.resumable === true)
    );
  }

  /** Binds a transport: the first one (handshake follows) or a stateful reconnect (replay follows). */
  attach(transport: Transport): void {
    const resuming = this.#state === 'detached' || this.#state === 'open';
    const previous = this.#transport;
    this.#transport = transport;
    this.#lastTransport = transport;
    if (previous) {
      // note: the replaced socket's events are ignored from now on; what was pending for it is replayed.
      this.#pending = undefined;
      this.#pendingBytes = 0;
      this.#readPaused = false;
      previous.terminate();
    }
    this.#since = Date.now();
    this.#lastReceivedAt = this.#since;
    transport.bind(new Connection.#Binding(this, transport));
    if (!resuming) {
      this.#state = 'handshake';
      return this.#schedule();
    }
    this.#state = 'open';
    this.#schedule();
    this.#awaitingSequence = true;
    const { sequenceId, frames } = (this.#resume as ResumeBuffer).replay();
    this.#log.debug({ sequenceId, replayed: frames.length }, 'stateful reconnect');
    this.#enqueue(this.#protocol.write({ type: MessageType.Sequence, sequenceId }));
    for (const frame of frames) this.#enqueue(frame);
  }

  /**
   * Writes a sequenced invocation from a client proxy: a message shared with other connections (encoded
   * once per protocol), or its backplane wire form (a JSON record, as the reliable lane writes).
   */
  write(frame: string | SharedMessage): void {
    const shared = typeof frame === 'string' ? SharedMessage.fromWire(frame) : frame;
    this.#send(shared.encoded(this.#protocol), true);
  }

  /**
   * Invokes `target` on this client and resolves with its answer (a client result).
   * Rejects on the client's error, after `timeoutMs`, or when the connection ends.
   */
  invoke(target: string, args: unknown[] | EncodedArguments, timeoutMs: number): Promise<unknown> {
    if (this.#state === 'ended') return Promise.reject(closedError(this.connectionId));
    const invocationId = `s${this.#nextInvocationId++}`;
    return new Promise((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      (this.#results ??= new Map()).set(invocationId, { resolve, reject, target, timeoutMs, deadline });
      this.#armResultsTimer(deadline);
      this.#send(
        args instanceof EncodedArguments
          ? args.invocation(this.#protocol, invocationId, target)
          : this.#protocol.write({ type: MessageType.Invocation, invocationId, target, arguments: args }),
        true,
      );
    });
  }

  /** Makes the results timer fire by `deadline`. */
  #armResultsTimer(deadline: number): void {
    if (this.#resultsTimer && this.#resultsTimerAt <= deadline) return;
    clearTimeout(this.#resultsTimer);
    this.#resultsTimerAt = deadline;
    this.#resultsTimer = setTimeout(() => this.#expireResults(), Math.max(0, deadline - Date.now()));
  }

  /** Rejects the pending results whose deadline passed, then waits for the next one. */
  #expireResults(): void {
    this.#resultsTimer = undefined;
    const now = Date.now();
    let next = Infinity;
    for (const [invocationId, pending] of this.#results ?? []) {
      if (pending.deadline > now) {
        next = Math.min(next, pending.deadline);
        continue;
      }
      this.#results?.delete(invocationId);
      pending.reject(
        new RelayhubError(
          'ERR_INVOCATION_TIMEOUT',
          `Client '${this.connectionId}' did not answer '${pending.target}' within ${pending.timeoutMs} ms.`,
        ),
      );
    }
    if (next !== Infinity) this.#armResultsTimer(next);
  }

  /** Sends a Close message and ends the connection. Idempotent. */
  close(error?: string, allowReconnect = false): void {
    if (this.#state === 'ended') return;
    if (this.#state === 'starting' && !this.#handshakeDone) {
      return this.#rejectHandshake(
        error ?? 'The connection was closed before the handshake completed.',
        false,
      );
    }
    if (this.#state === 'open' || this.#state === 'starting') {
      this.#send(this.#protocol.write(compactClose(error, allowReconnect)), false);
      this.#flush();
    }
    this.#end(error === undefined ? undefined : new RelayhubError('ERR_CONNECTION_CLOSED', error));
  }

  /**
   * What the hub's timer wheel calls at this connection's deadline: ends it when its negotiate, handshake,
   * registration, client timeout or stateful-reconnect wait expired, sends the keep-alive ping when
   * nothing was sent for `keepAliveIntervalMs`, and returns when to look again (undefined: never, the
   * connection ended or waits on its app). Activity moves the deadlines on without rescheduling: a
   * visit before they are due does nothing but answer the new time.
   */
  tick(now: number): number | undefined {
    const o = this.#host.options;
    switch (this.#state) {
      case 'pending':
        if (now - this.#since > o.negotiateTimeoutMs) return void this.#end(undefined);
        return this.#since + o.negotiateTimeoutMs + 1;
      case 'handshake':
        if (now - this.#since > o.handshakeTimeoutMs) {
          return void this.#rejectHandshake(`Handshake was not received within ${o.handshakeTimeoutMs} ms.`);
        }
        return this.#since + o.handshakeTimeoutMs + 1;
      case 'starting':
        // note: registration waits on the backplane; a stalled Redis must not hold the client (and what
        // it sends) past the handshake timeout. onConnected, once the handshake is answered, is the app's:
        // #opened schedules the keep-alive.
        if (this.#handshakeDone) return undefined;
        if (now - this.#since > o.handshakeTimeoutMs) {
          this.#log.warn('registration timed out');
          return void this.#rejectHandshake(
            `The server could not register the connection within ${o.handshakeTimeoutMs} ms (handshakeTimeoutMs).`,
            false,
          );
        }
        return this.#since + o.handshakeTimeoutMs + 1;
      case 'detached':
        if (now - this.#since > o.statefulReconnectTimeoutMs) {
          return void this.#end(
            new RelayhubError('ERR_CONNECTION_CLOSED', 'The client did not reconnect in time.'),
          );
        }
        return this.#since + o.statefulReconnectTimeoutMs + 1;
      case 'open':
        if (!this.#readPaused && now - this.#lastReceivedAt > o.clientTimeoutMs) {
          this.#log.info('client timed out');
          return void this.close(
            `Client timeout: nothing was received from the client for ${o.clientTimeoutMs} ms.`,
            true,
          );
        }
        if (now - this.#lastSentAt >= o.keepAliveIntervalMs) this.#ping(now);
        return this.#nextOpenDeadline();
      default:
        return undefined;
    }
  }

  /** The keep-alive ping or the client timeout, whichever comes first. */
  #nextOpenDeadline(): number {
    const o = this.#host.options;
    const ping = this.#lastSentAt + o.keepAliveIntervalMs;
    // note: a paused socket is not read, so its client cannot time out until it is read again.
    return this.#readPaused ? ping : Math.min(ping, this.#lastReceivedAt + o.clientTimeoutMs + 1);
  }

  /**
   * The keep-alive: written at once (one constant frame per protocol) when nothing else waits; otherwise
   * the flush already scheduled is traffic enough.
   */
  #ping(now: number): void {
    const transport = this.#transport;
    if (this.#pending || !this.#handshakeDone || !transport?.writable) return;
    const ping = pingFrame(this.#protocol);
    if (transport.sendConstant) transport.sendConstant(ping);
    else transport.send(ping);
    this.#lastSentAt = now;
  }

  /** Tells the hub's timer wheel when to look at this connection next (its state changed). */
  #schedule(): void {
    const at = this.tick(Date.now());
    if (at !== undefined) this.#host.schedule(this, at);
  }

  // ---- incoming -------------------------------------------------------------------------------------

  #onFrame(transport: Transport, payload: Frame): void {
    if (transport !== this.#transport) return;
    this.#lastReceivedAt = Date.now();
    try {
      if (this.#state === 'handshake') return this.#onHandshake(payload);
      if (this.#state === 'starting') return this.#wait(payload);
      if (this.#state === 'open') this.#processFrame(payload);
    } catch (error) {
      // note: before the handshake the client reads only a handshake answer, so refuse the handshake.
      if (this.#state === 'handshake') {
        return this.#rejectHandshake(error instanceof Error ? error.message : String(error));
      }
      this.#onProtocolError(error);
    }
  }

  #onHandshake(payload: Frame): void {
    const kind = this.#transport?.kind;
    let version: 1 | 2;
    let rest: Frame | undefined;
    try {
      // note: the official clients send the handshake as text, whatever the protocol.
      if (typeof payload !== 'string' && kind === 'WebSockets') throw binaryFramesError();
      if (typeof payload === 'string') splitRecords(payload);
      const handshake = splitHandshake(payload);
      checkRecordSize(handshake.record, this.#host.options.maximumReceiveMessageSize);
      const request = parseHandshakeRequest(handshake.record, this.#host.options.protocols);
      const protocol = request.protocol === 'messagepack' ? messagePackProtocol : jsonProtocol;
      if (protocol.transferFormat === 'Binary' && kind === 'ServerSentEvents') {
        throw new ProtocolError(
          `The protocol '${protocol.name}' is binary; Server-Sent Events carry text only. Use WebSockets or long polling.`,
          'ERR_HANDSHAKE',
        );
      }
      this.#protocol = protocol;
      version = request.version;
      rest = handshake.rest;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      return this.#rejectHandshake(message);
    }
    // note: as in SignalR, stateful reconnect is a WebSockets feature; the HTTP transports never resume.
    if (this.#statefulOffered && version === 2 && kind === 'WebSockets') {
      this.#resume = new ResumeBuffer(this.#host.options.statefulReconnectBufferSize);
    }
    this.#state = 'starting';
    if (rest !== undefined) this.#wait(rest);
    // note: the connection becomes addressable (and the backplane follows it) before the handshake
    // response, so that once the client's start() resolves every send reaches it.
    this.#host.register(this).then(
      () => {
        if (this.#state !== 'starting') return;
        this.#sendHandshakeResponse();
        this.#onConnectedCalled = true;
        this.#host.connected(this).then(
          () => this.#opened(),
          (error: unknown) => {
            this.#log.error({ err: error }, 'onConnected failed');
            this.close(this.#errorText('Connection was closed because onConnected failed', error), false);
          },
        );
      },
      (error: unknown) => {
        this.#log.error({ err: error }, 'could not register the connection');
        this.#rejectHandshake(this.#errorText('The server could not register the connection', error), false);
      },
    );
  }

  /**
   * Keeps a frame that arrived while the connection starts, for when it opens. Past
   * `maximumReceiveMessageSize` bytes the socket stops being read (TCP backpressure) until then.
   */
  #wait(payload: Frame): void {
    (this.#waitingFrames ??= []).push(payload);
    this.#waitingBytes += payload.length;
    if (this.#waitingBytes > this.#host.options.maximumReceiveMessageSize && !this.#readPaused) {
      this.#readPaused = true;
      this.#transport?.pause();
    }
  }

  #sendHandshakeResponse(): void {
    // note: the handshake response goes in a frame of its own; the client does not count hub messages
    // that share its frame in the stateful-reconnect sequence. Writes made meanwhile wait in #pending.
    const ok = this.#protocol.transferFormat === 'Binary' ? Buffer.from(HANDSHAKE_OK) : HANDSHAKE_OK;
    (this.#transport as Transport).send(ok);
    this.#handshakeDone = true;
    this.#lastSentAt = Date.now();
    if (this.#pending) this.#scheduleFlush();
  }

  #opened(): void {
    if (this.#state !== 'starting') return;
    this.#state = 'open';
    this.#schedule();
    const waiting = this.#waitingFrames ?? [];
    this.#waitingFrames = undefined;
    this.#waitingBytes = 0;
    try {
      for (const payload of waiting) this.#processFrame(payload);
    } catch (error) {
      this.#onProtocolError(error);
    }
    this.#updateReadGate();
  }

  #rejectHandshake(reason: string, clientCaused = true): void {
    if (clientCaused) this.#countClientError('protocol', `handshake refused: ${reason}`);
    const transport = this.#transport;
    if (transport?.writable) {
      transport.send(formatHandshakeError(reason));
      transport.close();
      // note: a paused socket never reads the client's close frame (ws would wait 30 s for it): drop it
      // once the error has had time to go out. (A long poll keeps the error for the next poll instead.)
      if (this.#readPaused && transport.kind === 'WebSockets') {
        setTimeout(() => transport.terminate(), CLOSE_GRACE_MS).unref();
      }
    }
    this.#end(new ProtocolError(reason, 'ERR_HANDSHAKE'));
  }

  #processFrame(payload: Frame): void {
    // note: the clients' keep-alive, every 15 s from each: nothing to parse or dispatch.
    if (payload === JSON_PING && this.#protocol === jsonProtocol) return;
    if (
      typeof payload !== 'string' &&
      this.#protocol === jsonProtocol &&
      this.#transport?.kind === 'WebSockets'
    ) {
      throw binaryFramesError();
    }
    for (const message of this.#protocol.parse(payload, this.#host.options.maximumReceiveMessageSize)) {
      if (this.#state !== 'open') return;
      this.#onMessage(message);
    }
  }

  #onMessage(message: HubMessage): void {
    if (message.type !== MessageType.Ping) this.#host.stats.received++;
    if (this.#awaitingSequence && message.type !== MessageType.Sequence) return;
    if (this.#resume && isSequenced(message.type)) {
      if (!this.#resume.received()) return;
      this.#scheduleAck();
    }
    switch (message.type) {
      case MessageType.Invocation:
      case MessageType.StreamInvocation:
        return this.#onInvocation(message);
      case MessageType.StreamItem: {
        const upload = this.#uploads?.get(message.invocationId);
        if (!upload) return; // note: the spec lets late items for a finished stream be ignored.
        upload.push(message.item);
        if (!upload.isFull) return;
        (this.#fullUploads ??= new Set()).add(upload);
        return this.#updateReadGate();
      }
      case MessageType.Completion:
        return this.#onCompletion(message);
      case MessageType.CancelInvocation:
        this.#streams?.get(message.invocationId)?.abort();
        return;
      case MessageType.Ping:
        return;
      case MessageType.Close:
        this.#log.debug({ error: message.error }, 'client closed');
        this.#flush();
        this.#end(message.error ? new RelayhubError('ERR_CONNECTION_CLOSED', message.error) : undefined);
        return;
      case MessageType.Ack:
        this.#resume?.acked(message.sequenceId);
        return;
      case MessageType.Sequence:
        if (!this.#resume)
          throw new ProtocolError('Sequence message received but stateful reconnect is off.');
        if (!this.#resume.resetReceive(message.sequenceId)) {
          throw new ProtocolError('Sequence ID greater than amount of messages we have received.');
        }
        this.#awaitingSequence = false;
        return;
    }
  }

  #onCompletion(message: CompletionMessage): void {
    const upload = this.#uploads?.get(message.invocationId);
    if (upload) {
      this.#forgetUpload(upload);
      upload.end(message.error);
      return this.#updateReadGate();
    }
    const pending = this.#results?.get(message.invocationId);
    if (!pending) return;
    this.#results?.delete(message.invocationId);
    if (message.error !== undefined) {
      // note: the client's text exactly (`Error: from callback`, `Client didn't provide a result.`), as
      // SignalR's InvokeAsync throws it; the code says where it came from.
      pending.reject(new RelayhubError('ERR_CLIENT_RESULT', message.error));
    } else {
      pending.resolve(message.result);
    }
  }

  #onInvocation(message: InvocationMessage | StreamInvocationMessage): void {
    const streaming = message.type === MessageType.StreamInvocation || (message.streamIds?.length ?? 0) > 0;
    if (!streaming) {
      (this.#queue ??= []).push(() => this.#invoke(message, message.arguments, []));
      return this.#pump();
    }
    // note: as in SignalR, stream invocations and invocations with upload streams take no slot: an
    // upload's method waits for the client, which would otherwise block the client's other invocations.
    // They count against maxStreamsPerClient instead, so that a client cannot start them without bound.
    const max = this.#host.options.maxStreamsPerClient;
    if (this.#activeStreams >= max) return this.#refuseStream(message, max);
    if (message.type === MessageType.StreamInvocation && this.#streams?.has(message.invocationId)) {
      throw new ProtocolError(`Invocation id '${message.invocationId}' is already in use.`);
    }
    const uploads: UploadStream[] = [];
    for (const streamId of message.streamIds ?? []) {
      if (this.#uploads?.has(streamId)) throw new ProtocolError(`Stream id '${streamId}' is already in use.`);
      const upload = new UploadStream(streamId, this.#host.options.streamBufferCapacity, () => {
        this.#fullUploads?.delete(upload);
        this.#updateReadGate();
      });
      (this.#uploads ??= new Map()).set(streamId, upload);
      uploads.push(upload);
    }
    this.#activeStreams++;
    void this.#invoke(message, [...message.arguments, ...uploads], uploads).finally(() => {
      this.#activeStreams--;
    });
  }

  #refuseStream(message: InvocationMessage | StreamInvocationMessage, max: number): void {
    const error = `Failed to invoke '${truncateForLog(message.target)}': the connection already has ${max} streams open (maxStreamsPerClient).`;
    this.#countClientError('limit', error);
    // note: the refused invocation's upload items are ignored (unknown stream ids), as after it ends.
    if (message.invocationId !== undefined) return this.#complete(message.invocationId, { error });
    throw new ProtocolError(error);
  }

  #pump(): void {
    const max = this.#host.options.maximumParallelInvocationsPerClient;
    while (this.#running < max && (this.#queue?.length ?? 0) > 0) {
      const run = this.#queue?.shift() as () => Promise<void>;
      this.#running++;
      run().finally(() => {
        this.#running--;
        this.#pump();
      });
    }
    this.#updateReadGate();
  }

  /**
   * Stops reading from the transport while invocations or upload items pile up (backpressure). O(1): the
   * uploads whose buffer is full are kept in a set as they fill and drain.
   */
  #updateReadGate(): void {
    const transport = this.#transport;
    if (!transport) return;
    const full =
      (this.#queue?.length ?? 0) >= this.#host.options.maxQueuedInvocationsPerClient ||
      (this.#fullUploads?.size ?? 0) > 0;
    if (full && !this.#readPaused) {
      this.#readPaused = true;
      transport.pause();
    } else if (!full && this.#readPaused) {
      this.#readPaused = false;
      this.#lastReceivedAt = Date.now();
      transport.resume();
    }
  }

  async #invoke(
    message: InvocationMessage | StreamInvocationMessage,
    args: unknown[],
    uploads: UploadStream[],
  ): Promise<void> {
    if (this.#state !== 'open') return;
    const { target, invocationId } = message;
    const isStream = message.type === MessageType.StreamInvocation;
    const definition = this.#host.definition;
    const method = Object.hasOwn(definition.methods, target) ? definition.methods[target] : undefined;
    const fail = (error: string) => {
      this.#releaseUploads(uploads);
      if (invocationId !== undefined) this.#complete(invocationId, { error });
    };
    if (!method) {
      // note: the name is the client's (up to maximumReceiveMessageSize): echo and log only its start.
      const name = truncateForLog(target);
      this.#countClientError('unknownMethod', `unknown hub method '${name}'`);
      return fail(`Failed to invoke '${name}': unknown hub method.`);
    }
    // note: SignalR's own texts; the method does not run when the call does not match how it returns.
    const streamingMethod = isStreamingMethod(definition, target, method);
    if (isStream !== streamingMethod) {
      this.#countClientError('invalidArguments', `stream/non-stream mismatch for '${target}'`);
      return fail(
        streamingMethod
          ? `The client attempted to invoke the streaming '${target}' method with a non-streaming invocation.`
          : `The client attempted to invoke the non-streaming '${target}' method with a streaming invocation.`,
      );
    }
    const controller = isStream ? new AbortController() : undefined;
    if (controller) (this.#streams ??= new Map()).set(invocationId as string, controller);
    const ctx = controller
      ? { ...this.context, signal: AbortSignal.any([this.#abort.signal, controller.signal]) }
      : this.context;
    let stream: AsyncIterable<unknown> | undefined;
    try {
      const authorize = definition.authorizeInvocation;
      if (authorize && !(await authorize(ctx, target, message.arguments))) {
        this.#streams?.delete(invocationId as string);
        return fail(`Failed to invoke '${target}' because user is unauthorized.`);
      }
      const result = await method(ctx, ...args);
      if (isStream) {
        if (!isAsyncIterable(result))
          throw new HubError(`The hub method '${target}' does not return a stream.`);
        stream = result;
      } else if (invocationId !== undefined) {
        if (isAsyncIterable(result)) {
          throw new HubError(`The hub method '${target}' returns a stream; call it with stream().`);
        }
        this.#complete(invocationId, result === undefined ? {} : { result });
      }
    } catch (error) {
      if (controller) this.#streams?.delete(invocationId as string);
      this.#logMethodError(error, target);
      return fail(this.#errorText(`An unexpected error occurred invoking '${target}' on the server`, error));
    }
    // note: the stream runs outside the invocation slot, as in SignalR, so it does not block the client.
    if (stream) await this.#runStream(invocationId as string, stream, ctx.signal, target);
    this.#releaseUploads(uploads);
  }

  /**
   * The invocation is over: forget its upload streams, so that later items for them are ignored instead
   * of filling a buffer nobody reads (which would stop reading from the socket for good), as ASP.NET does.
   */
  #releaseUploads(uploads: UploadStream[]): void {
    if (uploads.length === 0) return;
    for (const upload of uploads) {
      this.#forgetUpload(upload);
      upload.end();
    }
    this.#updateReadGate();
  }

  #forgetUpload(upload: UploadStream): void {
    if (this.#uploads?.get(upload.streamId) === upload) this.#uploads.delete(upload.streamId);
    this.#fullUploads?.delete(upload);
  }

  async #runStream(
    invocationId: string,
    stream: AsyncIterable<unknown>,
    signal: AbortSignal,
    target: string,
  ): Promise<void> {
    const iterator = stream[Symbol.asyncIterator]();
    const stop = () => void iterator.return?.();
    signal.addEventListener('abort', stop, { once: true });
    let error: string | undefined;
    try {
      while (!signal.aborted) {
        const next = await iterator.next();
        if (next.done || signal.aborted) break;
        this.#send(
          this.#protocol.write({ type: MessageType.StreamItem, invocationId, item: next.value }),
          true,
        );
      }
    } catch (caught) {
      if (!signal.aborted) {
        this.#logMethodError(caught, target);
        error = this.#errorText(
          `An error occurred on the server while streaming results from '${target}'`,
          caught,
        );
      }
    } finally {
      signal.removeEventListener('abort', stop);
      this.#streams?.delete(invocationId);
    }
    this.#complete(invocationId, error === undefined ? {} : { error });
  }

  #complete(invocationId: string, outcome: { result?: unknown; error?: string }): void {
    this.#send(this.#protocol.write({ type: MessageType.Completion, invocationId, ...outcome }), true);
  }

  #errorText(prefix: string, error: unknown): string {
    if (error instanceof HubError || (this.#host.options.enableDetailedErrors && error instanceof Error)) {
      return `${prefix}. ${error instanceof HubError ? 'HubException' : error.name}: ${error.message}`;
    }
    return `${prefix}.`;
  }

  #onProtocolError(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.#countClientError('protocol', `closing the connection: ${message}`);
    this.close(message, false);
  }

  /**
   * Counts a client-caused error and logs it at debug, truncated and rate-limited, so that a client cannot
   * turn its input into log volume.
   */
  #countClientError(kind: ClientErrorKind, detail: string): void {
    this.#host.stats.clientErrors[kind]++;
    const suppressed = (this.#logBudget ??= new LogBudget()).take();
    if (suppressed === undefined) return;
    this.#log.debug({ kind, detail: truncateForLog(detail), suppressed }, 'client error');
  }

  /**
   * A `HubError` (or a refusal) is the method telling the caller its input is wrong: a client error. Any
   * other error is a bug of the hub and is logged as a warning, still rate-limited per connection.
   */
  #logMethodError(error: unknown, target: string): void {
    if (error instanceof HubError || (error instanceof RelayhubError && error.code === 'ERR_FORBIDDEN')) {
      return this.#countClientError('invalidArguments', `${target}: ${error.message}`);
    }
    const suppressed = (this.#logBudget ??= new LogBudget()).take();
    if (suppressed !== undefined) this.#log.warn({ err: error, target, suppressed }, 'hub method failed');
  }

  // ---- outgoing -------------------------------------------------------------------------------------

  #send(frame: Frame, sequenced: boolean): void {
    if (this.#state === 'ended') return;
    if (sequenced) this.#resume?.sent(frame);
    this.#enqueue(frame);
  }

  #enqueue(frame: Frame): void {
    const transport = this.#transport;
    if (!transport || (this.#state !== 'open' && this.#state !== 'starting')) return;
    (this.#pending ??= []).push(frame);
    this.#pendingBytes += frame.length;
    if (this.#pendingBytes + transport.bufferedAmount > this.#host.options.maxBufferedBytesPerClient) {
      return this.#onSlowConsumer(transport);
    }
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || !this.#handshakeDone) return;
    this.#flushScheduled = true;
    Connection.#dirty.push(this);
    if (Connection.#dirty.length === 1) setImmediate(Connection.#flushDirty);
  }

  /**
   * What a transport tells its connection: one small object per bind whose methods are shared, instead
   * of two closures and their contexts per connection.
   */
  static readonly #Binding = class implements TransportEvents {
    constructor(
      readonly connection: Connection,
      readonly transport: Transport,
    ) {}

    data(payload: Frame): void {
      this.connection.#onFrame(this.transport, payload);
    }

    closed(clean: boolean, reason: string): void {
      this.connection.#onTransportClose(this.transport, clean, reason);
    }
  };

  /**
   * The connections written to in this event-loop turn, flushed together by one `setImmediate` (not one
   * each): the check phase comes after the turn's I/O callbacks, so what a turn writes to a connection
   * (a burst of backplane messages, of invocations from many clients) leaves in one payload.
   */
  static #dirty: Connection[] = [];

  static #flushDirty(this: void): void {
    const dirty = Connection.#dirty;
    Connection.#dirty = [];
    for (const connection of dirty) {
      // note: one connection's failure must not leave the others of the turn unflushed.
      try {
        connection.#flush();
      } catch (error) {
        connection.#log.error({ err: error }, 'write failed');
        connection.#end(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }

  /** Writes everything pending as one payload: both hub protocols allow many messages per frame. */
  #flush(): void {
    this.#flushScheduled = false;
    const transport = this.#transport;
    const pending = this.#pending;
    if (!this.#handshakeDone || !pending || !transport?.writable) return;
    const data = concatFrames(pending);
    this.#pending = undefined;
    this.#pendingBytes = 0;
    transport.send(data);
    this.#lastSentAt = Date.now();
  }

  #onSlowConsumer(transport: Transport): void {
    const limit = this.#host.options.maxBufferedBytesPerClient;
    this.#log.warn(
      { bufferedBytes: transport.bufferedAmount + this.#pendingBytes, limit, transport: transport.kind },
      'slow consumer disconnected',
    );
    this.#pending = undefined;
    this.#pendingBytes = 0;
    // note: the socket is backed up, so a Close message would queue behind everything else: terminate.
    transport.terminate();
    this.#end(
      new RelayhubError(
        'ERR_SLOW_CONSUMER',
        `Client did not read its messages: more than ${limit} bytes queued.`,
        {
          remedy: 'Raise maxBufferedBytesPerClient or send less to this client.',
        },
      ),
    );
  }

  #scheduleAck(): void {
    if (this.#ackTimer) return;
    this.#ackTimer = setTimeout(() => {
      this.#ackTimer = undefined;
      const sequenceId = this.#resume?.takeAck();
      if (sequenceId !== undefined && this.#state === 'open') {
        this.#send(this.#protocol.write({ type: MessageType.Ack, sequenceId }), false);
      }
    }, ACK_INTERVAL_MS);
    this.#ackTimer.unref();
  }

  // ---- ending ---------------------------------------------------------------------------------------

  #onTransportClose(transport: Transport, clean: boolean, reason: string): void {
    if (transport !== this.#transport) return;
    this.#transport = undefined;
    this.#pending = undefined;
    this.#pendingBytes = 0;
    if (this.#state === 'ended') return;
    // note: like ASP.NET, only an unclean close keeps a stateful connection waiting for its client.
    if (this.#state === 'open' && this.#resume?.resumable && !clean) {
      this.#state = 'detached';
      this.#since = Date.now();
      this.#readPaused = false;
      this.#schedule();
      this.#log.debug({ reason }, 'socket dropped; waiting for a stateful reconnect');
      return;
    }
    this.#end(clean ? undefined : new RelayhubError('ERR_CONNECTION_CLOSED', reason));
  }

  #end(error: Error | undefined): void {
    if (this.#state === 'ended') return;
    const registered = this.#state !== 'pending' && this.#state !== 'handshake';
    this.#state = 'ended';
    clearTimeout(this.#ackTimer);
    const transport = this.#transport;
    this.#transport = undefined;
    transport?.close();
    this.#abortController?.abort(
      error ?? new RelayhubError('ERR_CONNECTION_CLOSED', 'The connection ended.'),
    );
    clearTimeout(this.#resultsTimer);
    this.#resultsTimer = undefined;
    for (const [, pending] of this.#results ?? []) pending.reject(closedError(this.connectionId));
    this.#results = undefined;
    for (const upload of this.#uploads?.values() ?? []) upload.end('The connection ended.');
    this.#uploads = undefined;
    this.#fullUploads = undefined;
    this.#queue = undefined;
    this.#waitingFrames = undefined;
    this.#waitingBytes = 0;
    this.#host.ended(this, error, { registered, connected: this.#onConnectedCalled });
  }
}

/** A JSON ping record alone in a frame, as the official clients send their keep-alive. */
const JSON_PING = jsonProtocol.write({ type: MessageType.Ping }) as string;

/** The keep-alive frame of each protocol, encoded once. */
const PINGS = new Map<HubProtocol, Frame>();
function pingFrame(protocol: HubProtocol): Frame {
  let frame = PINGS.get(protocol);
  if (frame === undefined) {
    frame = protocol.write({ type: MessageType.Ping });
    PINGS.set(protocol, frame);
  }
  return frame;
}

const closedError = (connectionId: string) =>
  new RelayhubError(
    'ERR_CONNECTION_CLOSED',
    `Connection '${connectionId}' ended before the client answered.`,
  );

function compactClose(error: string | undefined, allowReconnect: boolean): HubMessage {
  return error === undefined
    ? { type: MessageType.Close, allowReconnect }
    : { type: MessageType.Close, error, allowReconnect };
}

const binaryFramesError = () =>
  new ProtocolError('Binary frames are not supported by the JSON hub protocol.');

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
