/**
 * `relayhub serve` with several Redis endpoints: every bad REDIS_ENDPOINTS / --redis-endpoint,
 * PUBLIC_URLS / --public-url entry is a startup error (exit 2) that names it, as is a start with no
 * endpoint reachable; `--help` lists the options. (The endpoints at work, across processes:
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
    [
      [],
      { REDIS_ENDPOINTS: 'a=redis://h1 a:secondary=redis://h2' },
      "Bad Redis endpoint entry 'a:secondary=redis://h2'",
    ],
    [[], { REDIS_ENDPOINTS: 'a:backup=redis://h1' }, "not 'backup'"],
    [
      ['--redis-endpoint', 'a=redis://h1', '--public-url', 'c=http://c.example.com'],
      {},
      "Bad public URL entry 'c=http://c.example.com': no endpoint is named 'c'",
    ],
    [[], { REDIS_ENDPOINTS: 'a=redis://h1', PUBLIC_URLS: 'a=ftp://x' }, "Bad public URL entry 'a=ftp://x'"],
    [['--public-url', 'a=http://a.example.com'], {}, 'PUBLIC_URLS and SELF_URL apply to Redis endpoints'],
    [
      ['--redis-endpoint', 'a=redis://h1', '--self-url', 'not-a-url'],
      {},
      "selfUrl 'not-a-url' is not an http(s) URL",
    ],
  ] as [string[], Record<string, string>, string][])('%j %j: exit 2, naming it', async (args, env, said) => {
    const { code, output } = await serve(args, env);
    expect(output).toContain(said);
    expect(code).toBe(2);
  });

  it('refuses endpoints with the memory backplane', async () => {
    const { code, output } = await runCli(
      ['serve', '--port', '0', '--backplane', 'memory', '--redis-endpoint', 'a=redis://h1'],
      { LOG_LEVEL: 'silent' },
    );
    expect(output).toContain("Redis endpoints need the 'pubsub' or 'streams' backplane");
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
