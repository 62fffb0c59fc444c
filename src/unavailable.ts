import { RelayhubError } from './errors.js';
import { redactUrl } from './redact.js';

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));
const code = (error: unknown): string | undefined =>
  typeof (error as { code?: unknown } | null)?.code === 'string'
    ? (error as { code: string }).code
    : undefined;

/** Throws `ERR_CONFIG` when `url` is not a URL of one of `protocols` (e.g. `REDIS_URL=not-a-url`). */
export function requireUrl(url: string, protocols: readonly string[], setting: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || !protocols.includes(parsed.protocol)) {
    throw new RelayhubError('ERR_CONFIG', `${setting} '${redactUrl(url)}' is not a valid URL.`, {
      remedy: `Use ${protocols[0]}//[user:password@]host:port${setting === 'DATABASE_URL' ? '/database' : ''}.`,
    });
  }
}

/** Redis cannot be used: one sentence with the (redacted) URL, the cause, and advice that fits it. */
export function redisUnavailable(url: string, error: unknown): RelayhubError {
  const text = message(error);
  const remedy = /NOAUTH|WRONGPASS|invalid password|invalid username/i.test(text)
    ? 'Check the user and password in REDIS_URL.'
    : code(error) === 'ENOTFOUND' || /ENOTFOUND|EAI_AGAIN/.test(text)
      ? 'Check the host name in REDIS_URL.'
      : 'Start it (docker compose up -d redis) or set REDIS_URL.';
  return new RelayhubError(
    'ERR_BACKPLANE_UNAVAILABLE',
    `Redis at ${redactUrl(url)} is not reachable (${text}).`,
    {
      remedy,
      cause: error,
    },
  );
}

/** Postgres cannot be used: as {@link redisUnavailable}; a missing database or role is not "start it". */
export function postgresUnavailable(url: string, error: unknown): RelayhubError {
  const text = message(error);
  const database = (() => {
    try {
      return decodeURIComponent(new URL(url).pathname.slice(1)) || 'postgres';
    } catch {
      return 'the database';
    }
  })();
  let what = 'is not reachable';
  let remedy = 'Start it (docker compose up -d postgres) or set DATABASE_URL.';
  switch (code(error)) {
    case '3D000':
      what = 'has no such database';
      remedy = `Create it (createdb ${database}) or point DATABASE_URL at an existing database.`;
      break;
    case '28000':
    case '28P01':
      what = 'refused the login';
      remedy = 'Create the role (createuser) or fix the user and password in DATABASE_URL.';
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      remedy = 'Check the host name in DATABASE_URL.';
      break;
  }
  return new RelayhubError('ERR_BACKPLANE_UNAVAILABLE', `Postgres at ${redactUrl(url)} ${what} (${text}).`, {
    remedy,
    cause: error,
  });
}
