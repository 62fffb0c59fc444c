/**
 * `relayhub serve` with several Redis endpoints: a bad REDIS_ENDPOINTS / --redis-endpoint or
 * PUBLIC_URLS / --public-url entry is a startup error (exit 2) that names it (every rule:
 * test/unit/endpoints.test.ts), as is a start with no endpoint reachable; `--help` lists the options. (The endpoints at work, across processes:
 * test/chaos/endpoints-failover.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

const serve = (args: string[], env: Record<string, string> = {}) =>
  runCli(['serve', '--port', '0', '--host', '127.0.0.1', '--backplane', 'pubsub', ...args], {
    LOG_LEVEL: 'silent',
    ...env,
  });

describe('relayhub serve with Redis endpoints: startup errors', () => {
  it.each([
    [['--redis-endpoint', 'east=http://10.0.0.1'], {}, "Bad Redis endpoint entry 'east=http://10.0.0.1'"],
    [[], { REDIS_ENDPOINTS: 'a=redis://h1', PUBLIC_URLS: 'a=ftp://x' }, "Bad public URL entry 'a=ftp://x'"],
  ] as [string[], Record<string, string>, string][])('%j %j: exit 2, naming it', async (args, env, said) => {
    const { code, output } = await serve(args, env);
    expect(output).toContain(said);
    expect(code).toBe(2);
  });

  it('names every endpoint when none is reachable at start', async () => {
    const { code, output } = await serve(
      ['--redis-endpoint', 'a=redis://127.0.0.1:1 b:secondary=redis://127.0.0.1:2'],
      { REDIS_ENDPOINTS: '' },
    );
    expect(output).toContain(
      "No Redis endpoint is reachable ('a' at redis://127.0.0.1:1, 'b' at redis://127.0.0.1:2)",
    );
    expect(code).toBe(2);
  });

  it('lists the options in --help', async () => {
    const { code, output } = await runCli(['serve', '--help']);
    expect(code).toBe(0);
    for (const option of [
      '--redis-endpoint <entry>',
      'REDIS_ENDPOINTS',
      '--public-url <entry>',
      'PUBLIC_URLS',
      '--self-url <url>',
      'SELF_URL',
    ]) {
      expect(output).toContain(option);
    }
  });
});
