/**
 * Whether `relayhub serve` mounts the example orders API: only with `--example-app` (or
 * `EXAMPLE_APP=true`), only on the streams backplane and only with a JWT secret (it authenticates with
 * the hub's JWT); a plain production `serve` answers 404 there. A JWT secret under 32 bytes stops `serve`
 * with one line (exit 2).
 *
 * Needs `npm run build`.
 */
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI_PATH, InstancePool } from '../helpers/process.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';

/** Runs `relayhub <args>` to its exit (these exit at once) with a clean env plus `env`. */
function runCli(args: string[], env: Record<string, string> = {}): { code: number | null; output: string } {
  const { JWT_SECRET: _secret, EXAMPLE_APP: _app, ...inherited } = process.env;
  const result = spawnSync(process.execPath, [CLI_PATH, ...args], {
    encoding: 'utf8',
    timeout: 15_000,
    env: { ...inherited, PORT: '0', ...env },
  });
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

const postOrder = (url: string) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: '{"userId":"alice","status":"shipped"}',
  });

describe('relayhub serve and the example app', () => {
  const instances = new InstancePool();
  const prefixes: string[] = [];
  afterEach(async () => {
    await instances.stopAll();
    for (const prefix of prefixes.splice(0)) await deletePrefix(REDIS_URL, prefix);
  });

  const start = (args: string[], env: Record<string, string> = {}) => {
    const channelPrefix = uniquePrefix('example-app');
    prefixes.push(channelPrefix);
    return instances.start({ redisUrl: REDIS_URL, channelPrefix, backplane: 'streams', args, env });
  };

  it('does not mount the orders API without --example-app, even on streams', async () => {
    const envs: Record<string, string>[] = [{}, { EXAMPLE_APP: 'false' }];
    for (const env of envs) {
      const hub = await start([], env);
      const response = await postOrder(hub.url('/api/orders/42/status'));
      expect(response.status).toBe(404);
      await hub.stop();
    }
  });

  it('mounts it with --example-app or EXAMPLE_APP=true, behind the hub JWT', async () => {
    for (const [args, env] of [
      [['--example-app'], {}],
      [[], { EXAMPLE_APP: 'true' }],
    ] as const) {
      const hub = await start([...args], env);
      const response = await postOrder(hub.url('/api/orders/42/status'));
      expect(response.status).toBe(401);
      expect(await response.json()).toEqual({
        error: 'A bearer token (the same JWT as the hub) is required.',
      });
      await hub.stop();
    }
  });

  it('refuses --example-app off the streams backplane or without a JWT secret, in one line', () => {
    const common = ['serve', '--host', '127.0.0.1', '--redis-url', REDIS_URL, '--channel-prefix', 'rh-x'];
    const pubsub = runCli([
      ...common,
      '--backplane',
      'pubsub',
      '--example-app',
      '--jwt-secret',
      'a'.repeat(32),
    ]);
    expect(pubsub.code).toBe(2);
    expect(pubsub.output).toMatch(
      /relayhub: The example app needs the streams backplane\. Add --backplane streams/,
    );
    const anonymous = runCli([...common, '--backplane', 'streams', '--example-app']);
    expect(anonymous.code).toBe(2);
    expect(anonymous.output).toMatch(
      /The example orders API authenticates with the hub JWT\. Set JWT_SECRET/,
    );
  });

  it('refuses a JWT secret under 32 bytes (the old demo secret included) with exit 2', () => {
    for (const secret of ['x', 'relayhub-dev-secret-change-me']) {
      const result = runCli(['serve', '--backplane', 'memory', '--host', '127.0.0.1'], {
        JWT_SECRET: secret,
      });
      expect(result.code, result.output).toBe(2);
      expect(result.output).toMatch(
        /relayhub: The JWT secret is \d+ bytes; HS256 needs at least 32 \(RFC 7518 §3\.2\)\./,
      );
    }
  });
});
