import { afterEach, describe, expect, it } from 'vitest';
import { buildClient, ClientPool } from '../helpers/client.js';
import { runCli as run } from '../helpers/cli.js';
import { InstancePool } from '../helpers/process.js';
import { REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

describe('relayhub CLI', () => {
  const instances = new InstancePool();
  const clients = new ClientPool();
  afterEach(async () => {
    await clients.stopAll();
    await instances.stopAll();
  });

  it('serve --backplane memory: SIGTERM sends every client a Close that allows reconnecting, then exits 0', async () => {
    const instance = await instances.start({
      redisUrl: REDIS_URL,
      channelPrefix: uniquePrefix('cli'),
      args: ['--backplane', 'memory'],
    });
    const client = clients.add(buildClient(instance.url(), { token: await signToken('alice') }));
    let closeError: Error | undefined;
    let closed = false;
    client.onclose((error) => {
      closed = true;
      closeError = error;
    });
    await client.start();
    // note: the official client reconnects after a Close only when it carried allowReconnect: true.
    const reconnecting = clients.add(
      buildClient(instance.url(), { token: await signToken('bob'), reconnectDelays: [60_000] }),
    );
    let reconnectError: Error | undefined;
    reconnecting.onreconnecting((error) => {
      reconnectError = error;
    });
    await reconnecting.start();
    expect(await client.invoke('Echo', 'hi')).toBe('hi');
    instance.kill('SIGTERM');
    expect(await instance.exited).toEqual({ code: 0, signal: null });
    await waitFor(() => closed && reconnectError !== undefined);
    expect(closeError?.message).toMatch(/shutting down/);
    expect(reconnectError?.message).toMatch(/shutting down/);
  });

  it('says in one line, with the command that starts it, when Redis is not reachable', async () => {
    const { code, output } = await run([
      'serve',
      '--port',
      '0',
      '--backplane',
      'pubsub',
      '--redis-url',
      'redis://127.0.0.1:1',
    ]);
    expect(code).toBe(2);
    expect(output).toMatch(
      /relayhub: Redis at redis:\/\/127\.0\.0\.1:1 is not reachable .*docker compose up -d redis/,
    );
  });

  it('reads REDIS_URL as Cluster seed nodes with --redis-cluster or REDIS_CLUSTER=true (and not with false)', async () => {
    const seeds = 'redis://127.0.0.1:1,redis://127.0.0.1:2';
    const flag = await run([
      'serve',
      '--port',
      '0',
      '--backplane',
      'pubsub',
      '--redis-cluster',
      '--redis-url',
      seeds,
    ]);
    expect(flag.code).toBe(2);
    expect(flag.output).toMatch(
      /relayhub: Redis at redis:\/\/127\.0\.0\.1:1,redis:\/\/127\.0\.0\.1:2 \(Cluster\) is not reachable/,
    );
    const env = await run(['serve', '--port', '0', '--backplane', 'streams'], {
      REDIS_CLUSTER: 'true',
      REDIS_URL: seeds,
    });
    expect(env.output).toMatch(/\(Cluster\) is not reachable/);
    const off = await run(['serve', '--port', '0', '--backplane', 'pubsub'], {
      REDIS_CLUSTER: 'false',
      REDIS_URL: 'redis://127.0.0.1:1',
    });
    expect(off.output).toMatch(/Redis at redis:\/\/127\.0\.0\.1:1 is not reachable/);
  });

  it('says so when Postgres is not reachable for migrate, and rejects bad flags with usage', async () => {
    const migrate = await run(['migrate', '--database-url', 'postgres://postgres@127.0.0.1:1/test']);
    expect(migrate.code).toBe(2);
    expect(migrate.output).toMatch(/Postgres at .* is not reachable .*docker compose up -d postgres/);
    const bad = await run(['serve', '--backplane', 'kafka']);
    expect(bad.code).toBe(1);
    expect(bad.output).toMatch(/Allowed choices are memory, pubsub, streams/);
  });
});
