import { describe, expect, it } from 'vitest';
import { RelayhubError } from '../../src/errors.js';
import {
  inboxEndpointOf,
  parseEndpointEntries,
  parsePublicUrls,
  validateEndpoints,
} from '../../src/redis/endpoints.js';

/** Runs `fn` and returns the RelayhubError it threw, failing when it did not throw one. */
function thrown(fn: () => unknown): RelayhubError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(RelayhubError);
    return error as RelayhubError;
  }
  throw new Error('expected an error');
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
    const error = thrown(() => parseEndpointEntries([entry]));
    expect(error.code).toBe('ERR_CONFIG');
    expect(error.message).toContain(`'${entry}'`);
    expect(error.remedy).toContain(rule);
  });

  it('refuses a name given twice, naming the second entry', () => {
    const error = thrown(() => parseEndpointEntries(['a=redis://h1 a:secondary=redis://h2']));
    expect(error.message).toContain("'a:secondary=redis://h2'");
    expect(error.remedy).toContain("'a' is given once");
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
    const error = thrown(() => parsePublicUrls([entry]));
    expect(error.code).toBe('ERR_CONFIG');
    expect(error.message).toMatch(/^Bad public URL entry '/);
  });

  it('refuses a name given twice', () => {
    expect(thrown(() => parsePublicUrls(['a=http://h a=http://i'])).remedy).toContain("'a' is given once");
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
    expect(thrown(() => validateEndpoints([])).message).toContain('empty');
    expect(thrown(() => validateEndpoints([{ name: 'a b', redis }])).message).toContain("'a b'");
    expect(
      thrown(() =>
        validateEndpoints([
          { name: 'a', redis },
          { name: 'a', redis },
        ]),
      ).message,
    ).toContain('twice');
    expect(
      thrown(() => validateEndpoints([{ name: 'a', redis, type: 'backup' as never }])).message,
    ).toContain("'backup'");
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
    expect(thrown(() => inboxEndpointOf('alice', [])).code).toBe('ERR_CONFIG');
  });
});
