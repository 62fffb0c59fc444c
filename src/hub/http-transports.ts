import type { IncomingMessage, ServerResponse } from 'node:http';
import type { HubOptions } from '../config.js';
import type { TransferFormat } from '../protocol/hub-protocol.js';
import { answer } from '../transport/http-sends.js';
import { LongPollingTransport } from '../transport/long-polling.js';
import { ServerSentEventsTransport } from '../transport/sse.js';
import type { TransportKind } from '../transport/transport.js';
import type { Principal } from './auth.js';
import { type ConnectionTokens, connectionForToken } from './connection-token.js';
import type { HubRequest } from './hub-request.js';
import type { HubRuntime } from './hub-runtime.js';

const MIN_PAYLOAD_BYTES = 1 << 20;

/** The largest WebSocket frame or POST body accepted: it may batch many messages, each checked alone. */
export const maxPayloadBytes = (options: HubOptions): number =>
  Math.max(options.maximumReceiveMessageSize * 4, MIN_PAYLOAD_BYTES);

/** What negotiate lists: the transports turned on, each with the formats of the protocols turned on. */
export function availableTransports(
  options: HubOptions,
): { transport: TransportKind; transferFormats: TransferFormat[] }[] {
  const formats: TransferFormat[] = [];
  if (options.protocols.includes('json')) formats.push('Text');
  if (options.protocols.includes('messagepack')) formats.push('Binary');
  return options.transports
    .map((transport) => ({
      transport,
      // note: an event stream carries text only, so SSE never offers Binary (as in SignalR).
      transferFormats: transport === 'ServerSentEvents' ? formats.filter((f) => f === 'Text') : formats,
    }))
    .filter((t) => t.transferFormats.length > 0);
}

/**
 * The HTTP transports' requests at `<hub>?id=<token>` (TransportProtocols.md): `GET` opens the event stream
 * (`Accept: text/event-stream`) or polls, `POST` carries the client's payloads, `DELETE` ends a long
 * polling connection. The caller has authenticated and authorized the request; `request` snapshots it.
 */
export function serveHttpTransport(
  hub: HubRuntime,
  tokens: ConnectionTokens,
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  principal: Principal,
  request: () => HubRequest,
): void {
  const options = hub.options;
  const token = url.searchParams.get('id');
  if (!token) return answer(res, 400, "The 'id' query parameter is missing; negotiate first.");
  if (req.method !== 'GET' && req.method !== 'POST' && req.method !== 'DELETE') {
    res.setHeader('Allow', 'GET, POST, DELETE');
    return answer(res, 405, 'Use GET, POST or DELETE.');
  }
  // note: a signed token opens its connection with the first GET, on the instance that issued it only:
  // these transports need every request on the instance that holds the connection (affinity).
  const found = connectionForToken(hub, tokens, token, principal, {
    create: req.method === 'GET',
    anyInstance: false,
  });
  if (found === 403) return answer(res, 403, 'The connection belongs to another user.');
  if (found === 404) return answer(res, 404, 'No connection with this id.');
  const connection = found;
  if (connection.userId !== principal.userId)
    return answer(res, 403, 'The connection belongs to another user.');
  const transport = connection.transport;
  switch (req.method) {
    case 'GET': {
      const sse = (req.headers.accept ?? '').includes('text/event-stream');
      const kind: TransportKind = sse ? 'ServerSentEvents' : 'LongPolling';
      if (!options.transports.includes(kind)) {
        return answer(res, 404, `The ${kind} transport is turned off on this server.`);
      }
      if (!transport) {
        if (connection.state !== 'pending') return answer(res, 404, 'The connection has ended.');
        // note: ctx.request is the request that started the transport (as the upgrade's for WebSockets).
        connection.request = request();
        if (sse) return connection.attach(new ServerSentEventsTransport(req, res));
        const polling = new LongPollingTransport({
          pollTimeoutMs: options.longPollTimeoutMs,
          idleTimeoutMs: options.clientTimeoutMs,
        });
        connection.attach(polling);
        return polling.start(res);
      }
      if (transport instanceof LongPollingTransport && !sse) return transport.poll(req, res);
      return answer(res, 400, `This connection uses the ${transport.kind} transport.`);
    }
    case 'POST':
      if (transport instanceof LongPollingTransport || transport instanceof ServerSentEventsTransport) {
        if (connection.state === 'ended') return answer(res, 404, 'The connection has ended.');
        void transport.sends.receive(req, res, maxPayloadBytes(options));
        return;
      }
      return answer(
        res,
        400,
        transport ? 'WebSocket connections do not take POSTs.' : 'Open the transport (GET) first.',
      );
    case 'DELETE':
      if (transport instanceof LongPollingTransport) {
        transport.delete();
        return answer(res, 202);
      }
      return answer(res, 400, 'Only long polling connections are ended with DELETE.');
  }
}
