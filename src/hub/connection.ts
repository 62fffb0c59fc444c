import type { Logger } from 'pino';
import WebSocket from 'ws';
import type { HubOptions } from '../config.js';
import { HubError, ProtocolError, RelayhubError } from '../errors.js';
import { formatHandshakeError, HANDSHAKE_OK, parseHandshakeRequest } from '../protocol/handshake.js';
import { formatMessage, parseMessage, RECORD_SEPARATOR, splitRecords } from '../protocol/json-protocol.js';
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
import type { ConnectionContext, HubDefinition } from './hub.js';
import { EMPTY_REQUEST, type HubRequest } from './hub-request.js';
import type { Addressable } from './local-registry.js';
import { ResumeBuffer } from './resume-buffer.js';
import { UploadStream } from './upload-stream.js';

/** What a connection needs from the hub it belongs to. */
export interface ConnectionHost {
  readonly options: HubOptions;
  readonly definition: HubDefinition;
  readonly logger: Logger;
  callerClients(connectionId: string): CallerClients;
  readonly groups: GroupManager;
  /** Counters read by the metrics collector: hub messages other than pings received from clients. */
  readonly stats: { received: number };
  /** The handshake request is valid: make the connection addressable everywhere (before the response). */
  register(connection: Connection): Promise<void>;
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
  timer: NodeJS.Timeout;
}

const ACK_INTERVAL_MS = 1_000;

/**
 * One client connection of a hub: its socket (replaced on a stateful reconnect), the handshake, parsing,
 * dispatch of hub methods with bounded concurrency, streams, client results, keep-alive, and the write
 * path, which joins everything written in one event-loop turn into one WebSocket frame.
 */
export class Connection implements Addressable {
  readonly connectionId: string;
  readonly token: string;
  readonly userId: string | undefined;
  readonly claims: Principal['claims'];
  readonly items = new Map<string, unknown>();
  readonly context: ConnectionContext;
  /** The request that bound the current socket, for `ctx.request`; the server sets it before `attach`. */
  request: HubRequest = EMPTY_REQUEST;

  #state: State = 'pending';
  #ws: WebSocket | undefined;
  readonly #host: ConnectionHost;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  readonly #statefulOffered: boolean;
  #resume: ResumeBuffer | undefined;
  /** After a stateful reconnect, client messages are dropped until the client's Sequence arrives. */
  #awaitingSequence = false;
  #ackTimer: NodeJS.Timeout | undefined;

  readonly #createdAt = Date.now();
  #attachedAt = 0;
  #detachedAt = 0;
  #lastReceivedAt = 0;
  #lastSentAt = 0;

  #pending: string[] = [];
  #pendingBytes = 0;
  #flushScheduled = false;
  /** Nothing but the handshake response may be written before it. */
  #handshakeDone = false;
  #onConnectedCalled = false;
  #waitingFrames: string[] = [];

  readonly #queue: (() => Promise<void>)[] = [];
  #running = 0;
  #readPaused = false;
  readonly #uploads = new Map<string, UploadStream>();
  readonly #streams = new Map<string, AbortController>();
  readonly #results = new Map<string, PendingResult>();
  #nextInvocationId = 0;

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
    this.#log = host.logger.child({ connectionId: this.connectionId });
    const self = this;
    this.context = {
      connectionId: this.connectionId,
      userId: this.userId,
      claims: this.claims,
      get request() {
        return self.request;
      },
      items: this.items,
      clients: host.callerClients(this.connectionId),
      groups: host.groups,
      signal: this.#abort.signal,
      abort: (error?: string) => this.close(error, false),
    };
  }

  get state(): State {
    return this.#state;
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

  /** Binds a WebSocket: the first one (handshake follows) or a stateful reconnect (replay follows). */
  attach(ws: WebSocket): void {
    const resuming = this.#state === 'detached' || this.#state === 'open';
    const previous = this.#ws;
    this.#ws = ws;
    if (previous) {
      // note: the replaced socket's events are ignored from now on; what was pending for it is replayed.
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#readPaused = false;
      previous.terminate();
    }
    this.#attachedAt = Date.now();
    this.#lastReceivedAt = this.#attachedAt;
    ws.on('message', (data, isBinary) => this.#onFrame(ws, data, isBinary));
    ws.on('close', (code) => this.#onSocketClose(ws, code));
    ws.on('error', (error) => this.#log.debug({ err: error }, 'socket error'));
    if (!resuming) {
      this.#state = 'handshake';
      return;
    }
    this.#state = 'open';
    this.#awaitingSequence = true;
    const { sequenceId, frames } = (this.#resume as ResumeBuffer).replay();
    this.#log.debug({ sequenceId, replayed: frames.length }, 'stateful reconnect');
    this.#enqueue(formatMessage({ type: MessageType.Sequence, sequenceId }));
    for (const frame of frames) this.#enqueue(frame);
  }

  /** Writes a formatted, sequenced record (an invocation from a client proxy). */
  write(frame: string): void {
    this.#send(frame, true);
  }

  /**
   * Invokes `target` on this client and resolves with its answer (a client result).
   * Rejects on the client's error, after `timeoutMs`, or when the connection ends.
   */
  invoke(target: string, args: unknown[], timeoutMs: number): Promise<unknown> {
    if (this.#state === 'ended') return Promise.reject(closedError(this.connectionId));
    const invocationId = `s${this.#nextInvocationId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#results.delete(invocationId);
        reject(
          new RelayhubError(
            'ERR_INVOCATION_TIMEOUT',
            `Client '${this.connectionId}' did not answer '${target}' within ${timeoutMs} ms.`,
          ),
        );
      }, timeoutMs);
      this.#results.set(invocationId, { resolve, reject, timer });
      this.#send(
        formatMessage({ type: MessageType.Invocation, invocationId, target, arguments: args }),
        true,
      );
    });
  }

  /** Sends a Close message and ends the connection. Idempotent. */
  close(error?: string, allowReconnect = false): void {
    if (this.#state === 'ended') return;
    if (this.#state === 'starting' && !this.#handshakeDone) {
      return this.#rejectHandshake(error ?? 'The connection was closed before the handshake completed.');
    }
    if (this.#state === 'open' || this.#state === 'starting') {
      this.#send(formatMessage(compactClose(error, allowReconnect)), false);
      this.#flush();
    }
    this.#end(error === undefined ? undefined : new RelayhubError('ERR_CONNECTION_CLOSED', error));
  }

  /** Called by the hub's heartbeat about once a second (and more often with short timeouts). */
  tick(now: number): void {
    const o = this.#host.options;
    switch (this.#state) {
      case 'pending':
        if (now - this.#createdAt > o.negotiateTimeoutMs) this.#end(undefined);
        return;
      case 'handshake':
        if (now - this.#attachedAt > o.handshakeTimeoutMs) {
          this.#rejectHandshake(`Handshake was not received within ${o.handshakeTimeoutMs} ms.`);
        }
        return;
      case 'detached':
        if (now - this.#detachedAt > o.statefulReconnectTimeoutMs) {
          this.#end(new RelayhubError('ERR_CONNECTION_CLOSED', 'The client did not reconnect in time.'));
        }
        return;
      case 'open':
        if (!this.#readPaused && now - this.#lastReceivedAt > o.clientTimeoutMs) {
          this.#log.info('client timed out');
          this.close(
            `Client timeout: nothing was received from the client for ${o.clientTimeoutMs} ms.`,
            true,
          );
        } else if (now - this.#lastSentAt >= o.keepAliveIntervalMs) {
          this.#send(formatMessage({ type: MessageType.Ping }), false);
        }
        return;
      default:
        return;
    }
  }

  // ---- incoming -------------------------------------------------------------------------------------

  #onFrame(ws: WebSocket, data: WebSocket.RawData, isBinary: boolean): void {
    if (ws !== this.#ws) return;
    this.#lastReceivedAt = Date.now();
    try {
      if (isBinary) throw new ProtocolError('Binary frames are not supported by the JSON hub protocol.');
      const text = rawToString(data);
      if (this.#state === 'handshake') return this.#onHandshake(text);
      if (this.#state === 'starting') {
        this.#waitingFrames.push(text);
        return;
      }
      if (this.#state === 'open') this.#processFrame(text);
    } catch (error) {
      // note: before the handshake the client reads only a handshake answer, so refuse the handshake.
      if (this.#state === 'handshake') {
        return this.#rejectHandshake(error instanceof Error ? error.message : String(error));
      }
      this.#onProtocolError(error);
    }
  }

  #onHandshake(frame: string): void {
    let version: 1 | 2;
    let records: string[];
    try {
      records = splitRecords(frame);
      const first = records.shift() as string;
      this.#checkSize(first);
      version = parseHandshakeRequest(first).version;
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      return this.#rejectHandshake(message);
    }
    if (this.#statefulOffered && version === 2) {
      this.#resume = new ResumeBuffer(this.#host.options.statefulReconnectBufferSize);
    }
    this.#state = 'starting';
    if (records.length > 0) this.#waitingFrames.push(records.join(RECORD_SEPARATOR) + RECORD_SEPARATOR);
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
        this.#rejectHandshake(this.#errorText('The server could not register the connection', error));
      },
    );
  }

  #sendHandshakeResponse(): void {
    // note: the handshake response goes in a frame of its own; the client does not count hub messages
    // that share its frame in the stateful-reconnect sequence. Writes made meanwhile wait in #pending.
    (this.#ws as WebSocket).send(HANDSHAKE_OK);
    this.#handshakeDone = true;
    this.#lastSentAt = Date.now();
    if (this.#pending.length > 0) this.#scheduleFlush();
  }

  #opened(): void {
    if (this.#state !== 'starting') return;
    this.#state = 'open';
    const waiting = this.#waitingFrames;
    this.#waitingFrames = [];
    try {
      for (const text of waiting) this.#processFrame(text);
    } catch (error) {
      this.#onProtocolError(error);
    }
  }

  #rejectHandshake(reason: string): void {
    this.#log.warn({ reason }, 'handshake refused');
    const ws = this.#ws;
    if (ws?.readyState === WebSocket.OPEN) {
      ws.send(formatHandshakeError(reason));
      ws.close(1000);
    }
    this.#end(new ProtocolError(reason, 'ERR_HANDSHAKE'));
  }

  #processFrame(frame: string): void {
    for (const record of splitRecords(frame)) {
      if (this.#state !== 'open') return;
      this.#checkSize(record);
      this.#onMessage(parseMessage(record));
    }
  }

  #checkSize(record: string): void {
    const limit = this.#host.options.maximumReceiveMessageSize;
    // note: a UTF-16 length under limit/3 cannot exceed the limit in UTF-8, so most records skip the count.
    if (record.length * 3 > limit && Buffer.byteLength(record) > limit) {
      throw new ProtocolError(
        `Message is larger than the server's limit of ${limit} bytes (maximumReceiveMessageSize).`,
        'ERR_MESSAGE_TOO_LARGE',
      );
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
        const upload = this.#uploads.get(message.invocationId);
        if (!upload) return; // note: the spec lets late items for a finished stream be ignored.
        upload.push(message.item);
        return this.#updateReadGate();
      }
      case MessageType.Completion:
        return this.#onCompletion(message);
      case MessageType.CancelInvocation:
        this.#streams.get(message.invocationId)?.abort();
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
    const upload = this.#uploads.get(message.invocationId);
    if (upload) {
      this.#uploads.delete(message.invocationId);
      upload.end(message.error);
      return this.#updateReadGate();
    }
    const pending = this.#results.get(message.invocationId);
    if (!pending) return;
    this.#results.delete(message.invocationId);
    clearTimeout(pending.timer);
    if (message.error !== undefined) {
      pending.reject(
        new RelayhubError(
          'ERR_CLIENT_RESULT',
          `Client '${this.connectionId}' answered with an error: ${message.error}`,
        ),
      );
    } else {
      pending.resolve(message.result);
    }
  }

  #onInvocation(message: InvocationMessage | StreamInvocationMessage): void {
    const streams: UploadStream[] = [];
    for (const streamId of message.streamIds ?? []) {
      if (this.#uploads.has(streamId)) throw new ProtocolError(`Stream id '${streamId}' is already in use.`);
      const upload = new UploadStream(streamId, this.#host.options.streamBufferCapacity, () =>
        this.#updateReadGate(),
      );
      this.#uploads.set(streamId, upload);
      streams.push(upload);
    }
    if (message.type === MessageType.StreamInvocation && this.#streams.has(message.invocationId)) {
      throw new ProtocolError(`Invocation id '${message.invocationId}' is already in use.`);
    }
    const args = [...message.arguments, ...streams];
    // note: as in SignalR, stream invocations and invocations with upload streams take no slot: an
    // upload's method waits for the client, which would otherwise block the client's other invocations.
    if (streams.length > 0 || message.type === MessageType.StreamInvocation) {
      void this.#invoke(message, args, streams);
      return;
    }
    this.#queue.push(() => this.#invoke(message, args, streams));
    this.#pump();
  }

  #pump(): void {
    const max = this.#host.options.maximumParallelInvocationsPerClient;
    while (this.#running < max && this.#queue.length > 0) {
      const run = this.#queue.shift() as () => Promise<void>;
      this.#running++;
      run().finally(() => {
        this.#running--;
        this.#pump();
      });
    }
    this.#updateReadGate();
  }

  /** Stops reading from the socket while invocations or upload items pile up (TCP backpressure). */
  #updateReadGate(): void {
    const ws = this.#ws;
    if (!ws) return;
    const full =
      this.#queue.length >= this.#host.options.maxQueuedInvocationsPerClient ||
      [...this.#uploads.values()].some((u) => u.isFull);
    if (full && !this.#readPaused) {
      this.#readPaused = true;
      ws.pause();
    } else if (!full && this.#readPaused) {
      this.#readPaused = false;
      this.#lastReceivedAt = Date.now();
      ws.resume();
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
    const method = Object.hasOwn(this.#host.definition.methods, target)
      ? this.#host.definition.methods[target]
      : undefined;
    const fail = (error: string) => {
      this.#releaseUploads(uploads);
      if (invocationId !== undefined) this.#complete(invocationId, { error });
    };
    if (!method) {
      this.#log.info({ target }, 'unknown hub method');
      return fail(`Failed to invoke '${target}': unknown hub method.`);
    }
    const controller = isStream ? new AbortController() : undefined;
    if (controller) this.#streams.set(invocationId as string, controller);
    const ctx = controller
      ? { ...this.context, signal: AbortSignal.any([this.#abort.signal, controller.signal]) }
      : this.context;
    try {
      const authorize = this.#host.definition.authorizeInvocation;
      if (authorize && !(await authorize(ctx, target, message.arguments))) {
        this.#streams.delete(invocationId as string);
        return fail(`Failed to invoke '${target}' because user is unauthorized.`);
      }
      const result = await method(ctx, ...args);
      if (isStream) {
        if (!isAsyncIterable(result))
          throw new HubError(`The hub method '${target}' does not return a stream.`);
        // note: the stream runs outside the invocation slot, as in SignalR, so it does not block the client.
        void this.#runStream(invocationId as string, result, ctx.signal, target).then(() =>
          this.#releaseUploads(uploads),
        );
        return;
      }
      if (invocationId !== undefined) {
        if (isAsyncIterable(result)) {
          throw new HubError(`The hub method '${target}' returns a stream; call it with stream().`);
        }
        this.#complete(invocationId, result === undefined ? {} : { result });
      }
      this.#releaseUploads(uploads);
    } catch (error) {
      if (controller) this.#streams.delete(invocationId as string);
      this.#log.warn({ err: error, target }, 'hub method failed');
      fail(this.#errorText(`An unexpected error occurred invoking '${target}' on the server`, error));
    }
  }

  /**
   * The invocation is over: forget its upload streams, so that later items for them are ignored instead
   * of filling a buffer nobody reads (which would stop reading from the socket for good), as ASP.NET does.
   */
  #releaseUploads(uploads: UploadStream[]): void {
    if (uploads.length === 0) return;
    for (const upload of uploads) {
      if (this.#uploads.get(upload.streamId) === upload) this.#uploads.delete(upload.streamId);
      upload.end();
    }
    this.#updateReadGate();
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
        this.#send(formatMessage({ type: MessageType.StreamItem, invocationId, item: next.value }), true);
      }
    } catch (caught) {
      if (!signal.aborted) {
        this.#log.warn({ err: caught, target }, 'stream failed');
        error = this.#errorText(
          `An error occurred on the server while streaming results from '${target}'`,
          caught,
        );
      }
    } finally {
      signal.removeEventListener('abort', stop);
      this.#streams.delete(invocationId);
    }
    this.#complete(invocationId, error === undefined ? {} : { error });
  }

  #complete(invocationId: string, outcome: { result?: unknown; error?: string }): void {
    this.#send(formatMessage({ type: MessageType.Completion, invocationId, ...outcome }), true);
  }

  #errorText(prefix: string, error: unknown): string {
    if (error instanceof HubError || (this.#host.options.enableDetailedErrors && error instanceof Error)) {
      return `${prefix}. ${error instanceof HubError ? 'HubException' : error.name}: ${error.message}`;
    }
    return `${prefix}.`;
  }

  #onProtocolError(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    this.#log.warn({ err: error }, 'closing connection after a protocol error');
    this.close(message, false);
  }

  // ---- outgoing -------------------------------------------------------------------------------------

  #send(frame: string, sequenced: boolean): void {
    if (this.#state === 'ended') return;
    if (sequenced) this.#resume?.sent(frame);
    this.#enqueue(frame);
  }

  #enqueue(frame: string): void {
    const ws = this.#ws;
    if (!ws || (this.#state !== 'open' && this.#state !== 'starting')) return;
    this.#pending.push(frame);
    this.#pendingBytes += frame.length;
    if (this.#pendingBytes + ws.bufferedAmount > this.#host.options.maxBufferedBytesPerClient) {
      return this.#onSlowConsumer(ws);
    }
    this.#scheduleFlush();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || !this.#handshakeDone) return;
    this.#flushScheduled = true;
    setImmediate(() => this.#flush());
  }

  /** Writes everything pending as one frame: the JSON protocol allows many records per frame. */
  #flush(): void {
    this.#flushScheduled = false;
    const ws = this.#ws;
    if (!this.#handshakeDone || this.#pending.length === 0 || !ws || ws.readyState !== WebSocket.OPEN) return;
    const data = this.#pending.length === 1 ? (this.#pending[0] as string) : this.#pending.join('');
    this.#pending = [];
    this.#pendingBytes = 0;
    ws.send(data);
    this.#lastSentAt = Date.now();
  }

  #onSlowConsumer(ws: WebSocket): void {
    const limit = this.#host.options.maxBufferedBytesPerClient;
    this.#log.warn(
      { bufferedBytes: ws.bufferedAmount + this.#pendingBytes, limit },
      'slow consumer disconnected',
    );
    this.#pending = [];
    this.#pendingBytes = 0;
    // note: the socket is backed up, so a Close message would queue behind everything else: terminate.
    ws.terminate();
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
        this.#send(formatMessage({ type: MessageType.Ack, sequenceId }), false);
      }
    }, ACK_INTERVAL_MS);
    this.#ackTimer.unref();
  }

  // ---- ending ---------------------------------------------------------------------------------------

  #onSocketClose(ws: WebSocket, code: number): void {
    if (ws !== this.#ws) return;
    this.#ws = undefined;
    this.#pending = [];
    this.#pendingBytes = 0;
    if (this.#state === 'ended') return;
    // note: like ASP.NET, only an unclean close keeps a stateful connection waiting for its client.
    if (this.#state === 'open' && this.#resume?.resumable && code !== 1000) {
      this.#state = 'detached';
      this.#detachedAt = Date.now();
      this.#readPaused = false;
      this.#log.debug({ code }, 'socket dropped; waiting for a stateful reconnect');
      return;
    }
    this.#end(
      code === 1000 ? undefined : new RelayhubError('ERR_CONNECTION_CLOSED', `Socket closed (${code}).`),
    );
  }

  #end(error: Error | undefined): void {
    if (this.#state === 'ended') return;
    const registered = this.#state !== 'pending' && this.#state !== 'handshake';
    this.#state = 'ended';
    clearTimeout(this.#ackTimer);
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws && ws.readyState === WebSocket.OPEN) ws.close(1000);
    else if (ws && ws.readyState === WebSocket.CONNECTING) ws.terminate();
    this.#abort.abort(error ?? new RelayhubError('ERR_CONNECTION_CLOSED', 'The connection ended.'));
    for (const [, pending] of this.#results) {
      clearTimeout(pending.timer);
      pending.reject(closedError(this.connectionId));
    }
    this.#results.clear();
    for (const upload of this.#uploads.values()) upload.end('The connection ended.');
    this.#uploads.clear();
    this.#queue.length = 0;
    this.#waitingFrames = [];
    this.#host.ended(this, error, { registered, connected: this.#onConnectedCalled });
  }
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

function rawToString(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
