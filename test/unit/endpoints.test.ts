import { describe, expect, it } from 'vitest';
import { RelayhubError } from '../../src/errors.js';
import {
  inboxEndpointOf,
  parseEndpointEntries,
  parsePublicUrls,
  validateEndpoints,
} from '../../src/redis/endpoints.js';
import { endpointsOf } from '../../src/cli/serve.js';
import { createBackplane } from '../../src/backplane/create-backplane.js';
import { EndpointsBackplane } from '../../src/backplane/endpoints/endpoints-backplane.js';

/** Asserts that `fn` throws a RelayhubError with these fields (strings: contained in the field). */
function refuses(fn: () => unknown, fields: { code?: string; message?: string; remedy?: string }): void {
  const expected: Record<string, unknown> = {};
  if (fields.code) expected.code = fields.code;
  if (fields.message) expected.message = expect.stringContaining(fields.message);
  if (fields.remedy) expected.remedy = expect.stringContaining(fields.remedy);
  expect(fn).toThrow(expect.objectContaining(expected));
  expect(fn).toThrow(RelayhubError);
}

describe('parseEndpointEntries (REDIS_ENDPOINTS / --redis-endpoint)', () => {
  it('reads NAME[:type]=URL entries separated by any whitespace, over several values, type primary by default', () => {
    expect(
      parseEndpointEntries([
        'east=redis://10.0.0.1:6379\n  west:secondary=rediss://u:p@10.0.1.1:6380',
        'x:primary=redis://h',
      ]),
    ).toEqual([
      { name: 'east', type: 'primary', url: 'redis://10.0.0.1:6379' },
      { name: 'west', type: 'secondary', url: 'rediss://u:p@10.0.1.1:6380' },
      { name: 'x', type: 'primary', url: 'redis://h' },
    ]);
    expect(parseEndpointEntries([])).toEqual([]);
    expect(parseEndpointEntries(['   '])).toEqual([]);
  });

  it.each([
    ['east', 'NAME[:primary|:secondary]=REDIS_URL'],
    ['=redis://h', 'NAME[:primary|:secondary]=REDIS_URL'],
    ['bad.name=redis://h', 'NAME[:primary|:secondary]=REDIS_URL'],
    ['east:tertiary=redis://h', "'primary' or 'secondary', not 'tertiary'"],
    ['east=http://h', 'redis:// or rediss://'],
  ])('refuses %s with ERR_CONFIG naming the entry and the rule', (entry, rule) => {
    refuses(() => parseEndpointEntries([entry]), { code: 'ERR_CONFIG', message: `'${entry}'`, remedy: rule });
  });

  it('refuses a name given twice, naming the second entry', () => {
    refuses(() => parseEndpointEntries(['a=redis://h1 a:secondary=redis://h2']), {
      message: "'a:secondary=redis://h2'",
      remedy: "'a' is given once",
    });
  });
});

describe('parsePublicUrls (PUBLIC_URLS / --public-url)', () => {
  it('reads NAME=BASE_URL entries, trailing slashes dropped', () => {
    const urls = parsePublicUrls(['east=https://east.example.com/ west=http://10.0.1.1:3000']);
    expect([...urls]).toEqual([
      ['east', 'https://east.example.com'],
      ['west', 'http://10.0.1.1:3000'],
    ]);
  });

  it.each(['east', 'east=redis://h', 'a b=http://h', 'e@st=http://h'])('refuses %s naming it', (entry) => {
    refuses(() => parsePublicUrls([entry]), { code: 'ERR_CONFIG', message: "Bad public URL entry '" });
  });

  it('refuses a name given twice', () => {
    refuses(() => parsePublicUrls(['a=http://h a=http://i']), { remedy: "'a' is given once" });
  });
});

describe('validateEndpoints', () => {
  const redis = { url: 'redis://h' };

  it('fills in the type (primary by default)', () => {
    expect(
      validateEndpoints([
        { name: 'a', redis },
        { name: 'b', redis, type: 'secondary' },
      ]),
    ).toEqual([
      { name: 'a', redis, type: 'primary' },
      { name: 'b', redis, type: 'secondary' },
    ]);
  });

  it('refuses an empty list, a bad or repeated name and an unknown type', () => {
    refuses(() => validateEndpoints([]), { message: 'empty' });
    refuses(() => validateEndpoints([{ name: 'a b', redis }]), { message: "'a b'" });
    refuses(
      () =>
        validateEndpoints([
          { name: 'a', redis },
          { name: 'a', redis },
        ]),
      { message: 'twice' },
    );
    refuses(() => validateEndpoints([{ name: 'a', redis, type: 'backup' as never }]), {
      message: "'backup'",
    });
  });
});

describe('endpointsOf (relayhub serve: REDIS_ENDPOINTS with PUBLIC_URLS)', () => {
  const base = { backplane: 'pubsub' as const, redisCluster: false };

  it('builds the endpoints with their public URLs; none without entries', () => {
    expect(
      endpointsOf({
        ...base,
        redisEndpoint: ['a=redis://h1:6379 b:secondary=redis://h2:6379'],
        publicUrl: ['b=https://b.example.com/'],
      }),
    ).toEqual([
      { name: 'a', type: 'primary', redis: { url: 'redis://h1:6379' } },
      { name: 'b', type: 'secondary', redis: { url: 'redis://h2:6379' }, publicUrl: 'https://b.example.com' },
    ]);
    expect(endpointsOf(base)).toBeUndefined();
  });

  it('with --redis-cluster, reads each endpoint URL as a list of seed nodes', () => {
    expect(
      endpointsOf({ ...base, redisCluster: true, redisEndpoint: ['a=redis://h1:7000,redis://h2:7001'] }),
    ).toEqual([{ name: 'a', type: 'primary', redis: { cluster: ['redis://h1:7000', 'redis://h2:7001'] } }]);
  });

  it('refuses a public URL of no endpoint, public URLs without endpoints, and the memory backplane', () => {
    refuses(() => endpointsOf({ ...base, redisEndpoint: ['a=redis://h'], publicUrl: ['c=http://c'] }), {
      code: 'ERR_CONFIG',
      message: "Bad public URL entry 'c=http://c': no endpoint is named 'c'",
      remedy: 'a',
    });
    refuses(() => endpointsOf({ ...base, publicUrl: ['a=http://a'] }), {
      message: 'PUBLIC_URLS and SELF_URL apply to Redis endpoints',
    });
    refuses(() => endpointsOf({ ...base, selfUrl: 'http://a' }), { message: 'PUBLIC_URLS and SELF_URL' });
    refuses(() => endpointsOf({ ...base, backplane: 'memory', redisEndpoint: ['a=redis://h'] }), {
      message: "Redis endpoints need the 'pubsub' or 'streams' backplane",
    });
  });
});

describe('inboxEndpointOf (the default endpoint of a user reliable inbox)', () => {
  const users = Array.from({ length: 3_000 }, (_, i) => `user-${i}`);
  const named = (...names: string[]) => names.map((name) => ({ name }));

  it('is the same whatever the order of the endpoints, and the same on every call', () => {
    const forward = named('a', 'b', 'c');
    const backward = named('c', 'b', 'a');
    for (const user of users) {
      expect(inboxEndpointOf(user, forward).name).toBe(inboxEndpointOf(user, backward).name);
    }
    expect(inboxEndpointOf('alice', forward)).toBe(inboxEndpointOf('alice', forward));
  });

  it('spreads users over the endpoints about evenly', () => {
    const counts = new Map<string, number>();
    for (const user of users) {
      const name = inboxEndpointOf(user, named('a', 'b', 'c')).name;
      counts.set(name, (counts.get(name) ?? 0) + 1);
    }
    expect([...counts.keys()].sort()).toEqual(['a', 'b', 'c']);
    for (const count of counts.values()) expect(count).toBeGreaterThan(users.length / 3 - 200);
  });

  it('adding an endpoint moves only the users the new one wins', () => {
    let moved = 0;
    for (const user of users) {
      const before = inboxEndpointOf(user, named('a', 'b')).name;
      const after = inboxEndpointOf(user, named('a', 'b', 'c')).name;
      if (after !== before) {
        expect(after).toBe('c');
        moved++;
      }
    }
    expect(moved).toBeGreaterThan(users.length / 3 - 200);
    expect(moved).toBeLessThan(users.length / 3 + 200);
  });

  it('throws ERR_CONFIG without endpoints', () => {
    refuses(() => inboxEndpointOf('alice', []), { code: 'ERR_CONFIG' });
  });
});

describe('EndpointsBackplane and createBackplane options', () => {
  const endpoints = [{ name: 'a', redis: { url: 'redis://127.0.0.1:1' } }];

  it('refuses a selfUrl or publicUrl that is not an http(s) URL, and a kind without PUB/SUB', () => {
    refuses(() => new EndpointsBackplane({ endpoints, selfUrl: 'not-a-url' }), {
      code: 'ERR_CONFIG',
      message: "selfUrl 'not-a-url' is not an http(s) URL",
    });
    refuses(() => new EndpointsBackplane({ endpoints: [{ ...endpoints[0]!, publicUrl: 'ftp://x' }] }), {
      message: "The publicUrl of endpoint 'a' 'ftp://x'",
    });
    refuses(() => new EndpointsBackplane({ endpoints, kind: 'memory' as never }), {
      message: "not 'memory'",
    });
    refuses(() => new EndpointsBackplane({ endpoints: [] }), { message: 'endpoints is empty' });
  });

  it('createBackplane: endpoints build an EndpointsBackplane; not with memory, not with redis', async () => {
    const backplane = createBackplane('streams', { endpoints });
    expect(backplane).toBeInstanceOf(EndpointsBackplane);
    expect(backplane.kind).toBe('streams');
    expect(typeof backplane.openReliable).toBe('function');
    await backplane.close();
    const pubsub = createBackplane('pubsub', { endpoints });
    expect(pubsub.openReliable).toBeUndefined();
    await pubsub.close();
    refuses(() => createBackplane('memory', { endpoints }), { message: 'does not use Redis endpoints' });
    refuses(() => createBackplane('pubsub', { endpoints, redis: 'redis://h' }), {
      message: 'Give either redis or endpoints, not both',
    });
  });
});
