/**
 * Outbox migrations: `migrate(client)` and the `relayhub migrate` CLI apply each SQL file once, in order,
 * under a Postgres advisory lock: run twice (the second applies nothing) and run concurrently (two
 * processes and two in-process clients, held at the lock until all four wait there: one applies, the
 * others find everything applied). A failing file is rolled back and the lock is still released.
 *
 * Each test works in an empty schema of its own (dropped afterwards). Needs `npm run build`.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { migrate, MIGRATIONS_DIR } from '../../src/outbox/migrate.js';
import {
  createEmptySchema,
  type EmptySchema,
  uniqueApplicationName,
  withApplicationName,
  waitForValue,
} from '../helpers/outbox.js';
import { DATABASE_URL } from '../helpers/postgres.js';
import { CLI_PATH } from '../helpers/process.js';

const FILES = ['0001_relayhub_outbox.sql', '0002_example_orders.sql', '0003_outbox_deployment.sql'];
// note: the key migrate() locks (src/outbox/migrate.ts); the test holds it to make the migrators queue up.
const MIGRATION_LOCK = 0x7265_6c61;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('outbox migrations', () => {
  const schemas: EmptySchema[] = [];
  const children = new Set<ChildProcess>();
  const clients: pg.Client[] = [];
  let tempDir: string | undefined;

  afterEach(async () => {
    for (const child of children) child.kill('SIGKILL');
    children.clear();
    await Promise.allSettled(clients.splice(0).map((c) => c.end()));
    await Promise.allSettled(schemas.splice(0).map((s) => s.drop()));
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
    tempDir = undefined;
  });

  async function schema(): Promise<EmptySchema> {
    const created = await createEmptySchema('mig');
    schemas.push(created);
    return created;
  }

  async function client(url: string): Promise<pg.Client> {
    const c = new pg.Client({ connectionString: url });
    clients.push(c);
    await c.connect();
    return c;
  }

  /** Runs the CLI (bounded: SIGKILLed after `timeoutMs`) and resolves with its exit code and output. */
  function cli(args: string[], timeoutMs = 15_000): Promise<CliResult> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [CLI_PATH, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, LOG_LEVEL: 'warn' },
      });
      children.add(child);
      let stdout = '';
      let stderr = '';
      child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.once('exit', (code) => {
        clearTimeout(timer);
        children.delete(child);
        resolve({ code, stdout, stderr });
      });
    });
  }

  async function appliedRows(url: string): Promise<{ name: string; n: number }[]> {
    const c = await client(url);
    const { rows } = await c.query<{ name: string; n: number }>(
      'SELECT name, count(*)::int AS n FROM relayhub_migrations GROUP BY name ORDER BY name',
    );
    return rows;
  }

  it('migrate(client) applies every file once, in order, and a second run applies nothing', async () => {
    const s = await schema();
    const c = await client(s.databaseUrl);
    expect(await migrate(c)).toEqual(FILES);
    expect(await migrate(c)).toEqual([]);
    expect(await appliedRows(s.databaseUrl)).toEqual(FILES.map((name) => ({ name, n: 1 })));
    const { rows } = await c.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`,
      [s.name],
    );
    expect(rows.map((r) => r.table_name)).toEqual([
      'example_orders',
      'relayhub_migrations',
      'relayhub_outbox',
      'relayhub_workers',
    ]);
    // the lock was given back: nobody holds it now
    const { rows: locks } = await c.query(
      `SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND objid = $1 AND pid = pg_backend_pid()`,
      [MIGRATION_LOCK],
    );
    expect(locks).toEqual([]);
  });

  it('`relayhub migrate` applies the files, then reports up to date', async () => {
    const s = await schema();
    const first = await cli(['migrate', '--database-url', s.databaseUrl]);
    expect(first, first.stderr).toMatchObject({ code: 0, stdout: `applied: ${FILES.join(', ')}\n` });
    const second = await cli(['migrate', '--database-url', s.databaseUrl]);
    expect(second, second.stderr).toMatchObject({ code: 0, stdout: 'up to date\n' });
    expect(await appliedRows(s.databaseUrl)).toEqual(FILES.map((name) => ({ name, n: 1 })));
  });

  it('concurrent migrators (2 processes, 2 clients) queue at the advisory lock; each file is applied once', async () => {
    const s = await schema();
    const appName = uniqueApplicationName('migrators');
    const url = withApplicationName(s.databaseUrl, appName);
    // note: hold the lock so that all four migrators are provably waiting on it at the same time.
    const holder = await client(DATABASE_URL);
    await holder.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    let held = true;
    try {
      const processes = [cli(['migrate', '--database-url', url]), cli(['migrate', '--database-url', url])];
      const inProcess = [await client(url), await client(url)].map((c) => migrate(c));
      // note: keep rejections from being unhandled while we wait; they are awaited below.
      for (const p of inProcess) p.catch(() => undefined);
      const waiting = await waitForValue(
        async () => {
          const { rows } = await holder.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity
              WHERE application_name = $1 AND wait_event_type = 'Lock' AND wait_event = 'advisory'`,
            [appName],
          );
          return (rows[0]?.n ?? 0) >= 4 && rows[0]?.n;
        },
        { timeoutMs: 10_000, message: 'all four migrators waiting on the advisory lock' },
      );
      expect(waiting).toBe(4);
      await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
      held = false;
      const [a, b] = await Promise.all(processes);
      const [c, d] = await Promise.all(inProcess);
      expect([a?.code, b?.code], `${a?.stderr}\n${b?.stderr}`).toEqual([0, 0]);
      const outcomes = [
        a?.stdout.trim(),
        b?.stdout.trim(),
        c?.length ? `applied: ${c.join(', ')}` : 'up to date',
        d?.length ? `applied: ${d.join(', ')}` : 'up to date',
      ];
      expect(outcomes.filter((o) => o === `applied: ${FILES.join(', ')}`)).toHaveLength(1);
      expect(outcomes.filter((o) => o === 'up to date')).toHaveLength(3);
      expect(await appliedRows(s.databaseUrl)).toEqual(FILES.map((name) => ({ name, n: 1 })));
    } finally {
      if (held) await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    }
  });

  it('rolls a failing file back, records only what succeeded, and releases the lock', async () => {
    const s = await schema();
    tempDir = await mkdtemp(join(tmpdir(), 'relayhub-migrations-'));
    await writeFile(join(tempDir, '0001_ok.sql'), 'CREATE TABLE mig_ok (id int);');
    await writeFile(join(tempDir, '0002_bad.sql'), 'CREATE TABLE mig_bad (id int);\nSELEC 1;');
    await writeFile(join(tempDir, 'notes.txt'), 'not a migration');
    const c = await client(s.databaseUrl);
    await expect(migrate(c, tempDir)).rejects.toThrow(/syntax error/);
    expect(await appliedRows(s.databaseUrl)).toEqual([{ name: '0001_ok.sql', n: 1 }]);
    const { rows } = await c.query<{ t: string | null }>(`SELECT to_regclass('mig_bad')::text AS t`);
    expect(rows[0]?.t).toBeNull();
    // the lock is free again: another session takes it at once
    const other = await client(DATABASE_URL);
    const { rows: got } = await other.query<{ locked: boolean }>(
      'SELECT pg_try_advisory_lock($1) AS locked',
      [MIGRATION_LOCK],
    );
    expect(got[0]?.locked).toBe(true);
    await other.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
    // fixed, it applies the rest
    await writeFile(join(tempDir, '0002_bad.sql'), 'CREATE TABLE mig_bad (id int);');
    expect(await migrate(c, tempDir)).toEqual(['0002_bad.sql']);
    expect(MIGRATIONS_DIR).toMatch(/migrations\/$/);
  });

  it('`relayhub migrate` against an unreachable Postgres exits 2 with one clear sentence', async () => {
    const result = await cli(['migrate', '--database-url', 'postgres://postgres@127.0.0.1:1/nothing']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(
      /^relayhub: Postgres at postgres:\/\/postgres@127\.0\.0\.1:1\/nothing is not reachable/,
    );
  });
});
