export type {
  Audience,
  Backplane,
  BackplaneHealth,
  HubChannel,
  Interest,
  LocalHub,
  LocalUsers,
  ReliableLane,
  ReliableMessage,
  ReliableMetrics,
  ReliableRecipient,
  ReliableSendResult,
} from './backplane/backplane.js';
export {
  type BackplaneKind,
  createBackplane,
  type NamedBackplaneOptions,
  type RedisOption,
} from './backplane/create-backplane.js';
export { DEFAULT_CHANNEL_PREFIX } from './redis/keys.js';
export {
  type EndpointConfig,
  type EndpointType,
  inboxEndpointOf,
  parseEndpointEntries,
  parsePublicUrls,
} from './redis/endpoints.js';
export {
  EndpointsBackplane,
  type EndpointsBackplaneOptions,
  type EndpointsHealth,
} from './backplane/endpoints/endpoints-backplane.js';
export {
  DefaultEndpointRouter,
  type EndpointRouter,
  type EndpointView,
  type NegotiateRequest,
} from './backplane/endpoints/endpoint-router.js';
export type { EndpointHealthReport } from './backplane/endpoints/endpoint-health.js';
export type { DedupWindowOptions } from './backplane/endpoints/dedup-window.js';
export { PubSubBackplane, type PubSubBackplaneOptions } from './backplane/pubsub/pubsub-backplane.js';
export type { RedisConnectionOptions } from './backplane/pubsub/redis-connection.js';
export type { RedisOptions, RedisTarget } from './redis/connection.js';
export type { PubSubMode } from './redis/pubsub.js';
export {
  ReliableProducer,
  type Durability,
  type ReliableProducerOptions,
  type Retention,
} from './backplane/streams/reliable-producer.js';
export { StreamsBackplane, type StreamsBackplaneOptions } from './backplane/streams/streams-backplane.js';
export {
  DEFAULT_RELIABLE_OPTIONS,
  type DeadLetter,
  type ReliableOptions,
} from './backplane/streams/streams-lane.js';
export { GAP_TARGET, type ReliableMeta } from './backplane/streams/user-session.js';
export type { ReliableClients, ReliableUserProxy } from './hub/reliable-clients.js';
export {
  MemoryBackplane,
  type MemoryBackplaneOptions,
  MemoryBus,
} from './backplane/memory/memory-backplane.js';
export { DEFAULT_HUB_OPTIONS, type HubOptions } from './config.js';
export type { ProtocolName } from './protocol/hub-protocol.js';
export type { TransportKind } from './transport/transport.js';
export { type ErrorCode, HubError, isRelayhubError, ProtocolError, RelayhubError } from './errors.js';
export { DEMO_HUB_PATH, demoHub } from './example/demo-hub.js';
export {
  type Authenticate,
  anonymous,
  bearerToken,
  type JwtOptions,
  jwtAuthenticator,
  MIN_JWT_SECRET_BYTES,
  type Principal,
} from './hub/auth.js';
export type {
  CallerClients,
  ClientProxy,
  GroupManager,
  HubClients,
  SingleClientProxy,
} from './hub/clients.js';
export type { ClientErrorKind, HubStats } from './hub/client-errors.js';
export type { Authorize, ConnectionContext, HubContext, HubDefinition, HubMethod } from './hub/hub.js';
export { DEFAULT_HTTP_EDGE_OPTIONS, type HttpEdgeOptions } from './hub/http-edge.js';
export type { HubRequest } from './hub/hub-request.js';
export type { CorsOptions } from './hub/cors.js';
export { HubServer, type HubServerOptions } from './hub/hub-server.js';
export type { HubServerStats } from './metrics/hub-metrics.js';
export type { MetricsOptions } from './metrics/metrics-endpoint.js';
export {
  createOutbox,
  DEFAULT_OUTBOX_HUB,
  DEFAULT_OUTBOX_TTL_MS,
  type DrizzleLike,
  enqueue,
  type Outbox,
  type OutboxDeployment,
  type OutboxMessage,
  type PgQueryable,
} from './outbox/enqueue.js';
export { MIGRATIONS_DIR, migrate } from './outbox/migrate.js';
export {
  DEFAULT_MAINTENANCE_OPTIONS,
  type DeadLetterHandler,
  type MaintenanceOptions,
  type OutboxDeadLetter,
} from './worker/maintenance.js';
export { OutboxWorker, type OutboxWorkerOptions, type OutboxWorkerStats } from './worker/outbox-worker.js';
