// The environment of a server process a bench starts: the bench's own, without the variables that
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
