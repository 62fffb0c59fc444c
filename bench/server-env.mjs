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
  return ['dist/cli/main.js', ...serveCommand(backplane, redisUrl, channelPrefix, extra)];
}

/** The CLI arguments of {@link serveArgs}, without the script (what `relayhub` itself is given). */
export function serveCommand(backplane, redisUrl, channelPrefix, extra = []) {
  return [
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

/**
 * `node` flags that make a server force a full GC on SIGUSR2 (two `gc()` calls) and then print one line
 * `GC-MEMORY <process.memoryUsage() as JSON>`: the benches read the heap that is really live.
 */
export const GC_ON_SIGNAL_ARGS = [
  '--expose-gc',
  '--import',
  `data:text/javascript,${encodeURIComponent(
    "process.on('SIGUSR2', () => { globalThis.gc(); globalThis.gc(); console.log('GC-MEMORY ' + JSON.stringify(process.memoryUsage())); });",
  )}`,
];

/** The `process.memoryUsage()` of a `GC-MEMORY` line of {@link GC_ON_SIGNAL_ARGS}, else undefined. */
export function gcMemoryOf(line) {
  return line.startsWith('GC-MEMORY ') ? JSON.parse(line.slice('GC-MEMORY '.length)) : undefined;
}
