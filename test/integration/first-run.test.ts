import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { type CliProcess, freePortRange, runCli, startCli, startCommand } from '../helpers/cli.js';
import { metricValue, scrape } from '../helpers/metrics.js';
import { createEmptySchema, type EmptySchema } from '../helpers/outbox.js';
import { InstancePool } from '../helpers/process.js';
import { deletePrefix, REDIS_URL, uniquePrefix } from '../helpers/redis.js';
import { signToken } from '../helpers/server.js';
import { waitFor } from '../helpers/wait-for.js';

const UNREACHABLE_REDIS = 'redis://127.0.0.1:1';
const UNREACHABLE_PG = 'postgres://postgres@127.0.0.1:1/test';
const lines = (output: string) => output.trim().split('\n');

describe('first run (the CLI as a new user meets it)', () => {
  const instances = new InstancePool();
  const cleanups: (() => Promise<unknown>)[] = [];
  let demo: CliProcess | undefined;
  afterEach(async () => {
    demo?.signalGroup('SIGKILL');
    demo = undefined;
    await instances.stopAll();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  it('npm start prints the page, the dashboard and a curl that works; Ctrl-C stops everything, one line per process, exit 0', async () => {
    const schema: EmptySchema = await createEmptySchema('demo');
    cleanups.push(() => schema.drop());
    const channelPrefix = uniquePrefix('demo');
    cleanups.push(() => deletePrefix(REDIS_URL, channelPrefix));
    const port = await freePortRange(3);
    // note: what a user runs; --ignore-scripts skips the prestart build (npm test has just built dist/)
    demo = startCommand(
      'npm',
      ['start', '--ignore-scripts', '--', '--port', String(port), '--host', '127.0.0.1'],
      {
        REDIS_URL,
        DATABASE_URL: schema.databaseUrl,
        CHANNEL_PREFIX: channelPrefix,
        LOG_LEVEL: 'info',
      },
    );
    const running = demo;
    await waitFor(() => running.output().match(/relayhub listening on port/g)?.length === 2, {
      timeoutMs: 20_000,
      message: 'the demo did not start both hubs',
    });
    await waitFor(() => /relayhub worker \S+ started/.test(running.output()), { timeoutMs: 10_000 });
    const output = running.output();
    expect(output).toContain(`demo page:  http://localhost:${port}/`);
    expect(output).toContain(`dashboard:  http://localhost:${port}/relayhub/?token=`);
    const curl = /curl -X POST (\S+) -H 'Authorization: Bearer (\S+)'/.exec(output);
    expect(curl).not.toBeNull();
    const body = /-d '(\{.*\})'/.exec(output)?.[1] as string;
    const posted = await fetch(curl![1]!.replace('localhost', '127.0.0.1'), {
      method: 'POST',
      headers: { Authorization: `Bearer ${curl![2]}`, 'Content-Type': 'application/json' },
      body,
    });
    expect(posted.status).toBe(200);
    // one record per event: no JSON line repeats the listening lines
    expect(output.match(/listening/g)?.length).toBe(2);

    const before = running.output().length;
    running.signalGroup('SIGINT');
    expect(await running.exited).toBe(0);
    const shutdown = lines(running.output().slice(before));
    expect(shutdown.sort()).toEqual(
      [
        'relayhub demo stopped (SIGINT)',
        'relayhub demo-hub-1 stopped (SIGTERM)',
        'relayhub demo-hub-2 stopped (SIGTERM)',
        'relayhub worker demo-worker-1 stopped (SIGTERM)',
      ].sort(),
    );
    demo = undefined;
  }, 60_000);

  it('an unreachable Redis or Postgres is exactly one line, with the password redacted', async () => {
    const runs = await Promise.all([
      runCli([
        'serve',
        '--port',
        '0',
        '--backplane',
        'pubsub',
        '--redis-url',
        'redis://u:hunter2@127.0.0.1:1',
      ]),
      runCli(['serve', '--port', '0', '--backplane', 'streams', '--redis-url', UNREACHABLE_REDIS]),
      runCli(['worker', '--redis-url', UNREACHABLE_REDIS]),
      runCli(['demo', '--port', '0', '--redis-url', UNREACHABLE_REDIS]),
      runCli(['worker', '--database-url', 'postgres://postgres:hunter2@127.0.0.1:1/test']),
      runCli(['migrate', '--database-url', UNREACHABLE_PG]),
      runCli(['demo', '--port', '0', '--database-url', UNREACHABLE_PG]),
    ]);
    for (const { code, output } of runs) {
      expect(code, output).toBe(2);
      expect(lines(output), output).toHaveLength(1);
      expect(output).toMatch(/^relayhub: (Redis|Postgres) at \S+ is not reachable \(connect ECONNREFUSED/);
      expect(output).not.toContain('hunter2');
    }
    expect(runs[0]!.output).toContain('redis://u:***@127.0.0.1:1');
    expect(runs[0]!.output).toContain('docker compose up -d redis');
    expect(runs[4]!.output).toContain('postgres://postgres:***@127.0.0.1:1/test');
  });

  it('gives advice that fits the cause: a missing database or role, a value that is not a URL', async () => {
    const [database, role, redisUrl, databaseUrl] = await Promise.all([
      runCli(['migrate', '--database-url', 'postgres://postgres@127.0.0.1:5432/rh_no_such_db']),
      runCli(['migrate', '--database-url', 'postgres://rh_no_such_role@127.0.0.1:5432/test']),
      runCli(['serve', '--port', '0', '--backplane', 'pubsub'], { REDIS_URL: 'not-a-url' }),
      runCli(['worker'], { DATABASE_URL: 'not-a-url' }),
    ]);
    for (const run of [database, role, redisUrl, databaseUrl]) {
      expect(run.code, run.output).toBe(2);
      expect(lines(run.output), run.output).toHaveLength(1);
      expect(run.output).not.toMatch(/Start it/);
    }
    expect(database.output).toMatch(/has no such database .*createdb rh_no_such_db/);
    expect(role.output).toMatch(/refused the login .*rh_no_such_role.*createuser/);
    expect(redisUrl.output).toBe(
      "relayhub: REDIS_URL 'not-a-url' is not a valid URL. Use redis://[user:password@]host:port.\n",
    );
    expect(databaseUrl.output).toMatch(/DATABASE_URL 'not-a-url' is not a valid URL/);
  });

  it('/healthz reflects Postgres when the orders API is in use, and a 503 from it logs its cause once', async () => {
    const instance = await instances.start({
      redisUrl: REDIS_URL,
      channelPrefix: uniquePrefix('health'),
      backplane: 'streams',
      databaseUrl: UNREACHABLE_PG,
      env: { LOG_LEVEL: 'info', EXAMPLE_APP: 'true' },
    });
    const health = await fetch(instance.url('/healthz'));
    expect(health.status).toBe(503);
    const body = (await health.json()) as {
      status: string;
      checks: { postgres: { ok: boolean; error: string } };
    };
    expect(body.status).toBe('degraded');
    expect(body.checks.postgres.ok).toBe(false);
    expect(body.checks.postgres.error).toMatch(/ECONNREFUSED/);
    const posted = await fetch(instance.url('/api/orders/A-1/status'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${await signToken('alice')}` },
      body: JSON.stringify({ userId: 'alice', status: 'paid' }),
    });
    expect(posted.status).toBe(503);
    await waitFor(() => instance.output().includes('orders API answered 503'));
    const logged = instance
      .output()
      .split('\n')
      .filter((line) => line.includes('orders API answered 503'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toMatch(/ECONNREFUSED/);
  });

  it('relayhub --version, --help with LOG_LEVEL, demo --help says what it runs', async () => {
    const [version, help, demoHelp] = await Promise.all([
      runCli(['--version']),
      runCli(['--help']),
      runCli(['demo', '--help']),
    ]);
    expect(version).toEqual({ code: 0, output: '0.1.0\n' });
    expect(help.output).toMatch(/LOG_LEVEL +trace \| debug \| info/);
    expect(demoHelp.output).toMatch(/two hub instances \(streams backplane\)/);
    expect(demoHelp.output).toMatch(/outbox worker/);
    expect(demoHelp.output).toMatch(/demo web page/);
  });

  it('every bench script answers --help without starting a run', async () => {
    const scripts = [
      'run',
      'reliable',
      'outbox',
      'cluster',
      'msgpack-codec',
      'socketio-server',
      'ws-server',
      'reliable-clients',
      'negotiate',
      'connections',
      'connections-clients',
      'endpoints',
      'sessions',
      'lane-scripts',
    ];
    const runs = await Promise.all(
      scripts.map(
        (name) =>
          new Promise<{ code: number | null; output: string }>((resolve) => {
            const child = spawn(process.execPath, [
              fileURLToPath(new URL(`../../bench/${name}.mjs`, import.meta.url)),
              '--help',
            ]);
            let output = '';
            child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
            child.on('exit', (code) => resolve({ code, output }));
          }),
      ),
    );
    for (const [i, run] of runs.entries()) {
      expect(run.code, scripts[i]).toBe(0);
      expect(run.output, scripts[i]).toMatch(/bench\/README\.md|^Usage: node bench\//m);
    }
  });

  it('the worker serves its metrics with --metrics-port', async () => {
    const schema = await createEmptySchema('wmetrics');
    cleanups.push(() => schema.drop());
    const [port] = [await freePortRange(1)];
    const worker = startCli(['worker', '--migrate', '--metrics-port', String(port)], {
      REDIS_URL,
      DATABASE_URL: schema.databaseUrl,
      CHANNEL_PREFIX: uniquePrefix('wmetrics'),
      LOG_LEVEL: 'warn',
    });
    demo = worker;
    await waitFor(() => worker.output().includes(`relayhub worker metrics on port ${port}`), {
      timeoutMs: 15_000,
    });
    const samples = await scrape(`http://127.0.0.1:${port}/metrics`);
    expect(metricValue(samples, 'relayhub_outbox_relayed_total')).toBe(0);
    worker.signalGroup('SIGTERM');
    expect(await worker.exited).toBe(0);
    demo = undefined;
  });
});
