/**
 * Several Redis deployments behind one hub API: each is an *endpoint* with a name, a Redis target (one
 * node or a Cluster) and a type. What the hub backplanes, the CLI and the outbox worker share: the entry
 * syntax of `REDIS_ENDPOINTS` / `--redis-endpoint` and `PUBLIC_URLS` / `--public-url`, and the default
 * choice of the endpoint that holds a user's reliable inbox (every instance and worker must agree on it).
 */
import { createHash } from 'node:crypto';
import { RelayhubError } from '../errors.js';
import type { RedisTarget } from './connection.js';

/**
 * `primary`: this instance's clients are served through it (it listens there, negotiate sends clients
 * there). `secondary`: server-to-client traffic only; listened on when no primary is online.
 */
export type EndpointType = 'primary' | 'secondary';

export interface EndpointConfig {
  /** A short stable name (`[A-Za-z0-9_-]{1,64}`), the same on every instance and worker. */
  name: string;
  redis: RedisTarget;
  /** @default 'primary' */
  type?: EndpointType;
  /** The public base URL of the hub instances whose primary is this endpoint (negotiate redirects). */
  publicUrl?: string;
}

const NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Validates a list of endpoints: at least one, names well-formed and unique. Returns it with types filled in. */
export function validateEndpoints(
  endpoints: readonly EndpointConfig[],
): (EndpointConfig & { type: EndpointType })[] {
  if (endpoints.length === 0) {
    throw new RelayhubError('ERR_CONFIG', 'endpoints is empty.', {
      remedy: 'Give at least one endpoint, e.g. [{ name: "a", redis: { url: "redis://127.0.0.1:6379" } }].',
    });
  }
  const seen = new Set<string>();
  return endpoints.map((endpoint) => {
    if (!NAME.test(endpoint.name)) {
      throw new RelayhubError('ERR_CONFIG', `Endpoint name '${endpoint.name}' is not valid.`, {
        remedy: 'Use 1 to 64 letters, digits, "_" or "-".',
      });
    }
    if (seen.has(endpoint.name)) {
      throw new RelayhubError('ERR_CONFIG', `Endpoint '${endpoint.name}' is given twice.`, {
        remedy: 'Give each endpoint once, with a unique name.',
      });
    }
    seen.add(endpoint.name);
    const type = endpoint.type ?? 'primary';
    if (type !== 'primary' && type !== 'secondary') {
      throw new RelayhubError('ERR_CONFIG', `Endpoint '${endpoint.name}' has type '${String(type)}'.`, {
        remedy: "Use 'primary' or 'secondary'.",
      });
    }
    return { ...endpoint, type };
  });
}

/** One `NAME[:primary|:secondary]=REDIS_URL` entry, as parsed. */
export interface EndpointEntry {
  name: string;
  type: EndpointType;
  url: string;
}

/**
 * Parses `REDIS_ENDPOINTS` / `--redis-endpoint` values: entries `NAME[:primary|:secondary]=REDIS_URL`
 * separated by whitespace (type defaults to primary). A bad entry throws `ERR_CONFIG` naming it.
 */
export function parseEndpointEntries(values: readonly string[]): EndpointEntry[] {
  const entries: EndpointEntry[] = [];
  for (const entry of splitEntries(values)) {
    const match = /^([^:=\s]+)(?::([^=\s]*))?=(\S+)$/.exec(entry);
    const name = match?.[1];
    const type = match?.[2] ?? 'primary';
    const url = match?.[3];
    if (!match || name === undefined || url === undefined || !NAME.test(name)) {
      throw badEntry(
        entry,
        'NAME[:primary|:secondary]=REDIS_URL, the name of 1 to 64 letters, digits, "_" or "-"',
      );
    }
    if (type !== 'primary' && type !== 'secondary') {
      throw badEntry(entry, `the type is 'primary' or 'secondary', not '${type}'`);
    }
    if (!/^rediss?:\/\//.test(url)) throw badEntry(entry, 'the URL starts with redis:// or rediss://');
    if (entries.some((e) => e.name === name)) throw badEntry(entry, `the name '${name}' is given once`);
    entries.push({ name, type, url });
  }
  return entries;
}

/**
 * Parses `PUBLIC_URLS` / `--public-url` values: entries `NAME=BASE_URL` (http or https) separated by
 * whitespace. A bad entry throws `ERR_CONFIG` naming it.
 */
export function parsePublicUrls(values: readonly string[]): Map<string, string> {
  const urls = new Map<string, string>();
  for (const entry of splitEntries(values)) {
    const match = /^([^=\s]+)=(\S+)$/.exec(entry);
    const name = match?.[1];
    const url = match?.[2];
    if (!match || name === undefined || url === undefined || !NAME.test(name)) {
      throw badPublicUrl(entry, 'NAME=BASE_URL');
    }
    if (!/^https?:\/\//.test(url)) throw badPublicUrl(entry, 'the URL starts with http:// or https://');
    if (urls.has(name)) throw badPublicUrl(entry, `the name '${name}' is given once`);
    urls.set(name, url.replace(/\/+$/, ''));
  }
  return urls;
}

function splitEntries(values: readonly string[]): string[] {
  return values.flatMap((value) => value.split(/\s+/)).filter((entry) => entry.length > 0);
}

function badEntry(entry: string, rule: string): RelayhubError {
  return new RelayhubError('ERR_CONFIG', `Bad Redis endpoint entry '${entry}'.`, {
    remedy: `Write it as ${rule}; e.g. REDIS_ENDPOINTS="east=redis://10.0.0.1:6379 west:secondary=redis://10.0.1.1:6379".`,
  });
}

function badPublicUrl(entry: string, rule: string): RelayhubError {
  return new RelayhubError('ERR_CONFIG', `Bad public URL entry '${entry}'.`, {
    remedy: `Write it as ${rule}; e.g. PUBLIC_URLS="east=https://east.example.com west=https://west.example.com".`,
  });
}

/**
 * The default endpoint of a user's reliable inbox: a rendezvous (highest random weight) hash of the user
 * id over the names of every endpoint given. Stable: the same user gets the same endpoint on every
 * instance and worker configured with the same endpoint names, whatever their types there (an endpoint
 * is primary for some instances and secondary for others, so a hash over "the primaries" would differ
 * between instances); adding an endpoint moves only the users it wins.
 */
export function inboxEndpointOf<E extends { name: string }>(userId: string, endpoints: readonly E[]): E {
  let best: E | undefined;
  let bestWeight = -1n;
  for (const endpoint of endpoints) {
    const digest = createHash('sha1').update(endpoint.name).update('\0').update(userId).digest();
    const weight = digest.readBigUInt64BE(0);
    if (weight > bestWeight || (weight === bestWeight && best !== undefined && endpoint.name < best.name)) {
      best = endpoint;
      bestWeight = weight;
    }
  }
  if (best === undefined) {
    throw new RelayhubError('ERR_CONFIG', 'No endpoint to hold the reliable inbox.', {
      remedy: 'Configure at least one Redis endpoint.',
    });
  }
  return best;
}
