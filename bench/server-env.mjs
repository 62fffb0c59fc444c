// How the benches start their servers: the argv of a PUB/SUB `serve` and of the socket.io server, and the environment of a server process: the bench's own, without the variables that
// `relayhub serve` would read as settings (the flags the bench passes decide the setup).
const SERVER_SETTINGS = [
  'JWT_SECRET',
  'INSTANCE_ID',
  'BACKPLANE',
  'PORT',
  'HOST',
  'REDIS_URL',
  'CHANNEL_PREFIX',
];

export function withoutServerSettings(environment) {
  const copy = { ...environment };
  for (const name of SERVER_SETTINGS) delete copy[name];
  return copy;
}

/** `node` arguments of `relayhub serve` on a free loopback port with the `backplane` given, plus `extra`. */
export function serveArgs(backplane, redisUrl, channelPrefix, extra = []) {
  return [
    'dist/cli/main.js',
    'serve',
    '--port',
    '0',
    '--host',
    '127.0.0.1',
    '--backplane',
    backplane,
    '--redis-url',
    redisUrl,
    '--channel-prefix',
    channelPrefix,
    ...extra,
  ];
}

/** `node` arguments of `relayhub serve` on a free loopback port with the PUB/SUB backplane, plus `extra`. */
export function pubsubServeArgs(redisUrl, channelPrefix, extra = []) {
  return serveArgs('pubsub', redisUrl, channelPrefix, extra);
}

/** `node` arguments of bench/socketio-server.mjs (socket.io + Redis adapter) on a free loopback port. */
export function socketioServerArgs(redisUrl, key) {
  return ['bench/socketio-server.mjs', '--port', '0', '--redis-url', redisUrl, '--key', key];
}
