import { describe, expect, it } from 'vitest';
import { postgresUnavailable, redisUnavailable, requireUrl } from '../../src/unavailable.js';

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('unavailable', () => {
  it('says to start Redis when nothing answers, to check the password when it is refused', () => {
    const refused = redisUnavailable(
      'redis://u:pw@h:1',
      withCode('connect ECONNREFUSED h:1', 'ECONNREFUSED'),
    );
    expect(refused.code).toBe('ERR_BACKPLANE_UNAVAILABLE');
    expect(refused.message).toBe(
      'Redis at redis://u:***@h:1 is not reachable (connect ECONNREFUSED h:1). Start it (docker compose up -d redis) or set REDIS_URL.',
    );
    expect(
      redisUnavailable('redis://h', new Error('WRONGPASS invalid username-password pair')).message,
    ).toMatch(/Check the user and password in REDIS_URL\.$/);
    expect(
      redisUnavailable('redis://nohost', withCode('getaddrinfo ENOTFOUND nohost', 'ENOTFOUND')).message,
    ).toMatch(/Check the host name in REDIS_URL\.$/);
  });

  it('tells a missing database or role from a Postgres that is down', () => {
    const url = 'postgres://app:pw@db:5432/shop';
    expect(postgresUnavailable(url, withCode('database "shop" does not exist', '3D000')).message).toBe(
      'Postgres at postgres://app:***@db:5432/shop has no such database (database "shop" does not exist). Create it (createdb shop) or point DATABASE_URL at an existing database.',
    );
    expect(postgresUnavailable(url, withCode('role "app" does not exist', '28000')).message).toMatch(
      /refused the login .*Create the role \(createuser\)/,
    );
    expect(postgresUnavailable(url, withCode('password authentication failed', '28P01')).message).toMatch(
      /fix the user and password/,
    );
    expect(postgresUnavailable(url, withCode('connect ECONNREFUSED', 'ECONNREFUSED')).message).toMatch(
      /is not reachable .*Start it \(docker compose up -d postgres\)/,
    );
  });

  it('requireUrl refuses what is not a URL of the right scheme', () => {
    expect(() => requireUrl('not-a-url', ['redis:'], 'REDIS_URL')).toThrow(
      "REDIS_URL 'not-a-url' is not a valid URL. Use redis://[user:password@]host:port.",
    );
    expect(() => requireUrl('http://x', ['postgres:', 'postgresql:'], 'DATABASE_URL')).toThrow(
      /not a valid URL/,
    );
    expect(() => requireUrl('rediss://h:6380', ['redis:', 'rediss:'], 'REDIS_URL')).not.toThrow();
  });
});
